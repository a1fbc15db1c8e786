// GPU test helpers: device buffers, tensors on both sides, and one routine that runs a backend on
// random inputs and compares it with the CPU reference (reused by every CUDA backend's tests).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "qkv2ctx/qkv2ctx.hpp"

namespace qkv2ctx::test {

// Owning device allocation (cudaMalloc: 256-byte aligned). Throws qkv2ctx::Error on CUDA errors.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  void upload(const void* src, std::size_t bytes);
  void download(void* dst, std::size_t bytes) const;
  void fill_byte(std::uint8_t b);  // poison (synchronous)

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// A HostTensor's device copy with a view of the same shape (MemSpace::cuda).
struct DeviceTensor {
  DeviceBuffer buffer;
  DType dtype = DType::fp32;
  std::vector<std::int64_t> shape;

  static DeviceTensor from_host(const HostTensor& host);
  TensorView view() const;
  HostTensor to_host() const;
};

// One problem: sizes, per-sequence lengths and how the random inputs look.
struct ProblemSpec {
  int batch = 1;
  int max_seqlen = 1;                 // S (mask none/lengths) or the host upper bound (varlen)
  std::vector<std::int32_t> lengths;  // mask lengths / varlen: one per sequence
  int extra_tokens = 0;               // varlen: qkv/out rows after cu_seqlens[B] (must stay untouched)
  double amplitude = 2.0;             // float inputs uniform in [-amplitude, amplitude]
  int int_amax = 127;                 // int8 inputs uniform in [-int_amax, int_amax]
  // int8: this many token rows get Q and K set to +int_amax in every lane, so that rows holding a
  // spike query and a spike key have huge logits (drives the fixed bound into overflow).
  int int8_spike_tokens = 0;

  std::int64_t num_tokens(MaskMode mask) const;  // rows of qkv/out
  std::string str() const;
};

// Lengths for a random problem: batch >= 3 always includes an empty and a full sequence (ragged),
// batch < 3 draws from [S/2, S]. Mask none gets no lengths.
ProblemSpec random_problem(MaskMode mask, int batch, int S, std::uint64_t seed, int extra_tokens = 3);

// Random inputs (qkv, seq_lens / cu_seqlens) of a problem, host side, plus output shape.
struct HostProblem {
  HostTensor qkv;
  HostTensor seq_lens;    // int32 [B] (mask lengths)
  HostTensor cu_seqlens;  // int32 [B + 1] (mask varlen)
  std::vector<std::int64_t> out_shape;
  std::int64_t covered_tokens = 0;  // out rows that a run writes (varlen: cu_seqlens[B]; else all)
};
HostProblem make_host_problem(const AttentionDesc& desc, const ProblemSpec& spec, std::uint64_t seed);

// Output token row of element i of `out` (for coverage checks).
std::int64_t out_token_of(const AttentionDesc& desc, const std::vector<std::int64_t>& out_shape, std::int64_t i);

// What a backend produced compared with the CPU reference.
struct Comparison {
  std::string label;                 // problem, descriptor and seed (reproduces the case)
  std::int64_t compared = 0;         // elements of the covered rows
  std::int64_t unwritten = 0;        // covered elements that differ between two runs with different poisons
  std::int64_t touched_outside = 0;  // elements outside the covered rows that a run changed
  std::int64_t nonfinite = 0;        // float types: NaN / inf outputs
  double max_abs = 0, max_rel = 0;   // float types: |gpu - ref|, relative to max(|ref|, 1e-3)
  std::int64_t worst_index = -1;
  double worst_gpu = 0, worst_ref = 0;
  std::array<std::int64_t, 4> lsb_histogram{};  // int8: |gpu - ref| = 0, 1, 2, > 2
  RunStats gpu_stats, ref_stats;

  double lsb_mismatch_rate() const;  // int8: fraction with |gpu - ref| >= 1 (reported)
  double rate_over_1_lsb() const;    // int8: fraction with |gpu - ref| >= 2 (the 0.1% bar)
  std::string summary() const;
};

// Runs `backend` twice (outputs and workspace poisoned with 0x7f bytes, then 0xff = NaN for the float
// types) and the CPU reference once on the same random inputs, and compares.
Comparison compare_with_reference(const AttentionDesc& desc, const ProblemSpec& spec,
                                  const PlanOptions& backend, std::uint64_t seed);

// SM version of device 0 (10 * major + minor; 0 without a device).
int device_sm();

// The accuracy a float backend must reach (see the derivation in gpu_test_util.cpp).
double float_tolerance(const AttentionDesc& desc, const ProblemSpec& spec);

// compare_with_reference with a fresh seed, the summary printed, and the GoogleTest expectations:
// every covered element written, nothing else touched, finite; float types within
// float_tolerance(); int8 within 1 LSB on >= 99.9% of elements and never more than 2 LSB, with the
// same bound-mode row counters as the reference.
void expect_matches_reference(const AttentionDesc& desc, const ProblemSpec& spec, const PlanOptions& backend);

// INT8: this case within 2 LSB everywhere; its histogram joins the pool of every INT8 comparison of
// the binary, which must be within 1 LSB on >= 99.9% of its outputs (checked at global tear-down).
void expect_int8_within_bar(const Comparison& c);

}  // namespace qkv2ctx::test
