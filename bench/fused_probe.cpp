// Times the fused sm_80 FP16/BF16 backend on the shapes of a CSV (bench/fused_probe_shapes.csv) for
// each tile shape (the policy's choice, and m64 / m128 forced through QKV2CTX_FUSED_TILE) and both
// layouts, and PyTorch SDPA's flash backend in the same process run (bench/torch_baselines.py, the
// same timing method: CUDA events around each call, warm-up, median, inputs rotated over >= 4 sets
// whose total exceeds 2x L2). One table line per (shape, layout, tile).
//
//   qkv2ctx_fused_probe [shapes.csv] [--no-torch] [--iters N]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "qkv2ctx/qkv2ctx.hpp"

using namespace qkv2ctx;

namespace {

#define PROBE_CHECK(call)                                                                      \
  do {                                                                                         \
    cudaError_t e_ = (call);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s failed: %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

struct Shape {
  std::string name;
  DType dtype;
  int heads, head_size, seqlen, batch;
  MaskMode mask;
};

std::vector<Shape> read_shapes(const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    std::fprintf(stderr, "cannot open %s\n", path.c_str());
    std::exit(1);
  }
  std::vector<Shape> v;
  std::string line;
  while (std::getline(f, line)) {
    line = line.substr(0, line.find('#'));
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::stringstream ss(line);
    std::vector<std::string> c;
    std::string cell;
    while (std::getline(ss, cell, ',')) c.push_back(cell);
    if (c.size() != 7 || c[0] == "name") continue;
    v.push_back({c[0], *parse_dtype(c[1]), std::stoi(c[2]), std::stoi(c[3]), std::stoi(c[4]), std::stoi(c[5]),
                 *parse_mask_mode(c[6])});
  }
  return v;
}

// The lengths bench/torch_baselines.py draws (SplitMix64 seeded with seed ^ fnv1a64(name)).
std::vector<int> lengths_of(const Shape& s, std::uint64_t seed) {
  if (s.mask == MaskMode::none) return std::vector<int>(s.batch, s.seqlen);
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s.name) h = (h ^ ch) * 0x100000001b3ull;
  std::uint64_t state = seed ^ h;
  auto next = [&] {
    state += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const int lo = s.mask == MaskMode::varlen ? s.seqlen / 4 : s.seqlen / 2;
  std::vector<int> v(s.batch);
  for (int& x : v) x = lo + static_cast<int>(next() % static_cast<std::uint64_t>(s.seqlen - lo + 1));
  return v;
}

// PyTorch flash times (µs) by shape name, from bench/torch_baselines.py's JSON lines.
std::map<std::string, double> torch_flash_times(const std::string& csv) {
  std::map<std::string, double> t;
  const std::string cmd = "python3 bench/torch_baselines.py --iters 100 --shapes " + csv + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return t;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) {
    const std::string l(buf);
    if (l.find("\"torch-flash\"") == std::string::npos) {
      if (l.find("\"error\"") != std::string::npos || l.find("Traceback") != std::string::npos)
        std::printf("torch: %s", l.c_str());
      continue;
    }
    const auto n0 = l.find("\"name\": \"") + 9, n1 = l.find('"', n0);
    const auto u0 = l.find("\"us\": ");
    if (u0 == std::string::npos || l.compare(u0 + 6, 4, "null") == 0) continue;
    t[l.substr(n0, n1 - n0)] = std::atof(l.c_str() + u0 + 6);
  }
  pclose(p);
  return t;
}

struct DeviceBuf {
  void* p = nullptr;
  explicit DeviceBuf(std::size_t bytes) { PROBE_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceBuf() { cudaFree(p); }
};

// Random FP16/BF16 bits in [-1, 1) filled on the host once and copied to every set.
std::vector<std::uint16_t> random_halves(std::size_t n, DType dt) {
  std::vector<std::uint16_t> v(n);
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& x : v) {
    const float f = u(rng);
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if (dt == DType::bf16) {
      x = static_cast<std::uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
    } else {  // |f| < 1: normal or subnormal half; truncation is fine for benchmark data
      const int e = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
      x = static_cast<std::uint16_t>(((bits >> 16) & 0x8000) | (e > 0 ? (e << 10) | ((bits >> 13) & 0x3ff) : 0));
    }
  }
  return v;
}

