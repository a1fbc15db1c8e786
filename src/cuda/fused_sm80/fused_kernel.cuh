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
//
// Persistent schedule (D = 64 on sm_90+, persistent_cta): the resident CTAs walk the query tiles
// (ItemIter: snake order; varlen longest-first), and the K/V tiles of consecutive items form one
// stream through the two stages, so the next item's Q (second Q buffer), K0, V0 and K1 load under the
// current item's last K/V tile instead of after its epilogue (see mainloop()). Measured on the H100:
// S = 128 51.5 -> 45 µs, S = 384 87 -> 83 µs, ragged varlen 60 -> 56.5 µs against one tile per CTA.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/indexing.hpp"
#include "cuda/common/cu_seqlens_check.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/quad_reduce.cuh"
#include "cuda/fused_sm80/fused_params.hpp"
#include "cuda/fused_sm80/fused_schedule.cuh"
#include "cuda/fused_sm80/fused_softmax.cuh"
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

}  // namespace detail

// One warp's share of the CTA's query tile: 16 * kMTiles rows, their output accumulators and online
// softmax state, and the per-lane shared-memory addresses of its MMA operands.
template <class Tr>
struct WarpTile {
  using Elem = typename Tr::Elem;
  static constexpr int MT = Tr::kMTiles, kRowBytes = Tr::kRowBytes;
  using Scores = float[MT][Tr::kNTiles][4];
  // P rounded to the element type, already in the A-operand layout of P·V: [mi][k16 step][4 registers].
  using Probs = std::uint32_t[MT][Tr::kBlockN / 16][4];

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
    for (int mi = 0; mi < MT; ++mi) mask_tile_keys(s[mi], valid_cols, quad_col);
  }

  // Online softmax of each 16-row tile (fused_softmax.cuh).
  __device__ __forceinline__ void softmax(Scores& s, Probs& pa, float scale_log2) {
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
      online_softmax_tile<Elem>(s[mi], pa[mi], o[mi], row_max[mi], row_sum[mi], scale_log2);
  }

  // O += P · V for the V tile at shared-memory address v_tile; P as softmax() rounded it to the element
  // type (as FlashAttention-2), FP32 accumulation.
  __device__ __forceinline__ void accumulate_pv(const Probs& pa_all, std::uint32_t v_tile) {
#pragma unroll
    for (int kk = 0; kk < Tr::kBlockN / 16; ++kk) {
      std::uint32_t pa[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int r = 0; r < 4; ++r) pa[mi][r] = pa_all[mi][kk][r];
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

// One work item as the CTA's threads share it (written by thread 0 into shared memory when the item is
// resolved, one item ahead): the head's K row 0 and output row 0, valid keys, query rows, first row.
template <class Tr>
struct QueuedItem {
  const typename Tr::Elem* k_g;
  typename Tr::Elem* o_g;
  int keys, rows, q0;
};

// One item as a thread copies it.
template <class Tr>
struct ItemTiles {
  const typename Tr::Elem* k_src;  // this thread's element of K row 0 (copier.thread_src(k_g))
  int keys, rows, q0, n_tiles;
};

// Run-wide constants of one CTA: the copier and shared-memory addresses. The layout's step from a
// token's Q to its K and from its K to its V is the same (D for trt, E for hf): `qkv_step`. Zero-filled
// rows pass the thread's own row-0 address (always inside the tensor) as the unread source.
template <class Tr>
struct CtaCtx {
  using Elem = typename Tr::Elem;
  static constexpr int kTileBytes = Tr::kBlockN * Tr::kRowBytes;
  static constexpr int kQBytes = Tr::kBlockM * Tr::kRowBytes;
  detail::TileCopier<Tr> copier;
  std::uint32_t q_smem;          // Q buffer b at q_smem + b * kQBytes
  std::uint32_t k_smem, v_smem;  // K/V stage s at + s * kTileBytes
  int qkv_step;

  __device__ __forceinline__ ItemTiles<Tr> item(const QueuedItem<Tr>& w) const {
    return {copier.thread_src(w.k_g), w.keys, w.rows, w.q0, (w.keys + Tr::kBlockN - 1) / Tr::kBlockN};
  }
  __device__ __forceinline__ void copy_q(const ItemTiles<Tr>& t, int buf) const {
    copier.template copy<Tr::kBlockM>(q_smem + buf * kQBytes, t.k_src - qkv_step, t.q0, t.rows, t.k_src);
  }
  __device__ __forceinline__ void copy_k(const ItemTiles<Tr>& t, int tile, int stage) const {
    copier.template copy<Tr::kBlockN>(k_smem + stage * kTileBytes, t.k_src, tile * Tr::kBlockN, t.keys, t.k_src);
  }
  __device__ __forceinline__ void copy_v(const ItemTiles<Tr>& t, int tile, int stage) const {
    copier.template copy<Tr::kBlockN>(v_smem + stage * kTileBytes, t.k_src + qkv_step, tile * Tr::kBlockN, t.keys,
                                      t.k_src);
  }
};

// The main loop of one item (see the file comment). K/V tiles form one stream over the CTA's items:
// tile j of this item sits in stage (stage0 + j) & 1. Groups on entry: [Q, K0, V0], [K1] (issued up
// front for the first item, under the previous item's last tile otherwise). In the last tile the
// slots that would load V_{j+1} and K_{j+2} load the next item's [Q, K0, V0] (into the other Q buffer
// and the stage freed by tile j - 1) and its [K1] (into the stage of tile j, free once every warp is
// past Q·K_jᵀ); the next item's V1 waits for its own first barrier (its stage holds V_j until every
// warp is past P·V_j). Every wait leaves the 2 newest groups in flight (1 at j = 0, before V1 exists).
template <class Tr>
__device__ __forceinline__ void mainloop(WarpTile<Tr>& wt, const CtaCtx<Tr>& c, const ItemTiles<Tr>& t, int stage0,
                                         float scale_log2, int quad_col, bool has_next,
                                         const QueuedItem<Tr>* next, int next_buf) {
  using namespace cuda::ptx;
  constexpr int BN = Tr::kBlockN;
  static_assert(Tr::kStages == 2, "the loop's cp.async group counting assumes two stages");
  const int n = t.n_tiles;
  for (int j = 0; j < n; ++j) {
    const int stage = (stage0 + j) & 1;
    if (j == 0) cp_async_wait<1>();
    else cp_async_wait<2>();
    __syncthreads();  // K_j (and at j = 0 Q, V0) landed; every warp is done with P·V_{j-1}
    if (j + 1 < n) {
      c.copy_v(t, j + 1, stage ^ 1);
    } else if (has_next) {
      const ItemTiles<Tr> nt = c.item(*next);
      c.copy_q(nt, next_buf);
      c.copy_k(nt, 0, stage ^ 1);
      c.copy_v(nt, 0, stage ^ 1);
    }
    cp_async_commit();
    if (j == 0) wt.load_q();
    typename WarpTile<Tr>::Scores s;
    wt.scores(s, c.k_smem + stage * CtaCtx<Tr>::kTileBytes);
    if ((j + 1) * BN > t.keys) WarpTile<Tr>::mask_keys(s, t.keys - j * BN, quad_col);
    typename WarpTile<Tr>::Probs pa;
    wt.softmax(s, pa, scale_log2);
    cp_async_wait<2>();  // V_j landed
    __syncthreads();     // every warp is done with Q·K_jᵀ: its K stage is free
    if (j + 2 < n) {
      c.copy_k(t, j + 2, stage);
    } else if (j + 1 == n && has_next) {
      const ItemTiles<Tr> nt = c.item(*next);
      if (nt.n_tiles > 1) c.copy_k(nt, 1, stage);
    }
    cp_async_commit();
    wt.accumulate_pv(pa, c.v_smem + stage * CtaCtx<Tr>::kTileBytes);
  }
}

template <class Tr>
__device__ __forceinline__ void persistent_cta(const FusedParams& p) {
  using Elem = typename Tr::Elem;
  using namespace cuda::ptx;
  constexpr int D = Tr::kHeadDim, MT = Tr::kMTiles;
  constexpr int kRowBytes = Tr::kRowBytes;

  ItemIter items;
  CtaWork w;
  if (!next_work<Tr>(p, items, w)) return;
  // Items as the threads share them: item n of this CTA in entry n % 3. The next item is written at
  // the start of the current one and read after the current item's first barrier; three entries
  // because thread 0 may start item n + 1 (writing item n + 2) while other warps still read item n's
  // output pointer in their epilogue (compute-sanitizer racecheck found that with two).
  __shared__ QueuedItem<Tr> queued[3];
  const int H = p.num_heads;
  const std::int64_t E = static_cast<std::int64_t>(H) * D;
  // Row pointers (core/indexing.hpp is the addressing contract); row_step is the same for every item.
  auto share = [&](const CtaWork& x, int entry) {
    if (threadIdx.x == 0)
      queued[entry] = {static_cast<const Elem*>(p.qkv) + qkv_offset(p.layout, x.row0, 1, x.head, 0, H, D, p.num_tokens),
                       static_cast<Elem*>(p.out) + out_offset(p.layout, x.row0, x.head, 0, H, D, p.num_tokens),
                       x.keys, x.rows, x.m_block * Tr::kBlockM};
  };
  share(w, 0);

  extern __shared__ __align__(16) unsigned char smem[];
  const std::uint32_t q_smem = smem_u32(smem);
  const std::uint32_t k_smem = q_smem + p.q_buffers * CtaCtx<Tr>::kQBytes;
  const std::int64_t out_stride = w.row_step * E;
  const CtaCtx<Tr> c{detail::TileCopier<Tr>(w.row_step * 3 * E), q_smem, k_smem,
                     k_smem + p.kv_stages * CtaCtx<Tr>::kTileBytes,
                     static_cast<int>(qkv_offset(p.layout, 0, 1, 0, 0, H, D, p.num_tokens) -
                                      qkv_offset(p.layout, 0, 0, 0, 0, H, D, p.num_tokens))};
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int quad_col = 2 * (lane % 4);   // fragment column pair 2t
  const int warp_row0 = warp * 16 * MT;  // first query row of this warp in the tile
  const int g = lane / 4;

  __syncthreads();  // queued[0]
  ItemTiles<Tr> t = c.item(queued[0]);
  c.copy_q(t, 0);
  c.copy_k(t, 0, 0);
  c.copy_v(t, 0, 0);
  cp_async_commit();
  if (t.n_tiles > 1) c.copy_k(t, 1, 1);
  cp_async_commit();
  int item_count = 0, stage0 = 0;  // Q buffer item_count & 1, queue entry item_count % 3
  for (;;) {
    const bool has_next = next_work<Tr>(p, items, w);
    const int buf = item_count & 1, entry = item_count % 3, next_entry = entry == 2 ? 0 : entry + 1;
    if (has_next) share(w, next_entry);
    {
      WarpTile<Tr> wt(q_smem + buf * CtaCtx<Tr>::kQBytes, warp_row0, lane);
      mainloop<Tr>(wt, c, t, stage0, p.scale_log2, quad_col, has_next, &queued[next_entry], buf ^ 1);

      // ---- epilogue: normalize, round, stage this warp's rows in its own part of this item's Q buffer
      // (only this warp ever read those rows; the next item's Q goes to the other buffer), then 16-byte
      // coalesced stores of the valid rows ----
      unsigned char* staging = smem + buf * CtaCtx<Tr>::kQBytes;
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float inv = inverse_quad_row_sum(wt.row_sum[mi][h]);
          unsigned char* row = staging + (warp_row0 + mi * 16 + g + 8 * h) * kRowBytes;
#pragma unroll
          for (int dt = 0; dt < Tr::kDTiles; ++dt)
            *reinterpret_cast<std::uint32_t*>(row + (dt * 8 + quad_col) * 2) =
                pack2_rn<Elem>(wt.o[mi][dt][2 * h] * inv, wt.o[mi][dt][2 * h + 1] * inv);
        }
      }
    }
    __syncwarp();
    Elem* o_g = queued[entry].o_g;
    const unsigned char* staging = smem + buf * CtaCtx<Tr>::kQBytes;
    constexpr int kWarpChunks = 16 * MT * Tr::kChunksPerRow;
#pragma unroll
    for (int i = 0; i < kWarpChunks / 32; ++i) {
      const int cidx = lane + 32 * i;
      const int r = warp_row0 + cidx / Tr::kChunksPerRow, ch = cidx % Tr::kChunksPerRow;
      if (t.q0 + r < t.rows) {
        const uint4 v = *reinterpret_cast<const uint4*>(staging + r * kRowBytes + ch * 16);
        *reinterpret_cast<uint4*>(o_g + (t.q0 + r) * out_stride + ch * 8) = v;
      }
    }
    if (!has_next) break;
    stage0 = (stage0 + t.n_tiles) & 1;
    ++item_count;
    t = c.item(queued[next_entry]);
  }
  cp_async_wait<0>();
}

