// The online-softmax step of one 16-row MMA tile, shared by the sm_80 (mma.sync) and sm_90a (wgmma)
// FP16/BF16 kernels: both hold scores and output accumulators in the m16n8 C-fragment layout
// (s[n-tile][i]: rows g (i = 0, 1) and g + 8 (i = 2, 3), columns 8 n-tile + 2q + (i & 1)), and both
// feed P to P·V in the m16n8k16 A-fragment layout, which that C layout already is pairwise.
#pragma once
#include <cstdint>

#include "cuda/common/ptx.cuh"
#include "cuda/common/quad_reduce.cuh"

namespace qkv2ctx::fused_sm80 {

// Keys at or past `valid_cols` of this tile get -inf (only the last, partial tile). quad_col = 2q.
template <int kNTiles>
__device__ __forceinline__ void mask_tile_keys(float (&s)[kNTiles][4], int valid_cols, int quad_col) {
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (nt * 8 + quad_col + e >= valid_cols) s[nt][e] = s[nt][2 + e] = -INFINITY;
}

// Online softmax, probabilities part: p = 2^(s * scale * log2e - m) in place (FP32), the partial row
// sums rescaled by alpha = 2^(m_old - m); on_row(h, alpha) runs once row h (g for h = 0, g + 8 for
// h = 1) is done: the sm_80 kernel rounds P and rescales O there at once (so the FP32 scores of the row
// die early), the Hopper kernel only once the previous tile's P·V, which reads P and O, has completed.
// Every processed tile has a valid key, so m stays finite; scale_log2 > 0 commutes with max. The row
// sums stay per thread (FP32, before P is rounded) until the epilogue.
template <int kNTiles, class OnRow>
__device__ __forceinline__ void online_softmax_probs(float (&s)[kNTiles][4], float (&row_max)[2], float (&row_sum)[2],
                                                     float scale_log2, OnRow&& on_row) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
    const float m_new = fmaxf(row_max[h], cuda::quad_max(mx) * scale_log2);
    const float alpha = cuda::ptx::exp2_approx(row_max[h] - m_new);  // 0 on the first tile
    row_max[h] = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float pr = cuda::ptx::exp2_approx(fmaf(s[nt][2 * h + e], scale_log2, -m_new));
        s[nt][2 * h + e] = pr;
        sum += pr;
      }
    row_sum[h] = row_sum[h] * alpha + sum;
    on_row(h, alpha);
  }
}

// Row h of P rounded to Elem into pa[k16 step][4], the A-operand layout of P·V.
template <class Elem, int kNTiles>
__device__ __forceinline__ void pack_probs_row(const float (&s)[kNTiles][4], std::uint32_t (&pa)[kNTiles / 2][4],
                                               int h) {
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
    pa[nt / 2][(nt & 1) * 2 + h] = cuda::ptx::pack2_rn<Elem>(s[nt][2 * h], s[nt][2 * h + 1]);
}

// Output row h (rows g for h = 0, g + 8 for h = 1) times alpha.
template <int kDTiles>
__device__ __forceinline__ void rescale_row(float (&o)[kDTiles][4], int h, float alpha) {
#pragma unroll
  for (int dt = 0; dt < kDTiles; ++dt) {
    o[dt][2 * h] *= alpha;
    o[dt][2 * h + 1] *= alpha;
  }
}

// Both parts at once (the sm_80 kernel: its P·V is synchronous).
template <class Elem, int kNTiles, int kDTiles>
__device__ __forceinline__ void online_softmax_tile(float (&s)[kNTiles][4], std::uint32_t (&pa)[kNTiles / 2][4],
                                                    float (&o)[kDTiles][4], float (&row_max)[2], float (&row_sum)[2],
                                                    float scale_log2) {
  online_softmax_probs(s, row_max, row_sum, scale_log2, [&](int h, float alpha) {
    pack_probs_row<Elem>(s, pa, h);
    rescale_row(o, h, alpha);
  });
}

// 1 / (the row's sum over its 4 lanes), 0 for a row without valid keys (l = 0), for rows g (h = 0)
// and g + 8 (h = 1). (Not int8_math::inverse_row_sum, which TensorRT's INT8 math makes 1 for l = 0.)
__device__ __forceinline__ float inverse_quad_row_sum(float partial_sum) {
  const float l = cuda::quad_sum(partial_sum);
  return l > 0.0f ? 1.0f / l : 0.0f;
}

}  // namespace qkv2ctx::fused_sm80
