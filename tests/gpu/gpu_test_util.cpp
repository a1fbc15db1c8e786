#include "gpu/gpu_test_util.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <new>
#include <random>
#include <sstream>

#include "core/indexing.hpp"
#include "cuda/common/cuda_check.hpp"

namespace qkv2ctx::test {

// ---- DeviceBuffer / DeviceTensor -------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes > 0) QKV2CTX_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) (void)cudaFree(ptr_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  std::swap(ptr_, o.ptr_);
  std::swap(bytes_, o.bytes_);
  return *this;
}
void DeviceBuffer::upload(const void* src, std::size_t bytes) {
  if (bytes) QKV2CTX_CUDA_CHECK(cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice));
}
void DeviceBuffer::download(void* dst, std::size_t bytes) const {
  if (bytes) QKV2CTX_CUDA_CHECK(cudaMemcpy(dst, ptr_, bytes, cudaMemcpyDeviceToHost));
}
void DeviceBuffer::fill_byte(std::uint8_t b) {
  if (bytes_) QKV2CTX_CUDA_CHECK(cudaMemset(ptr_, b, bytes_));
}

DeviceTensor DeviceTensor::from_host(const HostTensor& host) {
  DeviceTensor t;
  t.dtype = host.dtype;
  t.shape = host.shape;
  t.buffer = DeviceBuffer(host.bytes.size());
  t.buffer.upload(host.bytes.data(), host.bytes.size());
  return t;
}

TensorView DeviceTensor::view() const {
  HostTensor shape_only;
  shape_only.dtype = dtype;
  shape_only.shape = shape;
  TensorView v = shape_only.view();
  v.data = buffer.data();
  v.space = MemSpace::cuda;
  return v;
}

HostTensor DeviceTensor::to_host() const {
  HostTensor h(dtype, shape);
  buffer.download(h.data(), h.bytes.size());
  return h;
}

// ---- problems ----------------------------------------------------------------------------------------

std::int64_t ProblemSpec::num_tokens(MaskMode mask) const {
  if (mask != MaskMode::varlen) return static_cast<std::int64_t>(batch) * max_seqlen;
  std::int64_t t = extra_tokens;
  for (auto l : lengths) t += l;
  return t;
}

std::string ProblemSpec::str() const {
  std::ostringstream os;
  os << "B=" << batch << " S=" << max_seqlen;
  if (!lengths.empty()) {
    os << " lengths=[";
    for (std::size_t i = 0; i < lengths.size(); ++i) os << (i ? "," : "") << lengths[i];
    os << "]";
  }
  if (extra_tokens) os << " extra_tokens=" << extra_tokens;
  if (int8_spike_tokens) os << " int8_spikes=" << int8_spike_tokens;
  return os.str();
}

ProblemSpec random_problem(MaskMode mask, int batch, int S, std::uint64_t seed, int extra_tokens) {
  ProblemSpec p;
  p.batch = batch;
  p.max_seqlen = S;
  if (mask == MaskMode::none) return p;
  if (batch >= 3) {
    p.lengths = random_lengths(seed, batch, 0, S);
    p.lengths[1] = 0;           // an empty sequence
    p.lengths[batch - 1] = S;   // and a full one
  } else {
    p.lengths = random_lengths(seed, batch, (S + 1) / 2, S);
  }
  if (mask == MaskMode::varlen) p.extra_tokens = extra_tokens;
  return p;
}

namespace {

HostTensor int32_tensor(const std::vector<std::int32_t>& values) {
  HostTensor t(DType::int32, {static_cast<std::int64_t>(values.size())});
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(std::int32_t));
  return t;
}

// Host workspace for the CPU reference, 16-byte aligned as Plan::run requires.
struct HostWorkspace {
  std::vector<std::max_align_t> storage;
  explicit HostWorkspace(std::size_t bytes) : storage(bytes / sizeof(std::max_align_t) + 1) {}
  Workspace get() { return {storage.data(), storage.size() * sizeof(std::max_align_t)}; }
};

AttentionArgs make_args(const AttentionDesc& desc, const ProblemSpec& spec, const TensorView& qkv,
                        const TensorView& out, const TensorView& seq_lens, const TensorView& cu_seqlens) {
  AttentionArgs a;
  a.qkv = qkv;
  a.out = out;
  if (desc.mask == MaskMode::lengths) a.seq_lens = seq_lens;
  if (desc.mask == MaskMode::varlen) {
    a.cu_seqlens = cu_seqlens;
    a.max_seqlen = spec.max_seqlen;
  }
  return a;
}

}  // namespace

