// Device building blocks of the fused INT8 kernels, part 3 (int8_tile.cuh has part 1): the prologue
// every schedule starts with and the epilogue that requantizes and stores the context.
#pragma once
#include <cstdint>

#include "cuda/fused_sm80/int8_softmax.cuh"

namespace qkv2ctx::fused_int8 {

// ---- epilogue -------------------------------------------------------------------------------------------

// SPEC 5.0 step 8 in the low byte: sat8(RNE(float(acc2) * scale_bmm2)) with one cvt.rni.sat.s8.f32
// (rounding and saturation in one instruction): the same byte as int8_requantize.
__device__ __forceinline__ std::uint32_t requantize_byte(int acc2, float scale_bmm2) {
  return cuda::ptx::sat_s8_rne(__fmul_rn(__int2float_rn(acc2), scale_bmm2));
}

// SPEC 5.0 step 8 for column group h of the thread's two rows, stored as 4 contiguous bytes each
// (columns 16h + 4q ..). Rows past the CTA's end are skipped; `zero` rows are written as zeros.
template <int D>
__device__ __forceinline__ void store_output_group(const Int8Params& p, const CtaWork& w, int h,
                                                   const int (&even)[4], const int (&odd)[4], int row_a,
                                                   bool valid_a, bool zero_a, bool valid_b, bool zero_b) {
  const int q = threadIdx.x & 3;
  auto req = [&](int v) { return requantize_byte(v, p.scale_bmm2); };
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
  const bool valid[2] = {valid_a, valid_b}, zero[2] = {zero_a, zero_b};
  std::int8_t* const out[2] = {row_ptr(valid_a ? row_a : 0), row_ptr(valid_b ? row_a + 8 : 0)};
#pragma unroll
  for (int h = 0; h < D / 16; ++h) {
    const std::int64_t col = out_col_offset(p.layout, w.head, 16 * h + 4 * q, D, p.num_tokens);
    const int(&even)[4] = acc2[h][0];
    const int(&odd)[4] = acc2[h][1];
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // rows row_a (accumulator elements 0, 1), row_a + 8 (2, 3)
      const int i = 2 * half;
      if (valid[half])
        *reinterpret_cast<std::uint32_t*>(out[half] + col) =
            zero[half] ? 0u
                       : pack_low_bytes(requantize_byte(even[i], s2), requantize_byte(odd[i], s2),
                                        requantize_byte(even[i + 1], s2), requantize_byte(odd[i + 1], s2));
    }
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
