// The sm_80 fused attention kernel (FP16 / BF16, mma.sync m16n8k16), flash-style:
//   one CTA = one query tile of one (sequence, head); loop over K/V tiles with an online softmax
//   (running row max and sum, exp2 with log2(e) folded into the scale, FP32 accumulators); P stays in
//   registers as the A operand of P·V (the m16n8 accumulator layout of S = Q·Kᵀ is the m16k16
//   A-operand layout of P·V, so no shuffle is needed); K through ldmatrix, V through ldmatrix.trans;
//   cp.async rings for K and V; the output is staged through shared memory for 16-byte coalesced
//   stores in the caller's layout.
//
// Pipeline (2-stage ring per K and V; K0 V0 K1 V1 issued up front; cp.async groups committed in the
// order K0(+Q) V0 K1 V1 K2 V2 ...), per K/V tile j:
//   wait K_j, barrier -> issue V_{j+1}, j >= 1 (its stage was last read by P·V_{j-1}, now finished)
//   S = Q·K_jᵀ, key mask (last tile only), online softmax, P -> registers
//   wait V_j, barrier -> issue K_{j+2} (its stage was last read by Q·K_jᵀ, now finished)
//   O += P·V_j
// Every wait is "all but the 2 newest groups" (empty groups keep the count uniform).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/indexing.hpp"
#include "cuda/common/cu_seqlens_check.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/fused_sm80/fused_params.hpp"
#include "cuda/fused_sm80/fused_schedule.cuh"
#include "cuda/fused_sm80/fused_tile_policy.hpp"

namespace qkv2ctx::fused_sm80 {

// Compile-time shape of one kernel instance, derived from tile_config() (the single source of the
// numbers).
template <class Elem_, int kHeadDim_, TileShape kShape_>
struct FusedTraits {
  using Elem = Elem_;
  static constexpr TileShape kShape = kShape_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr TileConfig kConfig = tile_config(kShape, kHeadDim);
  static constexpr int kWarps = kConfig.warps;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMTiles = kConfig.m_tiles_per_warp;
  static constexpr int kBlockM = kConfig.block_m;
  static constexpr int kBlockN = kConfig.block_n;
  static constexpr int kStages = kConfig.kv_stages;
  static constexpr bool kQInRegs = kConfig.q_in_registers;
  static constexpr int kMinBlocks = kConfig.min_blocks_per_sm;
  static constexpr int kRowBytes = smem_row_elems(kHeadDim) * 2;  // padded shared-memory row
  static constexpr int kChunksPerRow = kHeadDim / 8;              // 16-byte chunks per row
  static constexpr int kDTiles = kHeadDim / 8;                    // n8 tiles of the output
  static constexpr int kKSteps = kHeadDim / 16;                   // k16 steps of Q·Kᵀ
  static constexpr int kNTiles = kBlockN / 8;                     // n8 tiles of the scores
  static_assert(kHeadDim % 16 == 0 && kBlockN % 16 == 0, "m16n8k16 needs multiples of 16");
};

namespace detail {

// cp.async of tiles of rows (kChunksPerRow 16-byte chunks each) into padded shared-memory rows. Each
// thread keeps one chunk column and walks the rows with one 64-bit pointer that already includes its
// own (row r0, chunk) offset, computed once per CTA: per-chunk 64-bit offsets would be hoisted out of
// the K/V loop and cost registers the accumulators need. For D = 80 / 96 the thread count is not a
// multiple of the chunks per row and the last few threads idle.
template <class Tr>
struct TileCopier {
  using Elem = typename Tr::Elem;
  static constexpr int kCpr = Tr::kChunksPerRow;
  static constexpr int kRowsPerPass = Tr::kThreads / kCpr;
  std::int64_t row_stride;  // elements between consecutive rows
  int r0;                   // first row of this thread in a tile
  std::uint32_t dst_off;    // byte offset of (r0, chunk) in a shared-memory tile
  int src_off;              // element offset of chunk within a row