HostProblem make_host_problem(const AttentionDesc& desc, const ProblemSpec& spec, std::uint64_t seed) {
  HostProblem p;
  const std::int64_t E = desc.hidden_size(), T = spec.num_tokens(desc.mask);
  const int S = spec.max_seqlen, B = spec.batch;
  std::vector<std::int64_t> qkv_shape;
  if (desc.mask != MaskMode::varlen) {
    qkv_shape = desc.layout == Layout::trt ? std::vector<std::int64_t>{S, B, 3 * E}
                                           : std::vector<std::int64_t>{B, S, 3 * E};
    p.out_shape = {qkv_shape[0], qkv_shape[1], E};
    p.covered_tokens = T;
  } else if (desc.layout == Layout::chw32) {
    qkv_shape = {3 * E / 32, T, 32};
    p.out_shape = {E / 32, T, 32};
  } else {
    qkv_shape = {T, 3 * E};
    p.out_shape = {T, E};
  }
  p.qkv = HostTensor(desc.dtype, qkv_shape);
  p.qkv.fill_random(seed, spec.amplitude, spec.int_amax);
  if (desc.mask == MaskMode::lengths) p.seq_lens = int32_tensor(spec.lengths);
  if (desc.mask == MaskMode::varlen) {
    const std::vector<std::int32_t> cu = prefix_sums(spec.lengths);
    p.cu_seqlens = int32_tensor(cu);
    p.covered_tokens = cu.back();
  }
  if (desc.dtype == DType::int8 && spec.int8_spike_tokens > 0 && T > 0) {
    std::mt19937_64 rng(seed ^ 0x5a5a5a5aull);
    std::uniform_int_distribution<std::int64_t> pick(0, T - 1);
    for (int s = 0; s < spec.int8_spike_tokens; ++s) {
      const std::int64_t t = pick(rng);
      for (int which = 0; which < 2; ++which)
        for (int n = 0; n < desc.num_heads; ++n)
          for (int d = 0; d < desc.head_size; ++d)
            p.qkv.set(qkv_offset(desc.layout, t, which, n, d, desc.num_heads, desc.head_size, T), spec.int_amax);
    }
  }
  return p;
}

std::int64_t out_token_of(const AttentionDesc& desc, const std::vector<std::int64_t>& out_shape, std::int64_t i) {
  if (desc.layout == Layout::chw32) return (i / 32) % out_shape[1];
  if (desc.mask == MaskMode::varlen) return i / out_shape[1];
  return i / out_shape[2];  // padded: every row is covered; the index only has to be in range
}

// ---- comparison ---------------------------------------------------------------------------------------

double Comparison::lsb_mismatch_rate() const {
  const std::int64_t total = lsb_histogram[0] + lsb_histogram[1] + lsb_histogram[2] + lsb_histogram[3];
  return total ? static_cast<double>(total - lsb_histogram[0]) / static_cast<double>(total) : 0.0;
}

double Comparison::rate_over_1_lsb() const {
  const std::int64_t total = lsb_histogram[0] + lsb_histogram[1] + lsb_histogram[2] + lsb_histogram[3];
  return total ? static_cast<double>(lsb_histogram[2] + lsb_histogram[3]) / static_cast<double>(total) : 0.0;
}

std::string Comparison::summary() const {
  std::ostringstream os;
  os << label << ": " << compared << " outputs";
  if (lsb_histogram[0] + lsb_histogram[1] + lsb_histogram[2] + lsb_histogram[3] > 0) {
    os << ", |gpu-ref| LSB histogram {0: " << lsb_histogram[0] << ", 1: " << lsb_histogram[1]
       << ", 2: " << lsb_histogram[2] << ", >2: " << lsb_histogram[3] << "}, mismatch rate "
       << lsb_mismatch_rate() * 100.0 << "% (> 1 LSB: " << rate_over_1_lsb() * 100.0
       << "%), rows underflow/overflow/repaired gpu "
       << gpu_stats.fixed_bound_underflow_rows << "/" << gpu_stats.fixed_bound_overflow_rows << "/"
       << gpu_stats.repaired_rows << " ref " << ref_stats.fixed_bound_underflow_rows << "/"
       << ref_stats.fixed_bound_overflow_rows << "/" << ref_stats.repaired_rows;
  } else {
    os << ", max abs err " << max_abs << ", max rel err " << max_rel;
    if (worst_index >= 0) os << " (worst at " << worst_index << ": gpu " << worst_gpu << " ref " << worst_ref << ")";
  }
  if (unwritten) os << ", UNWRITTEN " << unwritten;
  if (touched_outside) os << ", TOUCHED OUTSIDE " << touched_outside;
  if (nonfinite) os << ", NONFINITE " << nonfinite;
  return os.str();
}