// ---- One query tile per CTA (configurations or architectures without the persistent schedule) ----

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
__device__ __forceinline__ void mainloop_single(WarpTile<Tr>& wt, const CtaTiles<Tr>& t, int n_tiles,
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
    typename WarpTile<Tr>::Probs pa;
    wt.softmax(s, pa, scale_log2);
    cp_async_wait<2>();  // V_j landed (after it: K_{j+1} V_{j+1})
    __syncthreads();     // every warp is done with Q·K_jᵀ: its K stage is free
    if (j + 2 < n_tiles) t.copy_k(j + 2, stage);
    cp_async_commit();
    wt.accumulate_pv(pa, t.v_smem + stage * CtaTiles<Tr>::kTileBytes);
  }
}

template <class Tr>
__device__ __forceinline__ void single_item_cta(const FusedParams& p) {
  using Elem = typename Tr::Elem;
  using namespace cuda::ptx;
  constexpr int D = Tr::kHeadDim, BM = Tr::kBlockM, BN = Tr::kBlockN, MT = Tr::kMTiles;
  constexpr int kRowBytes = Tr::kRowBytes;

  CtaWork w;
  if (!resolve_cta_work<BM>(p, blockIdx.x, w)) return;

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
  const int q0 = w.m_block * BM;
  const int n_tiles = (w.keys + BN - 1) / BN;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int quad_col = 2 * (lane % 4);   // fragment column pair 2t
  const int warp_row0 = warp * 16 * MT;  // first query row of this warp in the tile
  WarpTile<Tr> wt(q_smem, warp_row0, lane);

  if (n_tiles > 0) {  // a sequence with no valid key gets zeros (no load, no NaN)
    copier.template copy<BM>(q_smem, copier.thread_src(q_g), q0, w.rows, p.qkv);
    mainloop_single<Tr>(wt, t, n_tiles, p.scale_log2, quad_col);
  }
  cp_async_wait<0>();  // only empty groups can remain; keeps the Q region safe to reuse below

  // Output rows, computed only now: live across the K/V loop they cost registers the accumulators need.
  Elem* o_g = static_cast<Elem*>(p.out) + out_offset(p.layout, w.row0, w.head, 0, H, D, p.num_tokens);
  const std::int64_t out_stride = w.row_step * E;

  // ---- epilogue: normalize, round, stage this warp's rows in its own part of the Q region (only this
  // warp ever read those rows), then 16-byte coalesced stores of the valid rows ----
  const int g = lane / 4;
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float inv = inverse_quad_row_sum(wt.row_sum[mi][h]);  // 0 only for a sequence without valid keys
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

// The persistent schedule is compiled for sm_90 and newer only (the H100 it was tuned on): on sm_80
// the persistent instances spill (ptxas -v), so the host never asks for it there
// (kPersistentMinSm, fused_backend.cpp) and those builds keep one query tile per CTA.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
inline constexpr bool kPersistentArch = true;
#else
inline constexpr bool kPersistentArch = false;
#endif

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocks) fused_attention_kernel(const FusedParams p) {
  // CTA 0 also checks cu_seqlens and rewrites the StatsBlock (no separate kernel or memset).
  if (blockIdx.x == 0)
    cuda::write_stats_block(p.stats, p.mask == MaskMode::varlen ? p.cu_seqlens : nullptr, p.batch,
                            p.max_seqlen, p.num_tokens);
  // A launch that is not persistent (grid = items) runs the same code with one item per CTA.
  if constexpr (Tr::kConfig.persistent && kPersistentArch) {
    persistent_cta<Tr>(p);
  } else {
    single_item_cta<Tr>(p);
  }
}

}  // namespace qkv2ctx::fused_sm80
