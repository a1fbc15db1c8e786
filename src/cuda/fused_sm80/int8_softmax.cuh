// Device building blocks of the fused INT8 kernels, part 2 (int8_tile.cuh has part 1): SPEC 5.0 steps
// 2-6 per element, exactly as the CPU emulation and in the contracted forms the buffered and streaming
// schedules use, and the bound modes' verdict on a row and its counters.
#pragma once
#include <climits>
#include <cstdint>

#include "cuda/common/quad_reduce.cuh"
#include "cuda/fused_sm80/int8_tile.cuh"

namespace qkv2ctx::fused_int8 {

// ---- SPEC 5.0 steps 2-6, per element: as the CPU emulation, and the contracted forms ---------------------

// e = ex2.approx.ftz((x - m) * log2e), x = float(acc1) * scale_bmm1, every step rounded to FP32. The
// int32 -> float conversion is exact either way (|acc1| <= 2^21): sm_90 has I2FP, one ALU instruction;
// older GPUs convert on the quarter-rate unit the exponential needs, so there the FMA-pipe trick.
__device__ __forceinline__ float shifted_exp(int acc1, float scale_bmm1, float shift) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const float x = __fmul_rn(__int2float_rn(acc1), scale_bmm1);
#else
  const float x = __fmul_rn(cuda::ptx::small_int_to_float(acc1), scale_bmm1);
#endif
  return cuda::ex2_approx_ftz(__fmul_rn(__fsub_rn(x, shift), int8_math::kLog2e));
}

// The buffered and streaming schedules' contracted form of steps 2-4: t = fma(float(acc1), fl(scale_bmm1 * log2e),
// -fl(shift * log2e)), one rounding instead of three (two FP32 instructions fewer per element, the
// largest single cost of the exponential pass). It differs from the step list by a few ulp of t,
// i.e. a relative 1e-6-scale change of e, which moves a quantized probability across its rounding
// boundary about once in 10^5 elements; the GPU tests' INT8 bar (within 1 LSB of the exact CPU
// emulation on >= 99.9% of outputs, never more than 2) covers it, and TensorRT's own kernels differ
// from the step list in the same way (SPEC 5.0.2). offset = exp_offset(shift).
__device__ __forceinline__ float exp_offset(float shift) { return -__fmul_rn(shift, int8_math::kLog2e); }
__device__ __forceinline__ float contracted_exp(int acc1, float scale_log2e, float offset) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const float a = __int2float_rn(acc1);
#else
  const float a = cuda::ptx::small_int_to_float(acc1);
#endif
  return cuda::ex2_approx_ftz(__fmaf_rn(a, scale_log2e, offset));
}

// The contracted form of step 6 without saturation (callers guarantee e * k < 127.5): the byte of
// RNE(e * k) with k = fl(inv_sum * scale_softmax), rounded once by the FMA with 1.5 * 2^23 (step 6
// rounds e * inv and the product with scale_softmax first: a relative 2^-23 difference).
__device__ __forceinline__ std::uint32_t contracted_probability_byte(float e, float k) {
  return static_cast<std::uint32_t>(__float_as_int(__fmaf_rn(e, k, cuda::ptx::kRoundMagic)));
}

// The row shift of row_max: max_j x_j = float(max_j acc1_j) * scale_bmm1 (the rounding is monotonic).
__device__ __forceinline__ float row_max_shift(int max_acc1, float scale_bmm1) {
  return __fmul_rn(cuda::ptx::small_int_to_float(max_acc1), scale_bmm1);
}

// Pi8 = sat8(RNE((e * inv) * scale_softmax)) in the low byte. p >= 0, so only the upper saturation
// applies; a NaN (e = inf in an overflowed fixed_bound row) gives a meaningless byte, and those rows
// are written as zeros by the epilogue, as the reference's cvt.rni.sat(NaN) = 0 makes them.
__device__ __forceinline__ std::uint32_t probability_byte(float e, float inv_sum, float scale_softmax) {
  const float v = __fmul_rn(__fmul_rn(e, inv_sum), scale_softmax);
  return cuda::ptx::rne_to_low_byte(fminf(v, 127.0f));
}