Comparison compare_with_reference(const AttentionDesc& desc, const ProblemSpec& spec,
                                  const PlanOptions& backend, std::uint64_t seed) {
  Comparison c;
  c.label = "[" + std::string(to_string(backend.backend)) + "] " + describe(desc) + " " + spec.str() +
            " seed=" + std::to_string(seed);
  const HostProblem hp = make_host_problem(desc, spec, seed);

  // CPU reference.
  const Plan ref_plan = make_plan(desc, PlanOptions{Backend::cpu, 0});
  HostTensor ref_out(desc.dtype, hp.out_shape);
  ref_out.fill_byte(0x7f);
  const AttentionArgs host_args = make_args(desc, spec, hp.qkv.view(), ref_out.view(), hp.seq_lens.view(), hp.cu_seqlens.view());
  HostWorkspace host_ws(ref_plan.workspace_bytes(ref_plan.problem_size(host_args)));
  ref_plan.run(host_args, host_ws.get());
  c.ref_stats = ref_plan.read_stats(host_ws.get());

  // Backend under test, twice, with different poisons in the output and the workspace.
  const Plan plan = make_plan(desc, backend);
  const DeviceTensor qkv = DeviceTensor::from_host(hp.qkv);
  const DeviceTensor seq_lens = DeviceTensor::from_host(hp.seq_lens);
  const DeviceTensor cu_seqlens = DeviceTensor::from_host(hp.cu_seqlens);
  DeviceTensor out{DeviceBuffer(ref_out.bytes.size()), desc.dtype, hp.out_shape};
  const AttentionArgs args = make_args(desc, spec, qkv.view(), out.view(), seq_lens.view(), cu_seqlens.view());
  DeviceBuffer ws(plan.workspace_bytes(plan.problem_size(args)));
  const Workspace workspace{ws.data(), ws.bytes()};
  HostTensor runs[2];
  const std::uint8_t poisons[2] = {0x7f, 0xff};
  for (int r = 0; r < 2; ++r) {
    out.buffer.fill_byte(poisons[r]);
    ws.fill_byte(poisons[r]);
    plan.run(args, workspace, nullptr);
    c.gpu_stats = plan.read_stats(workspace, nullptr);
    runs[r] = out.to_host();
  }

  const bool int8 = desc.dtype == DType::int8;
  const std::size_t elt = element_size(desc.dtype);
  for (std::int64_t i = 0; i < ref_out.numel(); ++i) {
    const bool covered = out_token_of(desc, hp.out_shape, i) < hp.covered_tokens;
    const std::uint8_t* a = runs[0].bytes.data() + i * elt;
    const std::uint8_t* b = runs[1].bytes.data() + i * elt;
    if (!covered) {
      bool intact = true;
      for (std::size_t k = 0; k < elt; ++k) intact = intact && a[k] == poisons[0] && b[k] == poisons[1];
      c.touched_outside += !intact;
      continue;
    }
    ++c.compared;
    if (std::memcmp(a, b, elt) != 0) ++c.unwritten;
    const double g = runs[0].get(i), ref = ref_out.get(i);
    if (int8) {
      const auto diff = static_cast<std::int64_t>(std::abs(g - ref));
      ++c.lsb_histogram[static_cast<std::size_t>(std::min<std::int64_t>(diff, 3))];
      continue;
    }
    if (!std::isfinite(g)) {
      ++c.nonfinite;
      continue;
    }
    const double abs_err = std::abs(g - ref);
    if (abs_err > c.max_abs) {
      c.max_abs = abs_err;
      c.worst_index = i;
      c.worst_gpu = g;
      c.worst_ref = ref;
    }
    c.max_rel = std::max(c.max_rel, abs_err / std::max(std::abs(ref), 1e-3));
  }
  return c;
}

// Tolerances (A = amplitude: |v| <= A, so every output, a convex combination of values, has |o| <= A):
//  - FP32 vs the double reference rounded to FP32: the two FP32 GEMMs (dot products of length H,
//    then S) and the FP32 softmax; rounding errors grow like sqrt(K) * u (u = 2^-24) for these
//    random inputs. Allowed: 64 * u * A * sqrt(H + S) (e.g. 2.5e-4 at A = 2, S = 1024, H = 64).
//    TF32 (10-bit mantissa inputs) would be off by about A * 2^-11 = 1e-3 and fails.
//  - FP16: probabilities rounded to FP16 before PV: |dp| <= 2^-11 p (normal) or 2^-25 (subnormal,
//    p < 2^-14), so |d(sum p v)| <= A * (2^-11 + S * 2^-25); the output rounding of GPU and
//    reference can differ by one FP16 ulp <= 2^-10 * A. Plus the FP32 term above.
//  - BF16: the same with an 8-bit significand: A * (2^-8 + 2^-7) (BF16 has FP32's exponent range:
//    no subnormal probabilities worth counting). Plus the FP32 term.
int device_sm() {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) != cudaSuccess)
    return 0;
  return 10 * major + minor;
}

