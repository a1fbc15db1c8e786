#include "problem.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/indexing.hpp"
#include "util/half.hpp"

#ifdef QKV2CTX_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/common/cuda_check.hpp"
#endif

namespace qkv2ctx::cli {
namespace {

[[noreturn]] void bad_flag(const std::string& msg) { throw Error(ErrorCode::invalid_argument, msg); }

template <class E>
std::vector<std::string> names_of(std::initializer_list<E> values) {
  std::vector<std::string> names;
  for (E v : values) names.emplace_back(to_string(v));
  return names;
}

// Inputs larger than this are refused up front rather than failing in an allocation.
constexpr std::int64_t kMaxInputBytes = 32ll << 30;

void require_cuda_build() {
#ifndef QKV2CTX_WITH_CUDA
  throw Error(ErrorCode::unsupported, "a CUDA plan was made but this qkv2ctx CLI was built without CUDA");
#endif
}

}  // namespace

void add_problem_flags(CLI::App& cmd, ProblemOptions& o) {
  cmd.add_option("--dtype", o.dtype, "element type of QKV and the context")
      ->check(CLI::IsMember(names_of({DType::fp32, DType::fp16, DType::bf16, DType::int8})))
      ->capture_default_str();
  cmd.add_option("--heads", o.heads, "number of heads N")->capture_default_str();
  cmd.add_option("--head-size", o.head_size, "head size H (E = N*H)")->capture_default_str();
  cmd.add_option("--seqlen", o.seqlen, "S: padded sequence length, or max_seqlen for --mask varlen")
      ->capture_default_str();
  cmd.add_option("--batch", o.batch, "number of sequences B")->capture_default_str();
  cmd.add_option("--mask", o.mask, "none | lengths (padded, valid lengths) | varlen (packed, cu_seqlens)")
      ->check(CLI::IsMember(names_of({MaskMode::none, MaskMode::lengths, MaskMode::varlen})))
      ->capture_default_str();
  cmd.add_option("--bound", o.bound, "INT8 softmax shift: row_max | fixed_bound | guarded")
      ->check(CLI::IsMember(names_of({BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded})))
      ->capture_default_str();
  cmd.add_option("--probs", o.probs, "INT8 probabilities: trt (TensorRT: normalized, then quantized) | "
                                     "max_relative (quantized relative to the row max; needs --bound row_max)")
      ->check(CLI::IsMember(names_of({ProbsMode::trt, ProbsMode::max_relative})))
      ->capture_default_str();
  cmd.add_option("--layout", o.layout, "trt ([S,B,3E], per token [N][3][H]) | hf ([B,S,3E], [3][N][H]) | chw32 (INT8 varlen)")
      ->check(CLI::IsMember(names_of({Layout::trt, Layout::hf, Layout::chw32})))
      ->capture_default_str();
  cmd.add_option("--seed", o.seed, "seed of the random lengths and inputs")->capture_default_str();
  cmd.add_option("--qkv-amax", o.qkv_amax, "INT8: amax of the real QKV range; qkv_scale = amax/127")
      ->capture_default_str();
  cmd.add_option("--ctx-scale", o.ctx_scale, "INT8: context quantization scale (default: qkv_scale)");
  cmd.add_option("--dq-probs", o.dq_probs, "INT8: probability dequantization scale (default 1/127)");
  cmd.add_option("--min-len", o.min_len,
                 "lengths/varlen: lengths uniform in [min-len, S] (default S/2 lengths, S/4 varlen)");
  cmd.add_option("--scale-head-size", o.scale_head_size,
                 "head size in the softmax scale 1/sqrt(H_eff) (default: --head-size)");
}

void check_flag_combinations(const CLI::App& cmd, const ProblemOptions& o) {
  if (o.dtype != "int8")
    for (const char* flag : {"--qkv-amax", "--ctx-scale", "--dq-probs", "--probs"})
      if (cmd.count(flag) > 0)
        bad_flag(std::string(flag) + " applies to --dtype int8 only (got --dtype " + o.dtype + ")");
  if (o.mask == "none" && cmd.count("--min-len") > 0)
    bad_flag("--min-len applies to --mask lengths or varlen only (got --mask none)");
  if (cmd.count("--ctx-scale") > 0 && !(o.ctx_scale > 0))
    bad_flag("--ctx-scale = " + std::to_string(o.ctx_scale) + " is not allowed: it must be > 0");
}

Backend parse_backend_flag(const std::string& name) {
  if (auto b = parse_backend(name)) return *b;
  bad_flag("--backend " + name + " is not allowed: one of " + backend_names());
}

std::string backend_names() { return "auto, cpu, cuda-unfused, cuda-fused"; }

std::uint64_t fnv1a64(const void* data, std::size_t bytes, std::uint64_t hash) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  for (std::size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 0x100000001b3ull;
  return hash;
}

// ---------------------------------------------------------------------------------------------
// Problem

std::vector<std::int64_t> Problem::qkv_shape() const {
  const std::int64_t E = desc.hidden_size();
  if (desc.mask == MaskMode::varlen)
    return desc.layout == Layout::chw32 ? std::vector<std::int64_t>{3 * E / 32, num_tokens, 32}
                                        : std::vector<std::int64_t>{num_tokens, 3 * E};
  return desc.layout == Layout::trt ? std::vector<std::int64_t>{seqlen, batch, 3 * E}
                                    : std::vector<std::int64_t>{batch, seqlen, 3 * E};
}

std::vector<std::int64_t> Problem::out_shape() const {
  const std::int64_t E = desc.hidden_size();
  if (desc.mask == MaskMode::varlen)
    return desc.layout == Layout::chw32 ? std::vector<std::int64_t>{E / 32, num_tokens, 32}
                                        : std::vector<std::int64_t>{num_tokens, E};
  return desc.layout == Layout::trt ? std::vector<std::int64_t>{seqlen, batch, E}
                                    : std::vector<std::int64_t>{batch, seqlen, E};
}

std::int64_t Problem::qkv_elements() const { return num_tokens * 3 * desc.hidden_size(); }
std::int64_t Problem::out_elements() const { return num_tokens * desc.hidden_size(); }

std::vector<std::int32_t> Problem::lengths() const {
  switch (desc.mask) {
    case MaskMode::lengths: return seq_lens;
    case MaskMode::varlen: {
      std::vector<std::int32_t> lens(batch);
      for (int b = 0; b < batch; ++b) lens[b] = cu_seqlens[b + 1] - cu_seqlens[b];
      return lens;
    }
    default: return std::vector<std::int32_t>(batch, seqlen);
  }
}

void draw_lengths(Problem& p, SplitMix64& rng) {
  p.seq_lens.clear();
  p.cu_seqlens.clear();
  if (p.desc.mask == MaskMode::none) {
    p.num_tokens = static_cast<std::int64_t>(p.batch) * p.seqlen;
    return;
  }
  std::vector<std::int32_t> lens(p.batch);
  for (auto& l : lens) l = rng.uniform_int(p.min_len, p.seqlen);
  if (p.desc.mask == MaskMode::lengths) {
    p.seq_lens = lens;
    p.num_tokens = static_cast<std::int64_t>(p.batch) * p.seqlen;
  } else {
    p.cu_seqlens.assign(1, 0);
    std::int64_t total = 0;
    for (auto l : lens) {
      total += l;
      if (total > INT32_MAX) bad_flag("varlen: the total token count exceeds int32 (cu_seqlens are int32)");
      p.cu_seqlens.push_back(static_cast<std::int32_t>(total));
    }
    p.num_tokens = total;
  }
}

void fill_random(void* dst, std::int64_t n, DType dtype, SplitMix64& rng) {
  switch (dtype) {
    case DType::fp32: {
      auto* f = static_cast<float*>(dst);
      for (std::int64_t i = 0; i < n; ++i) f[i] = rng.uniform_pm1();
      break;
    }
    case DType::fp16:
    case DType::bf16: {
      auto* h = static_cast<std::uint16_t*>(dst);
      const bool half = dtype == DType::fp16;
      for (std::int64_t i = 0; i < n; ++i) {
        const float x = rng.uniform_pm1();
        h[i] = half ? util::float_to_half(x) : util::float_to_bf16(x);
      }
      break;
    }
    case DType::int8: {
      auto* q = static_cast<std::int8_t*>(dst);
      for (std::int64_t i = 0; i < n; ++i) q[i] = static_cast<std::int8_t>(rng.uniform_int(-127, 127));
      break;
    }
    default: throw Error(ErrorCode::internal, "fill_random: unexpected dtype");
  }
}

void fill_random_qkv(Problem& p, SplitMix64& rng) {
  const std::int64_t n = p.qkv_elements();
  p.qkv.assign(static_cast<std::size_t>(n) * element_size(p.desc.dtype), 0);
  fill_random(p.qkv.data(), n, p.desc.dtype, rng);
}

Problem make_problem(const ProblemOptions& o) {
  Problem p;
  AttentionDesc& d = p.desc;
  const auto dtype = parse_dtype(o.dtype);
  const auto mask = parse_mask_mode(o.mask);
  const auto bound = parse_bound_mode(o.bound);
  const auto layout = parse_layout(o.layout);
  const auto probs = parse_probs_mode(o.probs);
  if (!dtype || *dtype == DType::int32) bad_flag("--dtype " + o.dtype + " is not allowed: one of fp32, fp16, bf16, int8");
  if (!mask) bad_flag("--mask " + o.mask + " is not allowed: one of none, lengths, varlen");
  if (!bound) bad_flag("--bound " + o.bound + " is not allowed: one of row_max, fixed_bound, guarded");
  if (!layout) bad_flag("--layout " + o.layout + " is not allowed: one of trt, hf, chw32");
  if (!probs) bad_flag("--probs " + o.probs + " is not allowed: one of trt, max_relative");
  d.dtype = *dtype;
  d.num_heads = o.heads;
  d.head_size = o.head_size;
  d.mask = *mask;
  d.bound = *bound;
  d.probs = *probs;
  d.layout = *layout;
  d.scale_head_size = o.scale_head_size;
  if (d.dtype == DType::int8) {
    if (!(o.qkv_amax > 0) || !(o.qkv_amax < 1e30))
      bad_flag("--qkv-amax = " + std::to_string(o.qkv_amax) + " is not allowed: it must be finite and > 0");
    d.int8.qkv_scale = static_cast<float>(o.qkv_amax / 127.0);
    d.int8.ctx_scale = o.ctx_scale > 0 ? static_cast<float>(o.ctx_scale) : d.int8.qkv_scale;
    d.int8.dq_probs = static_cast<float>(o.dq_probs);
    p.qkv_amax = o.qkv_amax;
  }
  validate(d);  // the library's one validation: names the field and what is allowed

  if (o.seqlen < 1) bad_flag("--seqlen = " + std::to_string(o.seqlen) + " is not allowed: it must be >= 1");
  if (o.batch < 1) bad_flag("--batch = " + std::to_string(o.batch) + " is not allowed: it must be >= 1");
  p.batch = o.batch;
  p.seqlen = o.seqlen;
  p.seed = o.seed;
  p.min_len = o.min_len >= 0 ? o.min_len : (d.mask == MaskMode::varlen ? o.seqlen / 4 : o.seqlen / 2);
  if (o.min_len < -1 || p.min_len > o.seqlen)
    bad_flag("--min-len = " + std::to_string(o.min_len) + " is not allowed: it must be in [0, --seqlen = " +
             std::to_string(o.seqlen) + "]");
  const double input_bytes = static_cast<double>(o.batch) * o.seqlen * 3.0 * d.hidden_size() *
                             static_cast<double>(element_size(d.dtype));
  if (input_bytes > static_cast<double>(kMaxInputBytes))
    bad_flag("the QKV input of --batch " + std::to_string(o.batch) + " --seqlen " + std::to_string(o.seqlen) +
             " would take " + std::to_string(static_cast<long long>(input_bytes / (1 << 20))) +
             " MiB; the CLI allows at most 32 GiB");

  SplitMix64 rng(o.seed);
  draw_lengths(p, rng);
  fill_random_qkv(p, rng);
  return p;
}

Problem dequantized_fp32(const Problem& q) {
  if (q.desc.dtype != DType::int8) throw Error(ErrorCode::internal, "dequantized_fp32 needs an INT8 problem");
  Problem f = q;
  f.desc.dtype = DType::fp32;
  f.desc.bound = BoundMode::row_max;
  f.desc.int8 = Int8Scales{};
  if (q.desc.layout == Layout::chw32) f.desc.layout = Layout::hf;
  f.qkv.assign(static_cast<std::size_t>(q.qkv_elements()) * sizeof(float), 0);
  const auto* src = reinterpret_cast<const std::int8_t*>(q.qkv.data());
  auto* dst = reinterpret_cast<float*>(f.qkv.data());
  const int N = q.desc.num_heads, H = q.desc.head_size;
  const double scale = q.desc.int8.qkv_scale;
  for (std::int64_t t = 0; t < q.num_tokens; ++t)
    for (int which = 0; which < 3; ++which)
      for (int n = 0; n < N; ++n)
        for (int d = 0; d < H; ++d)
          dst[qkv_offset(f.desc.layout, t, which, n, d, N, H, q.num_tokens)] = static_cast<float>(
              src[qkv_offset(q.desc.layout, t, which, n, d, N, H, q.num_tokens)] * scale);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Buffers

Buffer::Buffer(MemSpace space, std::size_t bytes) : bytes_(bytes), space_(space) {
  // Never a null pointer, even for empty tensors (the plan rejects null data pointers).
  const std::size_t alloc = std::max<std::size_t>((bytes + 255) / 256 * 256, 256);
  if (space == MemSpace::host) {
    data_ = std::aligned_alloc(64, alloc);
    if (!data_) throw std::bad_alloc();
  } else {
    require_cuda_build();
#ifdef QKV2CTX_WITH_CUDA
    QKV2CTX_CUDA_CHECK(cudaMalloc(&data_, alloc));
#endif
  }
}

Buffer::Buffer(Buffer&& o) noexcept : data_(o.data_), bytes_(o.bytes_), space_(o.space_) {
  o.data_ = nullptr;
  o.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_;
    bytes_ = o.bytes_;
    space_ = o.space_;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

Buffer::~Buffer() { release(); }

void Buffer::release() noexcept {
  if (!data_) return;
  if (space_ == MemSpace::host) std::free(data_);
#ifdef QKV2CTX_WITH_CUDA
  else (void)cudaFree(data_);  // a destructor does not throw; errors surface at the next checked call
#endif
  data_ = nullptr;
}

void Buffer::upload(const void* host, std::size_t bytes) {
  if (bytes > bytes_) throw Error(ErrorCode::internal, "Buffer::upload: too many bytes");
  if (bytes == 0) return;
  if (space_ == MemSpace::host) {
    std::memcpy(data_, host, bytes);
    return;
  }
#ifdef QKV2CTX_WITH_CUDA
  QKV2CTX_CUDA_CHECK(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice));
#endif
}

void Buffer::download(void* host, std::size_t bytes) const {
  if (bytes > bytes_) throw Error(ErrorCode::internal, "Buffer::download: too many bytes");
  if (bytes == 0) return;
  if (space_ == MemSpace::host) {
    std::memcpy(host, data_, bytes);
    return;
  }
#ifdef QKV2CTX_WITH_CUDA
  QKV2CTX_CUDA_CHECK(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost));
#endif
}

void Buffer::fill_byte(std::uint8_t value) {
  if (space_ == MemSpace::host) {
    std::memset(data_, value, bytes_);
    return;
  }
#ifdef QKV2CTX_WITH_CUDA
  // Legacy default stream: ordered with the runs, which use the default stream too.
  QKV2CTX_CUDA_CHECK(cudaMemset(data_, value, bytes_));
#endif
}

TensorView make_view(void* data, DType dtype, MemSpace space, const std::vector<std::int64_t>& shape) {
  if (shape.size() > static_cast<std::size_t>(TensorView::kMaxRank))
    throw Error(ErrorCode::internal, "make_view: rank too large");
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.space = space;
  v.rank = static_cast<int>(shape.size());
  std::int64_t stride = 1;
  for (int k = v.rank - 1; k >= 0; --k) {
    v.shape[k] = shape[k];
    v.strides[k] = stride;
    stride *= shape[k];
  }
  return v;
}

ProblemBuffers make_buffers(const Plan& plan, const Problem& p) {
  const MemSpace sp = plan.memory_space();
  const DType dt = p.desc.dtype;
  ProblemBuffers b;
  b.qkv = Buffer(sp, p.qkv.size());
  b.qkv.upload(p.qkv.data(), p.qkv.size());
  b.out = Buffer(sp, p.out_bytes());
  b.args.qkv = make_view(b.qkv.data(), dt, sp, p.qkv_shape());
  b.args.out = make_view(b.out.data(), dt, sp, p.out_shape());
  const std::vector<std::int32_t>* lens = nullptr;
  if (p.desc.mask == MaskMode::lengths) lens = &p.seq_lens;
  if (p.desc.mask == MaskMode::varlen) lens = &p.cu_seqlens;
  if (lens) {
    b.lengths = Buffer(sp, lens->size() * sizeof(std::int32_t));
    b.lengths.upload(lens->data(), lens->size() * sizeof(std::int32_t));
    TensorView v = make_view(b.lengths.data(), DType::int32, sp, {static_cast<std::int64_t>(lens->size())});
    (p.desc.mask == MaskMode::lengths ? b.args.seq_lens : b.args.cu_seqlens) = v;
  }
  if (p.desc.mask == MaskMode::varlen) b.args.max_seqlen = p.seqlen;
  const std::size_t ws_bytes = plan.workspace_bytes(plan.problem_size(b.args));
  b.workspace = Buffer(sp, ws_bytes);
  b.ws = {b.workspace.data(), ws_bytes};
  return b;
}

// ---------------------------------------------------------------------------------------------
// Execution

RunResult execute(const Plan& plan, const Problem& p, int repeat) {
  if (repeat < 1) bad_flag("--repeat = " + std::to_string(repeat) + " is not allowed: it must be >= 1");
  ProblemBuffers b = make_buffers(plan, p);
  RunResult r;
  r.repeats = repeat;
  std::vector<double> ms;
  // Poison: NaN for float outputs, -1 for INT8, so an unwritten element shows in the checksum.
  constexpr std::uint8_t kPoison = 0xFF;
  if (plan.memory_space() == MemSpace::cuda) {
    require_cuda_build();
#ifdef QKV2CTX_WITH_CUDA
    r.clock = "CUDA events";
    b.out.fill_byte(kPoison);
    plan.run(b.args, b.ws, nullptr);  // warm-up: module loading and first-launch costs stay untimed
    QKV2CTX_CUDA_CHECK(cudaDeviceSynchronize());
    cudaEvent_t start, stop;
    QKV2CTX_CUDA_CHECK(cudaEventCreate(&start));
    QKV2CTX_CUDA_CHECK(cudaEventCreate(&stop));
    try {
      for (int i = 0; i < repeat; ++i) {
        b.out.fill_byte(kPoison);
        QKV2CTX_CUDA_CHECK(cudaEventRecord(start, nullptr));
        plan.run(b.args, b.ws, nullptr);
        QKV2CTX_CUDA_CHECK(cudaEventRecord(stop, nullptr));
        QKV2CTX_CUDA_CHECK(cudaEventSynchronize(stop));
        float t = 0;
        QKV2CTX_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
        ms.push_back(t);
      }
    } catch (...) {
      (void)cudaEventDestroy(start);
      (void)cudaEventDestroy(stop);
      throw;
    }
    QKV2CTX_CUDA_CHECK(cudaEventDestroy(start));
    QKV2CTX_CUDA_CHECK(cudaEventDestroy(stop));
#endif
  } else {
    r.clock = "steady_clock";
    for (int i = 0; i < repeat; ++i) {
      b.out.fill_byte(kPoison);
      const auto t0 = std::chrono::steady_clock::now();
      plan.run(b.args, b.ws, nullptr);
      const auto t1 = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  std::sort(ms.begin(), ms.end());
  r.median_ms = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  r.stats = plan.read_stats(b.ws, nullptr);
  r.out.resize(p.out_bytes());
  b.out.download(r.out.data(), r.out.size());
  return r;
}

}  // namespace qkv2ctx::cli