struct Timing {
  double us = 0;
  std::string describe;
};

Timing time_plan(const Shape& s, Layout layout, const char* tile, const std::vector<int>& lens, int iters,
                 std::size_t l2_bytes) {
  if (tile) setenv("QKV2CTX_FUSED_TILE", tile, 1);
  else unsetenv("QKV2CTX_FUSED_TILE");
  AttentionDesc d;
  d.dtype = s.dtype;
  d.num_heads = s.heads;
  d.head_size = s.head_size;
  d.layout = layout;
  d.mask = s.mask;
  const Plan plan = make_plan(d, {Backend::cuda_fused, 0});
  unsetenv("QKV2CTX_FUSED_TILE");
  const std::int64_t E = d.hidden_size();
  std::int64_t T = static_cast<std::int64_t>(s.batch) * s.seqlen;
  std::vector<std::int32_t> cu(1, 0);
  if (s.mask == MaskMode::varlen) {
    for (int l : lens) cu.push_back(cu.back() + l);
    T = cu.back();
  }
  const std::size_t set_bytes = static_cast<std::size_t>(T) * 4 * E * 2;
  const int sets = static_cast<int>(std::max<std::size_t>(4, 2 * l2_bytes / set_bytes + 1));
  const std::vector<std::uint16_t> host = random_halves(static_cast<std::size_t>(T) * 3 * E, s.dtype);
  std::vector<std::unique_ptr<DeviceBuf>> qkv, out;
  for (int i = 0; i < sets; ++i) {
    qkv.push_back(std::make_unique<DeviceBuf>(host.size() * 2));
    out.push_back(std::make_unique<DeviceBuf>(static_cast<std::size_t>(T) * E * 2));
    PROBE_CHECK(cudaMemcpy(qkv.back()->p, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
  }
  DeviceBuf lens_dev(std::max<std::size_t>(4 * cu.size(), 4));
  std::vector<std::int32_t> lens32(lens.begin(), lens.end());
  if (s.mask == MaskMode::varlen) PROBE_CHECK(cudaMemcpy(lens_dev.p, cu.data(), 4 * cu.size(), cudaMemcpyHostToDevice));
  if (s.mask == MaskMode::lengths) PROBE_CHECK(cudaMemcpy(lens_dev.p, lens32.data(), 4 * lens32.size(), cudaMemcpyHostToDevice));
  auto args_for = [&](int i) {
    AttentionArgs a;
    if (s.mask == MaskMode::varlen) {
      a.qkv = TensorView(qkv[i]->p, s.dtype, MemSpace::cuda, {T, 3 * E});
      a.out = TensorView(out[i]->p, s.dtype, MemSpace::cuda, {T, E});
      a.cu_seqlens = TensorView(lens_dev.p, DType::int32, MemSpace::cuda, {static_cast<std::int64_t>(cu.size())});
      a.max_seqlen = s.seqlen;
    } else {
      const std::int64_t d0 = layout == Layout::trt ? s.seqlen : s.batch, d1 = layout == Layout::trt ? s.batch : s.seqlen;
      a.qkv = TensorView(qkv[i]->p, s.dtype, MemSpace::cuda, {d0, d1, 3 * E});
      a.out = TensorView(out[i]->p, s.dtype, MemSpace::cuda, {d0, d1, E});
      if (s.mask == MaskMode::lengths) a.seq_lens = TensorView(lens_dev.p, DType::int32, MemSpace::cuda, {s.batch});
    }
    return a;
  };
  DeviceBuf ws(plan.workspace_bytes(plan.problem_size(args_for(0))));
  const Workspace w{ws.p, plan.workspace_bytes(plan.problem_size(args_for(0)))};
  std::vector<AttentionArgs> args;
  for (int i = 0; i < sets; ++i) args.push_back(args_for(i));
  for (int i = 0; i < 10; ++i) plan.run(args[i % sets], w);
  plan.read_stats(w);  // syncs; throws if the run flagged its input
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& e : ev) PROBE_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    PROBE_CHECK(cudaEventRecord(ev[2 * i]));
    plan.run(args[i % sets], w);
    PROBE_CHECK(cudaEventRecord(ev[2 * i + 1]));
  }
  PROBE_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) PROBE_CHECK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.us = 1e3 * (iters % 2 ? ms[iters / 2] : 0.5 * (ms[iters / 2 - 1] + ms[iters / 2]));
  t.describe = plan.describe();
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  std::string csv = "bench/fused_probe_shapes.csv";
  bool with_torch = true;
  int iters = 100;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-torch") with_torch = false;
    else if (a == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else csv = a;
  }
  cudaDeviceProp prop{};
  PROBE_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MiB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  const std::vector<Shape> shapes = read_shapes(csv);
  std::map<std::string, double> torch_us;
  if (with_torch) torch_us = torch_flash_times(csv);

  std::printf("\n%-28s %-4s %-6s %9s %8s %8s %9s %7s\n", "shape", "lay", "tile", "us", "TFLOP/s", "GB/s",
              "torch-us", "speedup");
  std::map<std::string, double> best_none;  // "B,S,H,D,dtype" -> best padded time, for varlen ratios
  for (const Shape& s : shapes) {
    const std::vector<int> lens = lengths_of(s, 1234);
    double work = 0, tokens = 0;  // useful score elements and tokens
    for (int l : lens) {
      work += static_cast<double>(l) * l;
      tokens += l;
    }
    const double flops = 4.0 * s.heads * s.head_size * work;
    const double bytes = tokens * 4.0 * s.heads * s.head_size * 2.0;  // QKV read + context written
    const double tus = torch_us.count(s.name) ? torch_us[s.name] : 0.0;
    double best = 1e30;
    std::string best_desc;
    const Layout layouts[] = {Layout::trt, Layout::hf};
    for (Layout layout : layouts) {
      if (s.mask == MaskMode::varlen && layout == Layout::hf) continue;  // same token order in varlen
      for (const char* tile : {static_cast<const char*>(nullptr), "m64", "m128"}) {
        if (layout == Layout::hf && tile != nullptr) continue;  // the layouts time alike: policy only
        Timing t;
        try {
          t = time_plan(s, layout, tile, lens, iters, static_cast<std::size_t>(prop.l2CacheSize));
        } catch (const Error&) {
          continue;  // a tile shape not compiled for this head size
        }
        if (t.us < best) best = t.us, best_desc = t.describe;
        std::printf("%-28s %-4s %-6s %9.2f %8.1f %8.0f %9.2f %7.2f\n", s.name.c_str(),
                    std::string(to_string(layout)).c_str(), tile ? tile : "auto", t.us, flops / t.us * 1e-6,
                    bytes / t.us * 1e-3, tus, tus > 0 ? tus / t.us : 0.0);
        std::fflush(stdout);
      }
    }
    const std::string key = std::to_string(s.batch) + "," + std::to_string(s.seqlen) + "," +
                            std::to_string(s.heads) + "," + std::to_string(s.head_size);
    if (s.mask == MaskMode::none) best_none[key] = best;
    if (s.mask == MaskMode::varlen && best_none.count(key)) {
      const double full = best_none[key];
      const double frac_work = work / (static_cast<double>(s.batch) * s.seqlen * s.seqlen);
      const double frac_tok = tokens / (static_cast<double>(s.batch) * s.seqlen);
      std::printf("  varlen: %.2f us vs full %.2f us = %.3f of full; useful tokens %.3f, useful S^2 work %.3f "
                  "-> time / (full x token fraction) = %.3f, / (full x work fraction) = %.3f\n",
                  best, full, best / full, frac_tok, frac_work, best / (full * frac_tok), best / (full * frac_work));
    }
  }
  return 0;
}
