// Device building blocks of the fused INT8 kernels (int8_buffered.cuh, int8_streaming.cuh, int8_resident.cuh): which work a
// CTA owns, shared-memory tiles, the two GEMMs on 16-row warp tiles, the SPEC 5.0 per-element steps and
// the epilogue. Fragment layouts are those of ptx_int8.cuh (g = lane / 4, q = lane % 4).
//
// Key order inside a 32-key chunk. The BMM1 accumulator of n-tile j gives a thread keys 8j + 2q and
// 8j + 2q + 1, but the P·V A operand wants 4 consecutive k per register. Since a GEMM does not care in
// which order its k index runs, P's k order is permuted instead of moving data: A register a0 holds
// keys (2q, 2q+1, 8+2q, 9+2q) (n-tiles 0 and 1), a2 keys (16+2q, 17+2q, 24+2q, 25+2q) (n-tiles 2, 3).
// V's B operand must follow the same order. ldmatrix.trans on b16 elements gives a thread, from each
// 8-key block, keys (2q, 2q+1) of the column pair (2g, 2g+1); one PRMT per register then gathers keys
// (2q, 2q+1, 8+2q, 9+2q) of column 2g ("even" n-tile) or of column 2g+1 ("odd" n-tile). So each
// 16-column group h of the output is two n8 tiles, even and odd columns, and a thread ends up with
// columns 16h + 4q .. 16h + 4q + 3 of its two rows: 4 contiguous output bytes.
#pragma once
#include <climits>
#include <cstdint>

#include "core/backend.hpp"
#include "core/indexing.hpp"
#include "cuda/common/cu_seqlens_check.cuh"
#include "cuda/common/int8_device.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/ptx_int8.cuh"
#include "cuda/fused_sm80/int8_params.hpp"
#include "qkv2ctx/detail/int8_math.hpp"

namespace qkv2ctx::fused_int8 {

using cuda::ptx::smem_u32;

// ---- which (sequence, head, query rows) a CTA computes -------------------------------------------------

struct CtaWork {
  std::int64_t row0;      // token row of sequence position 0
  std::int64_t row_step;  // token rows between consecutive positions
  int keys;               // valid keys (0 .. max_seqlen)
  int head;
  int row_begin, row_end;  // this CTA's query positions [row_begin, row_end) within the sequence
};

// cu_seqlens[b] clamped into [0, T]: whatever the device array holds, rows stay inside the tensors.
__device__ __forceinline__ std::int64_t clamped_cu(const Int8Params& p, int b) {
  const std::int64_t v = __ldg(p.cu_seqlens + b);
  return v < 0 ? 0 : (v > p.num_tokens ? p.num_tokens : v);
}

// First query-tile slot of sequence b (int8_params.hpp, tile_slots_for).
__device__ __forceinline__ std::int64_t first_slot(const Int8Params& p, int b) {
  // cu_seqlens entries are int32, so the quotient needs only a 32-bit division.
  return static_cast<std::int64_t>(static_cast<unsigned>(clamped_cu(p, b)) / static_cast<unsigned>(p.block_m)) + b;
}

// The work of CTA `cta` (a query-tile slot of one head). False when it has nothing to do (an idle
// varlen slot). Every warp computes the same answer.
__device__ __forceinline__ bool resolve_cta_work(const Int8Params& p, std::int64_t cta, CtaWork& w) {
  if (p.batch <= 0) return false;
  // 32-bit division (a 64-bit one is a ~70-instruction call): launches have < 2^31 CTAs
  // (launch_int8_instance checks), so every index and tile_slots fits.
  const unsigned item = static_cast<unsigned>(cta), slots = static_cast<unsigned>(p.tile_slots);
  const unsigned slot = item % slots;
  if (p.mask != MaskMode::varlen) {
    const unsigned seq_head = item / slots;
    w.head = static_cast<int>(seq_head % static_cast<unsigned>(p.num_heads));
    const int b = static_cast<int>(seq_head / static_cast<unsigned>(p.num_heads));
    const SeqSpan span = seq_span(p.mask, p.layout, b, p.batch, p.max_seqlen, p.seq_lens, nullptr);
    w.row0 = span.row0;
    w.row_step = span.row_step;
    w.keys = span.keys;
    w.row_begin = static_cast<int>(slot) * p.block_m;
    w.row_end = min(span.rows, w.row_begin + p.block_m);
    return w.row_begin < w.row_end;
  }
  w.head = static_cast<int>(item / slots);
  // Largest b in [0, B) with first_slot(b) <= slot: each round probes 32 evenly spaced candidates, one
  // per lane, and keeps the last that qualifies (ceil(log32 B) rounds, no scan). Candidate lo always
  // qualifies for valid cu_seqlens; for corrupt ones the search still ends on some b in range.
  const int lane = threadIdx.x & 31;
  int lo = 0, hi = p.batch;
  while (hi - lo > 1) {
    const int step = (hi - lo + 31) / 32;
    const int cand = lo + lane * step;
    const bool ok = cand < hi && first_slot(p, cand) <= slot;
    const unsigned hits = __ballot_sync(0xffffffffu, ok);
    lo += (hits != 0u ? 31 - __clz(hits) : 0) * step;
    hi = min(hi, lo + step);
  }
  const std::int64_t begin = clamped_cu(p, lo);
  std::int64_t end = clamped_cu(p, lo + 1);
  if (end < begin) end = begin;
  const int len = static_cast<int>(end - begin < p.max_seqlen ? end - begin : p.max_seqlen);
  const std::int64_t tile = slot - first_slot(p, lo);
  w.row0 = begin;
  w.row_step = 1;
  w.keys = len;
  if (tile < 0 || tile * p.block_m >= len) return false;
  w.row_begin = static_cast<int>(tile) * p.block_m;
  w.row_end = min(len, w.row_begin + p.block_m);
  return true;
}

// ---- shared-memory tiles ------------------------------------------------------------------------------

template <int D>
struct Tile {
  static_assert(D == 32 || D == 64 || D == 128, "INT8 head sizes 32, 64, 128");
  static constexpr int kChunks = D / 16;   // 16-byte chunks per row
  static constexpr int kKSteps = D / 32;   // k32 steps of Q·Kᵀ
  static constexpr int kDGroups = D / 16;  // 16-column output groups (an even and an odd n8 tile)