// One chunk's exponentials (e[j][i] as in the BMM1 accumulator) -> P·V A fragment (key order above).
__device__ __forceinline__ void pack_probabilities(std::uint32_t (&pa)[4], const float (&e)[4][4], float inv0,
                                                   float inv1, float ssm) {
  using cuda::ptx::pack_low_bytes;
  pa[0] = pack_low_bytes(probability_byte(e[0][0], inv0, ssm), probability_byte(e[0][1], inv0, ssm),
                         probability_byte(e[1][0], inv0, ssm), probability_byte(e[1][1], inv0, ssm));
  pa[1] = pack_low_bytes(probability_byte(e[0][2], inv1, ssm), probability_byte(e[0][3], inv1, ssm),
                         probability_byte(e[1][2], inv1, ssm), probability_byte(e[1][3], inv1, ssm));
  pa[2] = pack_low_bytes(probability_byte(e[2][0], inv0, ssm), probability_byte(e[2][1], inv0, ssm),
                         probability_byte(e[3][0], inv0, ssm), probability_byte(e[3][1], inv0, ssm));
  pa[3] = pack_low_bytes(probability_byte(e[2][2], inv1, ssm), probability_byte(e[2][3], inv1, ssm),
                         probability_byte(e[3][2], inv1, ssm), probability_byte(e[3][3], inv1, ssm));
}

// Is element (n-tile j, register i) of a chunk a key below `valid` (keys of the chunk that exist)?
__device__ __forceinline__ bool key_in_range(int j, int i, int valid) {
  return 8 * j + 2 * (threadIdx.x & 3) + (i & 1) < valid;
}

// Sets the accumulators of keys at or past `valid` to INT_MIN (they never win a row maximum).
__device__ __forceinline__ void mask_chunk_acc(int (&acc)[4][4], int valid) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (!key_in_range(j, i, valid)) acc[j][i] = INT_MIN;
}

// Row maxima of one chunk's accumulators into m[0] (row g) and m[1] (row g + 8).
__device__ __forceinline__ void chunk_row_max(const int (&acc)[4][4], int (&m)[2]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    m[0] = max(m[0], max(acc[j][0], acc[j][1]));
    m[1] = max(m[1], max(acc[j][2], acc[j][3]));
  }
}

// Exponentials of one chunk with per-row shifts (shift[0]: row g, shift[1]: row g + 8); keys at or past
// `valid` get 0.
__device__ __forceinline__ void chunk_exp(const int (&acc)[4][4], float (&e)[4][4], const float (&shift)[2],
                                          float scale_bmm1, int valid) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) e[j][i] = shifted_exp(acc[j][i], scale_bmm1, shift[i >> 1]);
  if (valid < kChunkKeys) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (!key_in_range(j, i, valid)) e[j][i] = 0.0f;
  }
}

// Adds one chunk's exponentials to the thread's row partial sums. Always this order, so recomputing a
// sum from the same exponentials (guarded repair) gives the same bits.
__device__ __forceinline__ void chunk_sum(const float (&e)[4][4], float (&sum)[2]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    sum[0] += e[j][0] + e[j][1];
    sum[1] += e[j][2] + e[j][3];
  }
}

// Reductions over the 4 lanes (q = 0..3) holding one row.
using cuda::quad_max;
using cuda::quad_sum;

// Probabilities of one chunk -> P·V A fragment (pack_probabilities' key order). kExact = false: the
// contracted form (contracted_probability_byte, with inv * scale_softmax per row), which needs no
// saturation when scale_softmax <= 127.25: the row sum is >= each of its terms (FP32 addition of
// non-negative numbers is monotonic), so e * fl(fl(1 / sum) * scale_softmax) <= 127.25 (1 + 2^-23)^2 <
// 127.5 rounds to <= 127 (and k must be finite). kExact = true (scale_softmax > 127.25, i.e. dq_probs <
// 1/127.25, or rows with tiny sums): SPEC 5.0 step 6 as written, saturation included.
template <bool kExact>
__device__ __forceinline__ void pack_probabilities_fast(std::uint32_t (&pa)[4], const float (&e)[4][4], float inv0,
                                                        float inv1, float ssm) {
  if constexpr (kExact) {
    pack_probabilities(pa, e, inv0, inv1, ssm);
  } else {
    using cuda::ptx::pack_low_bytes;
    const float k0 = __fmul_rn(inv0, ssm), k1 = __fmul_rn(inv1, ssm);
    auto byte = [](float v, float k) { return contracted_probability_byte(v, k); };
    pa[0] = pack_low_bytes(byte(e[0][0], k0), byte(e[0][1], k0), byte(e[1][0], k0), byte(e[1][1], k0));
    pa[1] = pack_low_bytes(byte(e[0][2], k1), byte(e[0][3], k1), byte(e[1][2], k1), byte(e[1][3], k1));
    pa[2] = pack_low_bytes(byte(e[2][0], k0), byte(e[2][1], k0), byte(e[3][0], k0), byte(e[3][1], k0));
    pa[3] = pack_low_bytes(byte(e[2][2], k1), byte(e[2][3], k1), byte(e[3][2], k1), byte(e[3][3], k1));
  }
}