double float_tolerance(const AttentionDesc& desc, const ProblemSpec& spec) {
  const double A = spec.amplitude, u32 = std::ldexp(1.0, -24);
  const double fp32 = 64.0 * u32 * A * std::sqrt(static_cast<double>(desc.head_size + spec.max_seqlen));
  switch (desc.dtype) {
    case DType::fp16:
      return fp32 + A * (std::ldexp(1.0, -11) + spec.max_seqlen * std::ldexp(1.0, -25) + std::ldexp(1.0, -10));
    case DType::bf16:
      return fp32 + A * (std::ldexp(1.0, -8) + std::ldexp(1.0, -7));
    default:
      return fp32;
  }
}

// ---- INT8: the 99.9% bar over the whole sweep ----------------------------------------------------------

namespace {

// Every INT8 comparison of the binary, pooled: the bar "within 1 LSB on >= 99.9% of the elements" is
// a statement about the elements of the whole random sweep. Checked in the global tear-down, where a
// failure fails the binary (printed with the pooled histogram).
std::array<std::int64_t, 4> g_int8_pool{};

class Int8PoolCheck : public ::testing::Environment {
 public:
  void TearDown() override {
    const std::int64_t total = g_int8_pool[0] + g_int8_pool[1] + g_int8_pool[2] + g_int8_pool[3];
    if (total == 0) return;
    const double over_1 = static_cast<double>(g_int8_pool[2] + g_int8_pool[3]) / static_cast<double>(total);
    std::cout << "[qkv2ctx] INT8 outputs compared with the CPU emulation, all tests: " << total
              << ", |gpu-ref| LSB histogram {0: " << g_int8_pool[0] << ", 1: " << g_int8_pool[1] << ", 2: "
              << g_int8_pool[2] << ", >2: " << g_int8_pool[3] << "}, > 1 LSB: " << over_1 * 100.0 << "%"
              << std::endl;
    EXPECT_EQ(g_int8_pool[3], 0) << "INT8 outputs more than 2 LSB off";
    EXPECT_LE(over_1, 0.001) << "more than 0.1% of all INT8 outputs compared are more than 1 LSB off";
  }
};
[[maybe_unused]] ::testing::Environment* const g_int8_pool_check =
    ::testing::AddGlobalTestEnvironment(new Int8PoolCheck);

}  // namespace

void expect_int8_within_bar(const Comparison& c) {
  for (int i = 0; i < 4; ++i) g_int8_pool[i] += c.lsb_histogram[i];
  EXPECT_EQ(c.lsb_histogram[3], 0) << "outputs more than 2 LSB off: " << c.summary();
}

// INT8 criteria (the issues' bar: within 1 LSB on >= 99.9% of elements, never more than 2 LSB):
// the reference emulates the kernels' steps exactly, but exp differs by ~1 ulp (ex2.approx vs exact
// exp2) and the FP32 row sums are added in another order, so a probability RNE(127 p) can land on
// the other side of a .5 boundary (a few per million probabilities). One such flip moves every
// output of its row by |v| * scale_bmm2: up to 2 LSB for scale_bmm2 = 1/64 (the tests' benign
// setting). A row of S keys flips with probability ~ S * 4e-6, so at S ~ 500 about 0.1% of the rows
// (and most of their outputs, by 1 or 2 LSB) differ: the 1-LSB share is reported, the bar counts
// the outputs more than 1 LSB off. A single flip in a small case (one row of 64 outputs among a few
// thousand) already exceeds 0.1% of that case: so each case must stay within 2 LSB, and the 0.1% is
// asserted over every INT8 output the binary compares (expect_int8_within_bar).
void expect_matches_reference(const AttentionDesc& desc, const ProblemSpec& spec, const PlanOptions& backend) {
  const Comparison c = compare_with_reference(desc, spec, backend, fresh_seed());
  std::cout << "  " << c.summary() << std::endl;
  EXPECT_EQ(c.unwritten, 0) << "outputs not written (or not deterministic): " << c.label;
  EXPECT_EQ(c.touched_outside, 0) << "outputs outside the sequences were changed: " << c.label;
  EXPECT_EQ(c.nonfinite, 0) << c.label;
  if (desc.dtype == DType::int8) {
    expect_int8_within_bar(c);
    EXPECT_EQ(c.gpu_stats.fixed_bound_underflow_rows, c.ref_stats.fixed_bound_underflow_rows) << c.summary();
    EXPECT_EQ(c.gpu_stats.fixed_bound_overflow_rows, c.ref_stats.fixed_bound_overflow_rows) << c.summary();
    EXPECT_EQ(c.gpu_stats.repaired_rows, c.ref_stats.repaired_rows) << c.summary();
  } else {
    const double tol = float_tolerance(desc, spec);
    EXPECT_LE(c.max_abs, tol) << "max abs error above the " << to_string(desc.dtype)
                              << " tolerance " << tol << ": " << c.summary();
  }
}

}  // namespace qkv2ctx::test