  __device__ __forceinline__ explicit TileCopier(std::int64_t stride) : row_stride(stride) {
    r0 = static_cast<int>(threadIdx.x) / kCpr;
    const int ch = static_cast<int>(threadIdx.x) % kCpr;
    dst_off = r0 * Tr::kRowBytes + ch * 16;
    src_off = ch * 8;
  }

  // This thread's element of row 0 of a tensor whose row 0 is at `base`.
  __device__ __forceinline__ const Elem* thread_src(const Elem* base) const {
    return base + r0 * row_stride + src_off;
  }

  // Rows first_row .. first_row + kRows - 1 into the tile at `smem_tile`, from `src` = thread_src(base).
  // Rows at or past `row_limit` are zero-filled and not read (`safe` is any valid address, passed
  // instead of theirs).
  template <int kRows>
  __device__ __forceinline__ void copy(std::uint32_t smem_tile, const Elem* src, int first_row, int row_limit,
                                       const void* safe) const {
    constexpr int kPasses = (kRows + kRowsPerPass - 1) / kRowsPerPass;
    if (kRowsPerPass * kCpr != Tr::kThreads && r0 >= kRowsPerPass) return;
    src += first_row * row_stride;
    std::uint32_t dst = smem_tile + dst_off;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = r0 + i * kRowsPerPass;
      if (kRows % kRowsPerPass == 0 || r < kRows) {
        const bool valid = first_row + r < row_limit;
        cuda::ptx::cp_async_16(dst, valid ? static_cast<const void*>(src) : safe, valid);
      }
      src += kRowsPerPass * row_stride;
      dst += kRowsPerPass * Tr::kRowBytes;
    }
  }
};

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace detail

// One warp's share of the CTA's query tile: 16 * kMTiles rows, their output accumulators and online
// softmax state, and the per-lane shared-memory addresses of its MMA operands.
template <class Tr>
struct WarpTile {
  using Elem = typename Tr::Elem;
  static constexpr int MT = Tr::kMTiles, kRowBytes = Tr::kRowBytes;
  using Scores = float[MT][Tr::kNTiles][4];

  float o[MT][Tr::kDTiles][4];
  float row_max[MT][2], row_sum[MT][2];  // fragment rows g (h = 0) and g + 8 (h = 1), log2 domain
  std::uint32_t q_frag[Tr::kQInRegs ? MT : 1][Tr::kQInRegs ? Tr::kKSteps : 1][4];
  std::uint32_t q_lane, k_lane, v_lane;  // ldmatrix row addresses (bytes) of this lane

  __device__ __forceinline__ WarpTile(std::uint32_t q_smem, int warp_row0, int lane) {
    // A (Q): lanes 0-15 rows 0-15 at k 0, lanes 16-31 the same rows at k 8.
    q_lane = q_smem + (warp_row0 + (lane & 15)) * kRowBytes + (lane >> 4) * 16;
    // B (K, non-transposed): matrices {keys 0-7, d 0-7}, {keys 0-7, d 8-15}, {keys 8-15, d 0-7}, {8-15, 8-15}.
    k_lane = ((lane & 7) + ((lane >> 4) << 3)) * kRowBytes + ((lane >> 3) & 1) * 16;
    // B (V, transposed): matrices {keys 0-7, d 0-7}, {keys 8-15, d 0-7}, {keys 0-7, d 8-15}, {8-15, 8-15}.
    v_lane = ((lane & 7) + ((lane >> 3) & 1) * 8) * kRowBytes + (lane >> 4) * 16;
#pragma unroll
    for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
      for (int dt = 0; dt < Tr::kDTiles; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mi][dt][e] = 0.0f;
      row_max[mi][0] = row_max[mi][1] = -INFINITY;
      row_sum[mi][0] = row_sum[mi][1] = 0.0f;
    }
  }