// Whether an out pass may use the contracted quantization (pack_probabilities_fast<false>): it needs
// scale_softmax <= 127.25 and a finite inv * scale_softmax, which a row that failed the fixed bound and
// is kept (fixed_bound) may not have: a sum near 2^-126 has an inverse that overflows times 127. Both
// conditions are CTA-uniform.
__device__ __forceinline__ bool contracted_quantization_ok(float scale_softmax, bool kept_failed_rows) {
  return scale_softmax <= 127.25f && !kept_failed_rows;
}

// Valid keys of chunk c of a tile holding tile_keys keys, clamped to 0 .. 32: key_in_range compares an
// unsigned lane expression with it, so a negative count would make every key look valid.
__device__ __forceinline__ int chunk_valid_keys(int tile_keys, int c) {
  return max(0, min(kChunkKeys, tile_keys - c * kChunkKeys));
}

// Exponentials of one chunk in the contracted form (contracted_exp; offset[r] = exp_offset(shift of
// row half r)); kMasked: keys at or past `valid` (0 .. 32) get 0, else every key is valid and nothing
// is tested.
template <bool kMasked>
__device__ __forceinline__ void exponentials(const int (&acc)[4][4], float (&e)[4][4], const float (&offset)[2],
                                             float scale_log2e, int valid) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      e[j][i] = contracted_exp(acc[j][i], scale_log2e, offset[i >> 1]);
      if constexpr (kMasked) e[j][i] = key_in_range(j, i, valid) ? e[j][i] : 0.0f;
    }
}

// Adds one chunk's exponentials to the row partial sums as a balanced tree (short dependency chains).
// One fixed order for every pass, so a guarded repair recomputes unchanged rows' sums bit for bit.
__device__ __forceinline__ void chunk_sum_tree(const float (&e)[4][4], float (&sum)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = 2 * r;
    sum[r] += ((e[0][i] + e[0][i + 1]) + (e[1][i] + e[1][i + 1])) + ((e[2][i] + e[2][i + 1]) + (e[3][i] + e[3][i + 1]));
  }
}

// ---- bound modes: which rows failed, and the counters ---------------------------------------------------

struct RowOutcome {
  bool underflow, overflow;
};
__device__ __forceinline__ RowOutcome fixed_bound_outcome(float sum) {
  const bool fail = int8_math::guarded_row_needs_repair(sum);
  const bool over = !(sum <= 3.402823466e38f);  // +inf (or NaN)
  return {fail && !over, fail && over};
}

// Per-CTA row counters in shared memory, written to the CTA's slot at the end.
struct CtaCounters {
  unsigned underflow, overflow, repaired;
};

// Warp-aggregated count of (at most 32) flags into a shared counter.
__device__ __forceinline__ void count_rows(unsigned* counter, bool flag) {
  const unsigned n = __popc(__ballot_sync(0xffffffffu, flag));
  if ((threadIdx.x & 31) == 0 && n != 0) atomicAdd(counter, n);
}

