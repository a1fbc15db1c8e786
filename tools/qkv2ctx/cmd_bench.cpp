// `qkv2ctx bench`: every shape of a CSV on the chosen CUDA backends, against the chip's peaks
// (measured in the same run) and against PyTorch SDPA (bench/torch_baselines.py, same run).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>

#include "bench_gpu.hpp"
#include "bench_shapes.hpp"
#include "bench_torch.hpp"
#include "commands.hpp"
#include "table.hpp"

namespace qkv2ctx::cli {
namespace {

struct BenchOptions {
  std::string shapes = "bench/shapes.csv";
  std::string backends = "cuda-fused,cuda-unfused";
  std::string int8_bounds = "fixed_bound,guarded,row_max";
  std::string filter;
  std::string csv;
  std::string torch_script;
  std::string python = "python3";
  std::string layout = "trt";
  int iters = 50;
  int warmup = 10;
  std::uint64_t seed = 1234;
  double int8_qkv_amax = 4.0;
  int device = 0;
  bool list = false;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// One measured (or declined) entry of a shape.
struct Entry {
  std::string label;    // backend, with ":bound" for INT8 qkv2ctx entries
  std::string bound;    // INT8 qkv2ctx entries
  bool ours = false;
  double us = -1;       // < 0: not measured, `note` says why
  std::string note;
  int sets = 0;
};

struct Roofline {
  double tensor_peak = 0, hbm_peak = 0;
  double tensor_us = 0, hbm_us = 0, exp_us = 0;
  double us() const { return std::max({tensor_us, hbm_us, exp_us}); }
  const char* binding() const {
    const double t = us();
    return t == tensor_us ? "tensor" : (t == hbm_us ? "hbm" : "exp");
  }
};

Roofline roofline_of(const Work& w, DType dtype, const Peaks& peaks) {
  Roofline r;
  // FP32 shapes use the FP16 tensor peak: optimistic, stated in the output.
  r.tensor_peak = dtype == DType::int8 ? (peaks.int8_ops > 0 ? peaks.int8_ops : 2 * peaks.fp16_flops) : peaks.fp16_flops;
  r.hbm_peak = peaks.hbm_bytes;
  r.tensor_us = w.flops_true / r.tensor_peak * 1e6;
  r.hbm_us = w.bytes / r.hbm_peak * 1e6;
  r.exp_us = w.exps / kExpPeakPerSecond * 1e6;
  return r;
}

std::string ratios(const Entry& e, const std::vector<Entry>& all) {
  std::string s;
  for (const Entry& o : all)
    if (&o != &e && o.us > 0 && e.us > 0) s += fmt::format("{}{} {:.2f}x", s.empty() ? "" : ", ", o.label, o.us / e.us);
  return s;
}

// The shapes and their drawn lengths, without a GPU (compare: bench/torch_baselines.py --list).
int list_shapes(const std::vector<BenchShape>& shapes, const BenchConfig& config) {
  for (const BenchShape& s : shapes)
    fmt::print("{}\n", list_line(make_bench_problem(s, config, BoundMode::row_max, false), s.name));
  return 0;
}

int run_bench(const BenchOptions& o) {
  BenchConfig config;
  config.seed = o.seed;
  config.int8_qkv_amax = o.int8_qkv_amax;
  config.layout = *parse_layout(o.layout);
  std::vector<BenchShape> shapes = read_shapes_csv(o.shapes);
  std::erase_if(shapes, [&](const BenchShape& s) { return s.name.find(o.filter) == std::string::npos; });
  if (shapes.empty()) throw Error(ErrorCode::invalid_argument, "no shape of " + o.shapes + " matches --filter '" + o.filter + "'");
  if (o.list) return list_shapes(shapes, config);

  const SystemInfo sys = system_info();
  if (!sys.cuda_built)
    throw Error(ErrorCode::unsupported, "qkv2ctx bench needs CUDA: this CLI was built without CUDA (QKV2CTX_CUDA=OFF or no nvcc)");
  if (sys.cuda_device_count == 0)
    throw Error(ErrorCode::unsupported, "qkv2ctx bench needs a CUDA device and none was found (see qkv2ctx info)");
  if (o.iters < 1 || o.warmup < 0)
    throw Error(ErrorCode::invalid_argument, "--iters must be >= 1 and --warmup >= 0");

  std::vector<Backend> backends;
  for (const auto& name : split_list(o.backends)) {
    const auto b = parse_backend(name);
    if (!b || *b == Backend::cpu || *b == Backend::automatic)
      throw Error(ErrorCode::invalid_argument, "--backends " + name + " is not allowed: a list of cuda-fused, cuda-unfused");
    backends.push_back(*b);
  }
  std::vector<BoundMode> bounds;
  for (const auto& name : split_list(o.int8_bounds)) {
    const auto b = parse_bound_mode(name);
    if (!b) throw Error(ErrorCode::invalid_argument, "--int8-bounds " + name + " is not allowed: a list of row_max, fixed_bound, guarded");
    bounds.push_back(*b);
  }
  if (backends.empty() || bounds.empty()) throw Error(ErrorCode::invalid_argument, "--backends and --int8-bounds must not be empty");

  const GpuInfo gpu = gpu_info(o.device);
  fmt::print("qkv2ctx bench on {} (sm_{}, {} SMs, L2 {:.0f} MiB), {} warm-up + median of {} launches, CUDA events "
             "around each launch, inputs rotated over >= 4 sets totalling > 2x L2\n",
             gpu.name, gpu.sm, gpu.num_sms, gpu.l2_bytes / (1 << 20), o.warmup, o.iters);
  const Peaks peaks = measure_peaks(o.device);
  fmt::print("peaks measured now: FP16 tensor {:.0f} TFLOP/s (cuBLASLt 8192^3, FP32 accumulation), INT8 tensor {}, "
             "HBM {:.0f} GB/s (1 GiB device-to-device copy, read + write); exp {:.2f} T/s (MUFU ex2, a constant "
             "measured on H100 SXM, not in this run)\n",
             peaks.fp16_flops / 1e12,
             peaks.int8_ops > 0 ? fmt::format("{:.0f} TOP/s (cuBLASLt 8192^3, int32)", peaks.int8_ops / 1e12)
                                : "n/a (" + peaks.int8_note + "; INT8 rows use 2x the FP16 peak)",
             peaks.hbm_bytes / 1e9, kExpPeakPerSecond / 1e12);
  fmt::print("work: TFLOP/s pad = 4*B*N*S^2*D / time (padded square); true = 4*N*D*sum(len^2) / time (valid tokens); "
             "GB/s = (QKV read once + context written once) / time; roofline = max(true flops / tensor peak, bytes / "
             "HBM peak, N*sum(len^2) exps / exp peak); FP32 rows use the FP16 tensor peak; 'vs X 1.5x' = X's time / "
             "this time\n");

  TorchBaselines torch;
  if (!o.torch_script.empty()) {
    fmt::print("running PyTorch baselines: {} {}\n", o.python, o.torch_script);
    torch = run_torch_baselines({o.python, o.torch_script, o.shapes, o.filter, o.iters, o.warmup, o.seed});
    if (!torch.info.empty()) fmt::print("torch: {}\n", torch.info);
    if (!torch.error.empty()) fmt::print("torch baselines unavailable: {}\n", torch.error);
  }

  std::ofstream csv;
  if (!o.csv.empty()) {
    csv.open(o.csv);
    if (!csv) throw Error(ErrorCode::io_error, "--csv " + o.csv + ": cannot create");
    csv << fmt::format("# device {}; fp16_peak_tflops {:.1f}; int8_peak_tops {:.1f}; hbm_peak_gbs {:.0f}; exp_peak_per_s {:g}\n",
                       gpu.name, peaks.fp16_flops / 1e12, peaks.int8_ops / 1e12, peaks.hbm_bytes / 1e9, kExpPeakPerSecond);
    csv << "name,dtype,heads,head_size,seqlen,batch,mask,backend,bound,us,tflops_padded,tflops_true,gbs,roofline_us,"
           "roofline_pct,binding,sets,note\n";
  }
  Table compact({"name", "backend", "µs", "TFLOP/s true", "GB/s", "% roof", "vs best torch", "vs other qkv2ctx"},
                "llrrrrrl");

  for (const BenchShape& shape : shapes) {
    const std::vector<BoundMode> shape_bounds = shape.dtype == DType::int8 ? bounds : std::vector<BoundMode>{BoundMode::row_max};
    Problem problem;
    try {
      problem = make_bench_problem(shape, config, shape_bounds.front());
    } catch (const Error& err) {  // e.g. --layout chw32 on a non-INT8 shape: skip the shape, say why
      fmt::print("\n{}: skipped: {}\n", shape.name, err.what());
      compact.add({shape.name, "-", "-", "-", "-", "-", "", std::string("skipped: ") + err.what()});
      continue;
    }
    const Work work = work_of(problem);
    const Roofline roof = roofline_of(work, shape.dtype, peaks);
    std::vector<Entry> entries;
    for (Backend backend : backends)
      for (BoundMode bound : shape_bounds) {
        Entry e;
        e.ours = true;
        e.label = std::string(to_string(backend));
        if (shape.dtype == DType::int8) {
          e.bound = std::string(to_string(bound));
          e.label += ":" + e.bound;
        }
        Problem p = problem;
        p.desc.bound = bound;
        try {
          const Plan plan = make_plan(p.desc, {backend, o.device});
          const Timing t = time_plan(plan, p, o.iters, o.warmup, gpu.l2_bytes);
          e.us = t.median_us;
          e.sets = t.sets;
          if (t.sets_bytes <= 2 * gpu.l2_bytes)
            e.note = fmt::format("only {} sets ({:.0f} MiB) rotated: L2 may be warm", t.sets, t.sets_bytes / (1 << 20));
        } catch (const Error& err) {
          e.note = std::string(err.code() == ErrorCode::unsupported ? "declined: " : "error: ") + err.what();
        }
        entries.push_back(e);
      }
    for (const TorchResult& t : torch.results)
      if (t.name == shape.name) entries.push_back({t.backend, "", false, t.us, t.note, 0});

    fmt::print("\n{} ({} N={} D={} S={} B={} mask={}): roofline {:.1f} µs ({}: tensor {:.1f}, hbm {:.1f}, exp {:.1f})\n",
               shape.name, to_string(shape.dtype), shape.heads, shape.head_size, shape.seqlen, shape.batch,
               to_string(shape.mask), roof.us(), roof.binding(), roof.tensor_us, roof.hbm_us, roof.exp_us);
    double best_torch = -1;
    for (const Entry& e : entries)
      if (!e.ours && e.us > 0 && (best_torch < 0 || e.us < best_torch)) best_torch = e.us;
    for (const Entry& e : entries) {
      const double s = e.us * 1e-6;
      const bool ok = e.us > 0;
      if (ok)
        fmt::print("  {:<22} {:>9.1f} µs  {:>6.1f} pad {:>6.1f} true TFLOP/s  {:>6.0f} GB/s  {:>5.1f}% roof  {}{}\n",
                   e.label, e.us, work.flops_padded / s / 1e12, work.flops_true / s / 1e12, work.bytes / s / 1e9,
                   100 * roof.us() / e.us, e.ours ? "vs " + ratios(e, entries) : "",
                   e.note.empty() ? "" : "  [" + e.note + "]");
      else
        fmt::print("  {:<22} {:>9} {}\n", e.label, "-", e.note);
      std::string others;
      for (const Entry& x : entries)
        if (x.ours && &x != &e && x.us > 0 && ok)
          others += fmt::format("{}{} {:.2f}x", others.empty() ? "" : ", ", x.label, x.us / e.us);
      compact.add({shape.name, e.label, ok ? fmt::format("{:.1f}", e.us) : "-",
                   ok ? fmt::format("{:.1f}", work.flops_true / s / 1e12) : "-",
                   ok ? fmt::format("{:.0f}", work.bytes / s / 1e9) : "-",
                   ok ? fmt::format("{:.1f}", 100 * roof.us() / e.us) : "-",
                   e.ours && ok && best_torch > 0 ? fmt::format("{:.2f}x", best_torch / e.us) : "",
                   e.ours ? others : ""});
      if (csv.is_open()) {
        std::string note = e.note;
        std::replace(note.begin(), note.end(), ',', ';');
        std::replace(note.begin(), note.end(), '\n', ' ');
        csv << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3f},{},{},{},{}\n", shape.name, to_string(shape.dtype),
                           shape.heads, shape.head_size, shape.seqlen, shape.batch, to_string(shape.mask), e.label,
                           e.bound, ok ? fmt::format("{:.3f}", e.us) : "",
                           ok ? fmt::format("{:.2f}", work.flops_padded / s / 1e12) : "",
                           ok ? fmt::format("{:.2f}", work.flops_true / s / 1e12) : "",
                           ok ? fmt::format("{:.1f}", work.bytes / s / 1e9) : "", roof.us(),
                           ok ? fmt::format("{:.1f}", 100 * roof.us() / e.us) : "", roof.binding(), e.sets, note);
      }
    }
  }
  fmt::print("\nsummary (µs: median; % roof: roofline time / measured time; vs best torch: fastest PyTorch SDPA "
             "backend's time / this time)\n{}",
             compact.str());
  if (csv.is_open()) fmt::print("rows written to {}\n", o.csv);
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& root) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = root.add_subcommand("bench", "GPU benchmark of the shapes of a CSV against the chip's peaks and PyTorch SDPA");
  cmd->add_option("--shapes", o->shapes, "CSV: name,dtype,heads,head_size,seqlen,batch,mask ('#' comments)")
      ->capture_default_str();
  cmd->add_option("--backends", o->backends, "comma-separated CUDA backends to time")->capture_default_str();
  cmd->add_option("--int8-bounds", o->int8_bounds, "comma-separated bound modes timed on INT8 shapes")->capture_default_str();
  cmd->add_option("--filter", o->filter, "only shapes whose name contains this substring");
  cmd->add_option("--iters", o->iters, "timed launches per entry (the median is reported)")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "untimed launches before timing")->capture_default_str();
  cmd->add_option("--csv", o->csv, "write every row to this CSV file");
  cmd->add_option("--torch-baselines", o->torch_script, "bench/torch_baselines.py: time PyTorch SDPA in a subprocess");
  cmd->add_option("--python", o->python, "Python interpreter for --torch-baselines")->capture_default_str();
  cmd->add_option("--layout", o->layout, "QKV layout of every shape: trt | hf | chw32 (INT8 varlen only)")
      ->check(CLI::IsMember({"trt", "hf", "chw32"}))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of lengths (shared with the torch baselines) and inputs")->capture_default_str();
  cmd->add_option("--int8-qkv-amax", o->int8_qkv_amax, "INT8 shapes: qkv_scale = ctx_scale = amax / 127")
      ->capture_default_str();
  cmd->add_option("--device", o->device, "CUDA device ordinal")->capture_default_str();
  cmd->add_flag("--list", o->list, "print each shape's drawn lengths and exit (no GPU needed)");
  return {cmd, [o] { return run_bench(*o); }};
}

}  // namespace qkv2ctx::cli