  // Q fragments into registers (once, after the Q tile landed), when the configuration keeps them.
  __device__ __forceinline__ void load_q() {
    if constexpr (Tr::kQInRegs) {
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int ks = 0; ks < Tr::kKSteps; ++ks)
          cuda::ptx::ldmatrix_x4(q_frag[mi][ks], q_lane + mi * 16 * kRowBytes + ks * 32);
    }
  }

  // s = Q · Kᵀ (raw dot products, FP32) for the K tile at shared-memory address k_tile.
  __device__ __forceinline__ void scores(Scores& s, std::uint32_t k_tile) const {
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nt = 0; nt < Tr::kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mi][nt][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < Tr::kKSteps; ++ks) {
      std::uint32_t a[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        if constexpr (Tr::kQInRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[mi][e] = q_frag[mi][ks][e];
        } else {
          cuda::ptx::ldmatrix_x4(a[mi], q_lane + mi * 16 * kRowBytes + ks * 32);
        }
      }
#pragma unroll
      for (int np = 0; np < Tr::kNTiles / 2; ++np) {
        std::uint32_t b[4];
        cuda::ptx::ldmatrix_x4(b, k_tile + k_lane + np * 16 * kRowBytes + ks * 32);
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          cuda::ptx::mma_m16n8k16<Elem>(s[mi][2 * np], a[mi], b[0], b[1]);
          cuda::ptx::mma_m16n8k16<Elem>(s[mi][2 * np + 1], a[mi], b[2], b[3]);
        }
      }
    }
  }

  // Keys at or past `valid_cols` of this tile get -inf (only the last, partial tile).
  __device__ __forceinline__ static void mask_keys(Scores& s, int valid_cols, int quad_col) {
#pragma unroll
    for (int nt = 0; nt < Tr::kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (nt * 8 + quad_col + e >= valid_cols) {
#pragma unroll
          for (int mi = 0; mi < MT; ++mi) s[mi][nt][e] = s[mi][nt][2 + e] = -INFINITY;
        }
  }

  // Online softmax: p = 2^(s * scale * log2e - m) in place, O and the partial sums rescaled by
  // 2^(m_old - m). Every processed tile has a valid key, so m stays finite; scale_log2 > 0 commutes
  // with max. The row sums stay per thread (FP32, before P is rounded) until the epilogue.
  __device__ __forceinline__ void softmax(Scores& s, float scale_log2) {
#pragma unroll
    for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < Tr::kNTiles; ++nt) mx = fmaxf(mx, fmaxf(s[mi][nt][2 * h], s[mi][nt][2 * h + 1]));
        const float m_new = fmaxf(row_max[mi][h], detail::quad_max(mx) * scale_log2);
        const float alpha = cuda::ptx::exp2_approx(row_max[mi][h] - m_new);  // 0 on the first tile
        row_max[mi][h] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < Tr::kNTiles; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pr = cuda::ptx::exp2_approx(fmaf(s[mi][nt][2 * h + e], scale_log2, -m_new));
            s[mi][nt][2 * h + e] = pr;
            sum += pr;
          }
        row_sum[mi][h] = row_sum[mi][h] * alpha + sum;
#pragma unroll
        for (int dt = 0; dt < Tr::kDTiles; ++dt) {
          o[mi][dt][2 * h] *= alpha;
          o[mi][dt][2 * h + 1] *= alpha;
        }
      }
    }
  }

  // O += P · V for the V tile at shared-memory address v_tile; P rounded to the element type (as
  // FlashAttention-2), FP32 accumulation.
  __device__ __forceinline__ void accumulate_pv(const Scores& p, std::uint32_t v_tile) {
#pragma unroll
    for (int kk = 0; kk < Tr::kBlockN / 16; ++kk) {
      std::uint32_t pa[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        pa[mi][0] = cuda::ptx::pack2_rn<Elem>(p[mi][2 * kk][0], p[mi][2 * kk][1]);
        pa[mi][1] = cuda::ptx::pack2_rn<Elem>(p[mi][2 * kk][2], p[mi][2 * kk][3]);
        pa[mi][2] = cuda::ptx::pack2_rn<Elem>(p[mi][2 * kk + 1][0], p[mi][2 * kk + 1][1]);
        pa[mi][3] = cuda::ptx::pack2_rn<Elem>(p[mi][2 * kk + 1][2], p[mi][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < Tr::kDTiles / 2; ++dp) {
        std::uint32_t b[4];
        cuda::ptx::ldmatrix_x4_trans(b, v_tile + v_lane + kk * 16 * kRowBytes + dp * 32);
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          cuda::ptx::mma_m16n8k16<Elem>(o[mi][2 * dp], pa[mi], b[0], b[1]);
          cuda::ptx::mma_m16n8k16<Elem>(o[mi][2 * dp + 1], pa[mi], b[2], b[3]);
        }
      }
    }
  }
};