  // Byte offset of chunk c of row r in a [rows][D] tile. The chunk index is XORed with the row's
  // position inside its group of 128-byte lines so that the 8 rows one ldmatrix 8x8 matrix reads land in
  // 8 different 16-byte bank groups (D = 64: two rows per 128-byte line, rows r and r + 2 would collide).
  static __device__ __forceinline__ int offset(int r, int c) {
    constexpr int rows_per_line = 8 / kChunks;  // 4, 2, 1 for D = 32, 64, 128
    return r * D + ((c ^ ((r / rows_per_line) % kChunks)) << 4);
  }
};

// Head `head`'s Q/K/V (which = 0/1/2) of sequence positions first .. first + rows_pad - 1 into a tile;
// positions at or past `valid` (relative to first) are zero-filled and not read. All threads call it.
template <int D>
__device__ __forceinline__ void load_rows_async(std::uint32_t tile, const Int8Params& p, const CtaWork& w,
                                                int which, int first, int rows_pad, int valid) {
  constexpr int kChunks = Tile<D>::kChunks;
  for (int i = threadIdx.x; i < rows_pad * kChunks; i += blockDim.x) {
    const int r = i / kChunks, c = i % kChunks;
    const bool ok = r < valid;
    const std::int64_t t = w.row0 + static_cast<std::int64_t>(first + (ok ? r : 0)) * w.row_step;
    const std::int8_t* src =
        ok ? p.qkv + qkv_offset(p.layout, t, which, w.head, c * 16, p.num_heads, D, p.num_tokens) : p.qkv;
    cuda::ptx::cp_async_16(tile + Tile<D>::offset(r, c), src, ok);
  }
}

// ---- GEMM pieces on a 16-row warp tile -----------------------------------------------------------------

// Q rows row0 .. row0 + 15 of a Q tile as A fragments, one per k32 step.
template <int D>
__device__ __forceinline__ void load_q_fragments(std::uint32_t (&qa)[D / 32][4], std::uint32_t q_tile, int row0) {
  const int lane = threadIdx.x & 31, mat = lane >> 3;
#pragma unroll
  for (int ks = 0; ks < D / 32; ++ks)
    cuda::ptx::ldmatrix_x4(qa[ks], q_tile + Tile<D>::offset(row0 + ((mat & 1) << 3) + (lane & 7), 2 * ks + (mat >> 1)));
}

// S = Q·Kᵀ for keys key0 .. key0 + 31 of a K tile: acc[j] is n-tile j (keys key0 + 8j ..).
template <int D>
__device__ __forceinline__ void qk_chunk(int (&acc)[4][4], const std::uint32_t (&qa)[D / 32][4],
                                         std::uint32_t k_tile, int key0) {
  const int lane = threadIdx.x & 31, mat = lane >> 3;
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[j][i] = 0;
#pragma unroll
  for (int pair = 0; pair < 2; ++pair) {
#pragma unroll
    for (int ks = 0; ks < D / 32; ++ks) {
      std::uint32_t b[4];  // n-tile 2*pair: b[0], b[1]; n-tile 2*pair + 1: b[2], b[3]
      const int key = key0 + 16 * pair + ((mat >> 1) << 3) + (lane & 7);
      cuda::ptx::ldmatrix_x4(b, k_tile + Tile<D>::offset(key, 2 * ks + (mat & 1)));
      cuda::ptx::mma_m16n8k32_s8(acc[2 * pair], qa[ks], b[0], b[1]);
      cuda::ptx::mma_m16n8k32_s8(acc[2 * pair + 1], qa[ks], b[2], b[3]);
    }
  }
}

// V's B fragments for keys key0 .. key0 + 31 and output columns 16h .. 16h + 15, read from V rows in a
// tile ([keys][D]) with ldmatrix.trans + PRMT (see the top of this file): x, y = even n-tile (b0, b1),
// z, w = odd n-tile.
template <int D>
__device__ __forceinline__ uint4 v_fragment_from_rows(std::uint32_t v_tile, int key0, int h) {
  const int lane = threadIdx.x & 31;
  std::uint32_t r[4];  // keys key0 + 8i + (2q, 2q+1), columns (2g, 2g+1) of group h
  cuda::ptx::ldmatrix_x4_trans(r, v_tile + Tile<D>::offset(key0 + ((lane >> 3) << 3) + (lane & 7), h));
  return make_uint4(__byte_perm(r[0], r[1], 0x6420), __byte_perm(r[2], r[3], 0x6420),
                    __byte_perm(r[0], r[1], 0x7531), __byte_perm(r[2], r[3], 0x7531));
}

// acc2 += P·V for one 32-key chunk; frag(h) gives V's fragments of column group h.
template <int D, class Frag>
__device__ __forceinline__ void pv_chunk(int (&acc2)[D / 16][2][4], const std::uint32_t (&pa)[4], Frag frag) {
#pragma unroll
  for (int h = 0; h < D / 16; ++h) {
    const uint4 f = frag(h);
    cuda::ptx::mma_m16n8k32_s8(acc2[h][0], pa, f.x, f.y);
    cuda::ptx::mma_m16n8k32_s8(acc2[h][1], pa, f.z, f.w);
  }
}

// ---- SPEC 5.0 steps 2-6, per element (bit-compatible with the CPU emulation) --------------------------

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
  return static_cast<std::uint32_t>(__float_as_int(__fmaf_rn(e, k, 12582912.0f)));
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
__device__ __forceinline__ int quad_max(int v) {
  v = max(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return max(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
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

// Thread 0 of every CTA writes its slot; CTA 0 also records how many slots the run wrote.
__device__ __forceinline__ void write_counter_slot(const Int8Params& p, const CtaCounters& c) {
  if (p.slots == nullptr || threadIdx.x != 0) return;
  p.slots[blockIdx.x] = Int8CounterSlot{c.underflow, c.overflow, c.repaired, 0u};
  if (blockIdx.x == 0) *p.slot_count = gridDim.x;
}

// ---- epilogue -------------------------------------------------------------------------------------------

// SPEC 5.0 step 8 for column group h of the thread's two rows, stored as 4 contiguous bytes each
// (columns 16h + 4q ..). Rows past the CTA's end are skipped; `zero` rows are written as zeros.
template <int D>
__device__ __forceinline__ void store_output_group(const Int8Params& p, const CtaWork& w, int h,
                                                   const int (&even)[4], const int (&odd)[4], int row_a,
                                                   bool valid_a, bool zero_a, bool valid_b, bool zero_b) {
  const int q = threadIdx.x & 3;
  auto req = [&](int v) { return static_cast<std::uint32_t>(cuda::int8_requantize(v, p.scale_bmm2)); };
  const int col = 16 * h + 4 * q;
  if (valid_a) {
    const std::int64_t t = w.row0 + static_cast<std::int64_t>(w.row_begin + row_a) * w.row_step;
    const std::uint32_t v = zero_a ? 0u : cuda::ptx::pack_low_bytes(req(even[0]), req(odd[0]), req(even[1]), req(odd[1]));
    *reinterpret_cast<std::uint32_t*>(p.out + out_offset(p.layout, t, w.head, col, p.num_heads, D, p.num_tokens)) = v;
  }
  if (valid_b) {
    const std::int64_t t = w.row0 + static_cast<std::int64_t>(w.row_begin + row_a + 8) * w.row_step;
    const std::uint32_t v = zero_b ? 0u : cuda::ptx::pack_low_bytes(req(even[2]), req(odd[2]), req(even[3]), req(odd[3]));
    *reinterpret_cast<std::uint32_t*>(p.out + out_offset(p.layout, t, w.head, col, p.num_heads, D, p.num_tokens)) = v;
  }
}

// Zero context for every row of the CTA (a sequence with no valid key), 16 bytes per store where the
// layout allows (D is a multiple of 16 and every head's row slice is 16-byte aligned).
template <int D>
__device__ __forceinline__ void store_zero_rows(const Int8Params& p, const CtaWork& w) {
  constexpr int kChunks = D / 16;
  const int rows = w.row_end - w.row_begin;
  for (int i = threadIdx.x; i < rows * kChunks; i += blockDim.x) {
    const int r = i / kChunks, c = i % kChunks;
    const std::int64_t t = w.row0 + static_cast<std::int64_t>(w.row_begin + r) * w.row_step;
    *reinterpret_cast<uint4*>(p.out + out_offset(p.layout, t, w.head, 16 * c, p.num_heads, D, p.num_tokens)) =
        make_uint4(0, 0, 0, 0);
  }
}

// ---- shared by the buffered and streaming schedules --------------------------------------------------

// K/V tile copies with the addressing done once: every layout's address is linear in the sequence
// position (src/core/indexing.hpp), and with a CTA of 32 * warps threads (a multiple of D / 16) each
// thread always copies the same 16-byte column c of rows r0, r0 + rstep, ... of a tile. Per tile: one
// 64-bit multiply-add for the first row, then pointer and offset increments (the loop runs at most
// kTileKeys * D / 16 / 32 times).
template <int D, int kTileKeys>
struct KvTileLoader {
  const std::int8_t* base_k;  // position 0 of the thread's column of K
  const std::int8_t* base_v;  // ... of V (two named pointers: an array indexed at run time goes to local memory)
  std::int64_t step;           // bytes between consecutive sequence positions
  std::int64_t rstep_bytes;    // step * rstep
  int r0, rstep, c;

  __device__ __forceinline__ KvTileLoader(const Int8Params& p, const CtaWork& w) {
    constexpr int kChunks = Tile<D>::kChunks;
    c = threadIdx.x % kChunks;
    r0 = threadIdx.x / kChunks;
    rstep = blockDim.x / kChunks;
    base_k = p.qkv + qkv_offset(p.layout, w.row0, 1, w.head, c * 16, p.num_heads, D, p.num_tokens);
    base_v = p.qkv + qkv_offset(p.layout, w.row0, 2, w.head, c * 16, p.num_heads, D, p.num_tokens);
    step = qkv_offset(p.layout, w.row0 + w.row_step, 1, w.head, c * 16, p.num_heads, D, p.num_tokens) -
           qkv_offset(p.layout, w.row0, 1, w.head, c * 16, p.num_heads, D, p.num_tokens);
    rstep_bytes = step * rstep;
  }
  // Positions first .. first + kTileKeys - 1 of K (v = 0) or V (v = 1) into a tile; positions at or past `keys` are
  // zero-filled and not read.
  __device__ __forceinline__ void issue(std::uint32_t tile, int v, int first, int keys) const {
    const std::int8_t* const b = v ? base_v : base_k;
    const std::int8_t* src = b + static_cast<std::int64_t>(first + r0) * step;
    int left = keys - first - r0;  // valid rows from the thread's current row on
    for (int r = r0; r < kTileKeys; r += rstep, src += rstep_bytes, left -= rstep) {
      const bool ok = left > 0;
      cuda::ptx::cp_async_16(tile + Tile<D>::offset(r, c), ok ? src : b, ok);
    }
  }
};

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

// SPEC 5.0 step 8 in the low byte: sat8(RNE(float(acc2) * scale_bmm2)) with one cvt.rni.sat.s8.f32
// (rounding and saturation in one instruction): the same byte as int8_requantize.
__device__ __forceinline__ std::uint32_t requantize_byte(int acc2, float scale_bmm2) {
  return cuda::ptx::sat_s8_rne(__fmul_rn(__int2float_rn(acc2), scale_bmm2));
}

// The item's context rows row_a and row_a + 8 of the thread (columns 16h + 4q .. 16h + 4q + 3 of every
// group h, store_output_group's layout), with each row's and column's address computed once.
template <int D>
__device__ __forceinline__ void store_output_rows(const Int8Params& p, const CtaWork& w,
                                                  const int (&acc2)[D / 16][2][4], int row_a, bool valid_a,
                                                  bool zero_a, bool valid_b, bool zero_b) {
  using cuda::ptx::pack_low_bytes;
  const int q = threadIdx.x & 3;
  const float s2 = p.scale_bmm2;
  auto row_ptr = [&](int r) {
    const std::int64_t t = w.row0 + static_cast<std::int64_t>(w.row_begin + r) * w.row_step;
    return p.out + out_row_offset(p.layout, t, p.num_heads, D);
  };
  std::int8_t* const out_a = row_ptr(valid_a ? row_a : 0);
  std::int8_t* const out_b = row_ptr(valid_b ? row_a + 8 : 0);
#pragma unroll
  for (int h = 0; h < D / 16; ++h) {
    const std::int64_t col = out_col_offset(p.layout, w.head, 16 * h + 4 * q, D, p.num_tokens);
    const int(&even)[4] = acc2[h][0];
    const int(&odd)[4] = acc2[h][1];
    if (valid_a)
      *reinterpret_cast<std::uint32_t*>(out_a + col) =
          zero_a ? 0u
                 : pack_low_bytes(requantize_byte(even[0], s2), requantize_byte(odd[0], s2),
                                  requantize_byte(even[1], s2), requantize_byte(odd[1], s2));
    if (valid_b)
      *reinterpret_cast<std::uint32_t*>(out_b + col) =
          zero_b ? 0u
                 : pack_low_bytes(requantize_byte(even[2], s2), requantize_byte(odd[2], s2),
                                  requantize_byte(even[3], s2), requantize_byte(odd[3], s2));
  }
}

// The prologue of every INT8 schedule: CTA 0 rewrites the StatsBlock (checking cu_seqlens in
// varlen mode), the CTA's shared counters are cleared, and its work is resolved. Returns false when
// the CTA has nothing left to compute: an unused slot, or a sequence with no valid key, whose rows it
// has zeroed (never counted as a bound failure). Its counter slot is written in both cases.
template <int D>
__device__ __forceinline__ bool begin_int8_cta(const Int8Params& p, CtaCounters& counters, CtaWork& w) {
  if (blockIdx.x == 0)
    cuda::write_stats_block(p.stats, p.mask == MaskMode::varlen ? p.cu_seqlens : nullptr, p.batch,
                            p.max_seqlen, p.num_tokens);
  if (threadIdx.x == 0) counters = CtaCounters{0u, 0u, 0u};
  if (!resolve_cta_work(p, blockIdx.x, w)) {
    write_counter_slot(p, CtaCounters{0u, 0u, 0u});
    return false;
  }
  if (w.keys == 0) {
    store_zero_rows<D>(p, w);
    write_counter_slot(p, CtaCounters{0u, 0u, 0u});
    return false;
  }
  return true;
}

}  // namespace qkv2ctx::fused_int8