// The fixed bound's verdict on a thread's two rows (a and b, its fragments' two row halves) from
// their exponential sums. Failed rows (under- or overflow) are counted once per quad when `count`
// (one warp per row group counts); guarded also counts them as repaired, since it recomputes them
// (fail_*); fixed_bound keeps them and zeroes the overflowed ones (sum = +inf: inv = 0, e * 0 = 0 or
// NaN, cvt.rni.sat(NaN) = 0: the reference's row is zero).
struct RowPairVerdict {
  bool fail_a, fail_b, zero_a, zero_b;
};
__device__ __forceinline__ RowPairVerdict judge_row_pair(const Int8Params& p, const float (&sum)[2], bool valid_a,
                                                         bool valid_b, bool quad_leader, bool count,
                                                         CtaCounters& counters) {
  const RowOutcome oa = valid_a ? fixed_bound_outcome(sum[0]) : RowOutcome{false, false};
  const RowOutcome ob = valid_b ? fixed_bound_outcome(sum[1]) : RowOutcome{false, false};
  const bool fail_a = oa.underflow || oa.overflow, fail_b = ob.underflow || ob.overflow;
  const bool fixed = p.bound == BoundMode::fixed_bound;
  // Nothing to count unless some row of the warp failed (rare): one vote instead of six. `count` is
  // warp-uniform, so the whole warp takes the branch.
  if (count && __any_sync(0xffffffffu, fail_a || fail_b)) {
    count_rows(&counters.underflow, quad_leader && oa.underflow);
    count_rows(&counters.underflow, quad_leader && ob.underflow);
    count_rows(&counters.overflow, quad_leader && oa.overflow);
    count_rows(&counters.overflow, quad_leader && ob.overflow);
    if (!fixed) {
      count_rows(&counters.repaired, quad_leader && fail_a);
      count_rows(&counters.repaired, quad_leader && fail_b);
    }
  }
  return {fail_a, fail_b, fixed && oa.overflow, fixed && ob.overflow};
}

// judge_row_pair for a whole CTA of the buffered or streaming schedule (fixed_bound, guarded; every
// thread calls it, as it holds a CTA barrier): the thread's rows, whether any row of the CTA failed,
// and whether failed rows are kept as they are (fixed_bound; see contracted_quantization_ok).
struct CtaVerdict {
  RowPairVerdict rows;
  bool any_failed, kept_failed_rows;
};
__device__ __forceinline__ CtaVerdict judge_cta(const Int8Params& p, const float (&sum)[2], bool valid_a, bool valid_b,
                                                bool quad_leader, CtaCounters& counters) {
  const RowPairVerdict v = judge_row_pair(p, sum, valid_a, valid_b, quad_leader, true, counters);
  const bool any_failed = __syncthreads_or(v.fail_a || v.fail_b);
  return {v, any_failed, any_failed && p.bound == BoundMode::fixed_bound};
}

// The passes that precede the out pass in the schedules that stream K (streaming, wgmma): the row shifts
// (offset, exp_offset form) and exponential sums per bound mode. row_max: a max pass, then the sum pass
// with each row's maximum; fixed_bound and guarded: the sum pass with the fixed bound, then the verdict
// (judge(sum) -> CtaVerdict, which holds a CTA barrier), and for guarded CTAs with failed rows (rare) a max
// pass and the sum pass again with the failed rows' maxima (unchanged rows recompute bit-identical sums).
// max_pass(int (&m)[2], next) and sum_pass(offset, sum) are the schedule's passes (next: what the pass
// prefetches for the one after it, as in their run_pass).
template <class MaxPass, class SumPass, class Judge>
__device__ __forceinline__ void bounded_row_sums(const Int8Params& p, MaxPass&& max_pass, SumPass&& sum_pass,
                                                 Judge&& judge, float (&offset)[2], float (&sum)[2]) {
  offset[0] = offset[1] = exp_offset(p.fixed_bound);
  if (p.bound == BoundMode::row_max) {
    int m[2];
    max_pass(m, 0);
    offset[0] = exp_offset(row_max_shift(m[0], p.scale_bmm1));
    offset[1] = exp_offset(row_max_shift(m[1], p.scale_bmm1));
  }
  sum_pass(offset, sum);
  if (p.bound == BoundMode::row_max) return;
  const CtaVerdict v = judge(sum);
  if (v.any_failed && p.bound == BoundMode::guarded) {  // the whole CTA takes two more passes
    int m[2];
    max_pass(m, 0);
    if (v.rows.fail_a) offset[0] = exp_offset(row_max_shift(m[0], p.scale_bmm1));
    if (v.rows.fail_b) offset[1] = exp_offset(row_max_shift(m[1], p.scale_bmm1));
    sum_pass(offset, sum);
  }
}

// Thread 0 of every CTA writes its slot; CTA 0 also records how many slots the run wrote.
__device__ __forceinline__ void write_counter_slot(const Int8Params& p, const CtaCounters& c) {
  if (p.slots == nullptr || threadIdx.x != 0) return;
  p.slots[blockIdx.x] = Int8CounterSlot{c.underflow, c.overflow, c.repaired, 0u};
  if (blockIdx.x == 0) *p.slot_count = gridDim.x;
}

}  // namespace qkv2ctx::fused_int8