// Shared-memory tiles and global rows of one CTA.
template <class Tr>
struct CtaTiles {
  using Elem = typename Tr::Elem;
  static constexpr int kTileBytes = Tr::kBlockN * Tr::kRowBytes;
  std::uint32_t k_smem, v_smem;  // K/V stage s at + s * kTileBytes
  const Elem* k_src;             // copier.thread_src() of the head's K row 0
  int v_minus_k;                 // elements from a token's K to its V (H for trt, E for hf)
  detail::TileCopier<Tr> copier;
  int keys;
  const void* safe;              // a valid global address for the zero-filled rows

  __device__ __forceinline__ void copy_k(int tile, int stage) const {
    copier.template copy<Tr::kBlockN>(k_smem + stage * kTileBytes, k_src, tile * Tr::kBlockN, keys, safe);
  }
  __device__ __forceinline__ void copy_v(int tile, int stage) const {
    copier.template copy<Tr::kBlockN>(v_smem + stage * kTileBytes, k_src + v_minus_k, tile * Tr::kBlockN, keys,
                                      safe);
  }
};

// The main loop (2 stages): see the file comment. Both stages are filled up front (K0 V0 K1 V1), so a
// two-tile sequence (S <= 128) has every load in flight from the start.
template <class Tr>
__device__ __forceinline__ void mainloop(WarpTile<Tr>& wt, const CtaTiles<Tr>& t, int n_tiles,
                                                float scale_log2, int quad_col) {
  using namespace cuda::ptx;
  constexpr int BN = Tr::kBlockN;
  static_assert(Tr::kStages == 2, "the loop's cp.async group counting assumes two stages");
  t.copy_k(0, 0);
  cp_async_commit();  // with the Q tile
  t.copy_v(0, 0);
  cp_async_commit();
  if (n_tiles > 1) t.copy_k(1, 1);
  cp_async_commit();
  if (n_tiles > 1) t.copy_v(1, 1);
  cp_async_commit();
  for (int j = 0; j < n_tiles; ++j) {
    const int stage = j & 1;
    // Groups after K_j: V_j K_{j+1} V_{j+1} (j = 0) or V_j K_{j+1} (j >= 1). Waiting for all but 2
    // also waits for V_0 at j = 0, which was issued right after K_0.
    cp_async_wait<2>();
    __syncthreads();  // every warp is done with P·V_{j-1}: its V stage is free
    if (j >= 1) {
      if (j + 1 < n_tiles) t.copy_v(j + 1, stage ^ 1);
      cp_async_commit();
    }
    if (j == 0) wt.load_q();
    typename WarpTile<Tr>::Scores s;
    wt.scores(s, t.k_smem + stage * CtaTiles<Tr>::kTileBytes);
    if ((j + 1) * BN > t.keys) WarpTile<Tr>::mask_keys(s, t.keys - j * BN, quad_col);
    wt.softmax(s, scale_log2);
    cp_async_wait<2>();  // V_j landed (after it: K_{j+1} V_{j+1})
    __syncthreads();     // every warp is done with Q·K_jᵀ: its K stage is free
    if (j + 2 < n_tiles) t.copy_k(j + 2, stage);
    cp_async_commit();
    wt.accumulate_pv(s, t.v_smem + stage * CtaTiles<Tr>::kTileBytes);
  }
}

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocks) fused_attention_kernel(const FusedParams p) {
  using Elem = typename Tr::Elem;
  using namespace cuda::ptx;
  constexpr int D = Tr::kHeadDim, BM = Tr::kBlockM, BN = Tr::kBlockN, MT = Tr::kMTiles;
  constexpr int kRowBytes = Tr::kRowBytes;

  // CTA 0 also checks cu_seqlens and rewrites the StatsBlock (no separate kernel or memset).
  if (blockIdx.x == 0)
    cuda::write_stats_block(p.stats, p.mask == MaskMode::varlen ? p.cu_seqlens : nullptr, p.batch,
                            p.max_seqlen, p.num_tokens);
  CtaWork w;
  if (!resolve_cta_work<BM>(p, w)) return;

  extern __shared__ __align__(16) unsigned char smem[];
  // Row pointers and strides, once per CTA (core/indexing.hpp is the addressing contract).
  const int H = p.num_heads;
  const std::int64_t E = static_cast<std::int64_t>(H) * D;
  const auto* qkv = static_cast<const Elem*>(p.qkv);
  const std::uint32_t q_smem = smem_u32(smem);
  const Elem* q_g = qkv + qkv_offset(p.layout, w.row0, 0, w.head, 0, H, D, p.num_tokens);
  const Elem* k_g = qkv + qkv_offset(p.layout, w.row0, 1, w.head, 0, H, D, p.num_tokens);
  const int v_minus_k = static_cast<int>(qkv_offset(p.layout, 0, 2, 0, 0, H, D, p.num_tokens) -
                                         qkv_offset(p.layout, 0, 1, 0, 0, H, D, p.num_tokens));
  const detail::TileCopier<Tr> copier(w.row_step * 3 * E);
  const CtaTiles<Tr> t{q_smem + BM * kRowBytes,
                       q_smem + (BM + p.kv_stages * BN) * kRowBytes,
                       copier.thread_src(k_g),
                       v_minus_k,
                       copier,
                       w.keys,
                       p.qkv};
  Elem* o_g = static_cast<Elem*>(p.out) + out_offset(p.layout, w.row0, w.head, 0, H, D, p.num_tokens);
  const std::int64_t out_stride = w.row_step * E;

  const int q0 = w.m_block * BM;
  const int n_tiles = (w.keys + BN - 1) / BN;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int quad_col = 2 * (lane % 4);   // fragment column pair 2t
  const int warp_row0 = warp * 16 * MT;  // first query row of this warp in the tile
  WarpTile<Tr> wt(q_smem, warp_row0, lane);

  if (n_tiles > 0) {  // a sequence with no valid key gets zeros (no load, no NaN)
    copier.template copy<BM>(q_smem, copier.thread_src(q_g), q0, w.rows, p.qkv);
    mainloop<Tr>(wt, t, n_tiles, p.scale_log2, quad_col);
  }
  cp_async_wait<0>();  // only empty groups can remain; keeps the Q region safe to reuse below

  // ---- epilogue: normalize, round, stage this warp's rows in its own part of the Q region (only this
  // warp ever read those rows), then 16-byte coalesced stores of the valid rows ----
  const int g = lane / 4;
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float l = detail::quad_sum(wt.row_sum[mi][h]);
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // l = 0 only for a sequence without valid keys
      unsigned char* row = smem + (warp_row0 + mi * 16 + g + 8 * h) * kRowBytes;
#pragma unroll
      for (int dt = 0; dt < Tr::kDTiles; ++dt)
        *reinterpret_cast<std::uint32_t*>(row + (dt * 8 + quad_col) * 2) =
            pack2_rn<Elem>(wt.o[mi][dt][2 * h] * inv, wt.o[mi][dt][2 * h + 1] * inv);
    }
  }
  __syncwarp();
  constexpr int kWarpChunks = 16 * MT * Tr::kChunksPerRow;
#pragma unroll
  for (int i = 0; i < kWarpChunks / 32; ++i) {
    const int c = lane + 32 * i;
    const int r = warp_row0 + c / Tr::kChunksPerRow, ch = c % Tr::kChunksPerRow;
    if (q0 + r < w.rows) {
      const uint4 v = *reinterpret_cast<const uint4*>(smem + r * kRowBytes + ch * 16);
      *reinterpret_cast<uint4*>(o_g + (q0 + r) * out_stride + ch * 8) = v;
    }
  }
}

}  // namespace qkv2ctx::fused_sm80
