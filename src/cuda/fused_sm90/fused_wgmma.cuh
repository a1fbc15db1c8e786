// The sm_90a fused attention kernel (FP16 / BF16, wgmma), TileShape::wg128: the same algorithm, work
// items and parameters as the sm_80 kernel (fused_sm80/fused_kernel.cuh), with both GEMMs on the
// Hopper warpgroup MMA instead of per-warp mma.sync:
//   one CTA = one 128-row query tile of one (sequence, head), 2 warpgroups x 64 rows;
//   S = Q·K_jᵀ: D/16 wgmma m64nBNk16 (BN = 64 keys at D = 64, 128 at D = 128), Q and K read by the
//     tensor core from shared memory (no ldmatrix, no operand registers);
//   online softmax on the accumulators (fused_softmax.cuh: the wgmma accumulator layout is the
//     mma.sync one), P rounded to the element type in registers;
//   O += P·V_j: BN/16 wgmma m64nDk16 with P from registers and V read from shared memory as stored
//     ([keys][D], MN-major: the tensor core transposes it).
// Tiles sit in shared memory in the swizzled layout the matrix descriptors address (128-byte swizzle;
// 64-byte at D = 32; one layout serves Q and K, K-major, and V, MN-major; SwizzledTileCopier). Measured first with the
// no-swizzle core-matrix layout, whose copies read 8 rows x 16 bytes per 8 lanes: twice the L2 requests
// of row-contiguous copies, L2 at 79% of its peak throughput (ncu), BF16 D = 128 S = 2048 1.33 ms.
//
// Pipeline (2 stages per K and V, all 256 threads copy with cp.async, one CTA barrier per K/V tile):
// Q and K_0 are issued up front; at the top of tile j (K_j and V_{j-1} landed, fenced to the async
// proxy, barrier) K_{j+1} and V_j are issued into the stages K_{j-1} and V_{j-2} left; then S_j is
// issued, then P·V_{j-1}, and the softmax of tile j runs while P·V_{j-1} is in flight (waiting only
// for S_j); O is rescaled and P_j rounded into the A registers once P·V_{j-1} has completed. P·V_{n-1}
// follows the loop. The loop is unrolled by two so that every stage index is a compile-time constant.
// D = 64 holds 2 CTAs per SM (16 warps) and runs persistent (wgmma_cta: the next item's Q and K_0 are
// issued after the current item's last K/V barrier); D = 128 holds one CTA per SM, one item each.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "core/indexing.hpp"
#include "cuda/common/cu_seqlens_check.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/ptx_wgmma.cuh"
#include "cuda/fused_sm80/fused_params.hpp"
#include "cuda/fused_sm80/fused_schedule.cuh"
#include "cuda/fused_sm80/fused_softmax.cuh"
#include "cuda/fused_sm80/fused_tile_policy.hpp"
#include "cuda/fused_sm90/swizzle.cuh"

namespace qkv2ctx::fused_sm90 {

using fused_sm80::FusedParams;
using fused_sm80::TileConfig;
using fused_sm80::TileShape;

template <class Elem_, int kHeadDim_>
struct WgmmaTraits {
  using Elem = Elem_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr TileConfig kConfig = fused_sm80::tile_config(TileShape::wg128, kHeadDim);
  static constexpr int kThreads = kConfig.warps * 32;
  static constexpr int kBlockM = kConfig.block_m;
  static constexpr int kBlockN = kConfig.block_n;
  static constexpr int kMinBlocks = kConfig.min_blocks_per_sm;
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks per row
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKvBytes = kBlockN * kHeadDim * 2;
  static constexpr int kDTiles = kHeadDim / 8;  // n8 tiles of the output
  static constexpr int kNTiles = kBlockN / 8;   // n8 tiles of the scores
  // Swizzle rows: 128 bytes (64 elements) for D >= 64, 64 bytes for D = 32 (SWIZZLE_64B).
  static constexpr int kRowBytes = kHeadDim >= 64 ? 128 : 64;
  static_assert(kThreads == 256 && kBlockM == 128, "2 warpgroups x 64 query rows");
  static_assert(kHeadDim % (kRowBytes / 2) == 0, "whole swizzle rows");
};

// Copies tiles of rows into the swizzled layout. Thread t copies chunk (row t / CH + pass * kRowsPerPass,
// column t % CH): a warp reads whole rows (coalesced, full 128-byte lines) and the 8 chunks of a row
// land in 8 different bank groups (the XOR); a thread's row % 8 never changes between passes.
template <class Tr>
struct SwizzledTileCopier {
  using Elem = typename Tr::Elem;
  static constexpr int kRowsPerPass = Tr::kThreads / Tr::kChunksPerRow;
  static_assert(kRowsPerPass % 8 == 0, "passes of whole 8-row swizzle atoms");
  std::int64_t row_stride;  // elements between consecutive rows
  int r0;                   // this thread's row in the first pass
  int chunk;                // its 16-byte chunk of the row

  __device__ __forceinline__ explicit SwizzledTileCopier(std::int64_t stride) : row_stride(stride) {
    r0 = static_cast<int>(threadIdx.x) / Tr::kChunksPerRow;
    chunk = static_cast<int>(threadIdx.x) % Tr::kChunksPerRow;
  }

  // This thread's source element of row 0 of the tensor whose row 0 is `base`.
  __device__ __forceinline__ const Elem* thread_src(const Elem* base) const {
    return base + r0 * row_stride + chunk * 8;
  }

  // Rows first_row .. first_row + kRows - 1 into the kRows-row tile at `smem_tile`, from `src` =
  // thread_src(base); rows at or past `row_limit` are zero-filled and not read (`safe`, any valid
  // address, is passed).
  template <int kRows>
  __device__ __forceinline__ void copy(std::uint32_t smem_tile, const Elem* src, int first_row, int row_limit,
                                       const void* safe) const {
    static_assert(kRows % kRowsPerPass == 0, "whole passes");
    const int rows_left = row_limit - first_row - r0;  // this thread's rows < rows_left are valid
    src += first_row * row_stride;
    const std::uint32_t dst = smem_tile + swizzled_offset<kRows, Tr::kRowBytes>(r0, chunk);
#pragma unroll
    for (int i = 0; i < kRows / kRowsPerPass; ++i) {
      const bool valid = i * kRowsPerPass < rows_left;
      cuda::ptx::cp_async_16(dst + i * kRowsPerPass * Tr::kRowBytes,
                             valid ? static_cast<const void*>(src + i * kRowsPerPass * row_stride) : safe, valid);
    }
  }
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)

// The loads an item starts with: its Q tile into `q_tile` and K_0 into K stage 0 (committed by the
// caller). Rows past the sequence are zero-filled.
template <class Tr>
__device__ __forceinline__ void issue_item_head(const FusedParams& p, const fused_sm80::CtaWork& w,
                                                std::uint32_t q_tile, std::uint32_t k_stage0) {
  using Elem = typename Tr::Elem;
  constexpr int D = Tr::kHeadDim;
  const int H = p.num_heads;
  const auto* qkv = static_cast<const Elem*>(p.qkv);
  const Elem* q_g = qkv + qkv_offset(p.layout, w.row0, 0, w.head, 0, H, D, p.num_tokens);
  const Elem* k_g = qkv + qkv_offset(p.layout, w.row0, 1, w.head, 0, H, D, p.num_tokens);
  const SwizzledTileCopier<Tr> copier(w.row_step * 3 * static_cast<std::int64_t>(H) * D);
  copier.template copy<Tr::kBlockM>(q_tile, copier.thread_src(q_g), w.m_block * Tr::kBlockM, w.rows, q_g);
  copier.template copy<Tr::kBlockN>(k_stage0, copier.thread_src(k_g), 0, w.keys, k_g);
}

// One work item (keys > 0) whose Q tile (in Q buffer q_buf) and K_0 are already issued: the K/V tiles,
// then `after_last_barrier()` once every warpgroup is done with every K tile and all but the last V
// tile (the persistent schedule issues the next item's head there, under this item's last P·V and
// epilogue), then P·V_{n-1} and the epilogue.
template <class Tr, class AfterLastBarrier>
__device__ __forceinline__ void attend_item(const FusedParams& p, const fused_sm80::CtaWork& w, unsigned char* smem,
                                            int q_buf, AfterLastBarrier&& after_last_barrier) {
  using Elem = typename Tr::Elem;
  using namespace cuda::ptx;
  constexpr int D = Tr::kHeadDim, BM = Tr::kBlockM, BN = Tr::kBlockN, CH = Tr::kChunksPerRow;

  const int H = p.num_heads;
  const std::int64_t E = static_cast<std::int64_t>(H) * D;
  const auto* qkv = static_cast<const Elem*>(p.qkv);
  const Elem* k_g = qkv + qkv_offset(p.layout, w.row0, 1, w.head, 0, H, D, p.num_tokens);
  const Elem* v_g = qkv + qkv_offset(p.layout, w.row0, 2, w.head, 0, H, D, p.num_tokens);
  unsigned char* const q_tile = smem + q_buf * Tr::kQBytes;
  const std::uint32_t q_smem = smem_u32(q_tile);
  const std::uint32_t k_smem = smem_u32(smem) + p.q_buffers * Tr::kQBytes;  // stage s at + s * kKvBytes
  const std::uint32_t v_smem = k_smem + p.kv_stages * Tr::kKvBytes;       // stage s at + s * kKvBytes
  const SwizzledTileCopier<Tr> copier(w.row_step * 3 * E);
  const Elem* k_src = copier.thread_src(k_g);
  const Elem* v_src = copier.thread_src(v_g);
  const int q0 = w.m_block * BM;
  const int n_tiles = (w.keys + BN - 1) / BN;

  const int warpgroup = static_cast<int>(threadIdx.x) / 128;
  const int warp = (static_cast<int>(threadIdx.x) / 32) % 4;  // within the warpgroup
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int quad_col = 2 * (lane % 4);
  // This warpgroup's 64 query rows of the Q tile (rows 64 wg .., in every column block).
  const std::uint32_t q_wg = q_smem + warpgroup * 64 * Tr::kRowBytes;

  float o[Tr::kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < Tr::kDTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dt][e] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  std::uint32_t pa[Tr::kNTiles / 2][4];  // P of the previous tile, read by its P·V until that completes

  // One shared word per thread that nothing reads: ptxas cannot move the next tile's barrier above a
  // store, nor the store above the softmax whose value it holds (see the main loop).
  // Only D <= 64 pins (see there); the one word at D = 128 keeps the declaration valid.
  constexpr int kPinWords = D <= 64 ? Tr::kThreads : 1;
  __shared__ float pin_sink[kPinWords];
  auto pin_before_barrier = [&](float v) {
    asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(smem_u32(&pin_sink[threadIdx.x % kPinWords])), "f"(v) : "memory");
  };
  // Waits for this thread's copies, makes them visible to the async proxy, and joins the CTA.
  auto tiles_landed = [] {
    cp_async_wait<0>();
    fence_proxy_async_shared();
    __syncthreads();
  };
  // Matrix descriptors of the stage-0 tiles, built once; a step within a tile or to stage 1 adds its
  // byte offset / 16 to the start-address field (no carry: the addresses stay below 2^18).
  constexpr int RB = Tr::kRowBytes;
  const std::uint64_t q_desc = swizzled_desc<RB>(q_wg, 16);
  const std::uint64_t k_desc = swizzled_desc<RB>(k_smem, 16);
  const std::uint64_t v_desc = swizzled_desc<RB>(v_smem, BN * RB);  // LBO: the next column block
  // k16 step ks of Q·Kᵀ (32 bytes of each row): column block ks * 32 / RB, then within its rows.
  auto k_step = [](int ks, int rows) { return ((ks * 32 / RB) * rows * RB + (ks * 32 % RB)) >> 4; };
  auto issue_pv = [&](auto stage) {  // P·V of the tile in V stage `stage` (an integral_constant)
    const std::uint64_t v_tile = v_desc + decltype(stage)::value * (Tr::kKvBytes >> 4);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs_trans_b<Elem, D>(o, pa[kk], v_tile + kk * (16 * RB >> 4));
    wgmma_commit();
    wgmma_fence_operands(o);
  };

  // Top of tile j: K_j and V_{j-1} landed; every warpgroup has finished S_{j-1} and P·V_{j-2}, so the
  // stages of K_{j-1} and V_{j-2} are free for K_{j+1} and V_j, which are issued now.
  auto begin_tile = [&](int j, auto parity) {  // parity: j & 1 as an integral_constant
    constexpr int kStage = decltype(parity)::value;
    tiles_landed();
    if (j + 1 < n_tiles)
      copier.template copy<BN>(k_smem + (kStage ^ 1) * Tr::kKvBytes, k_src, (j + 1) * BN, w.keys, k_g);
    copier.template copy<BN>(v_smem + kStage * Tr::kKvBytes, v_src, j * BN, w.keys, v_g);
    cp_async_commit();
  };
  auto issue_scores = [&](float (&s)[Tr::kNTiles][4], auto stage) {
    wgmma_fence();
    const std::uint64_t k_tile = k_desc + decltype(stage)::value * (Tr::kKvBytes >> 4);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) wgmma_ss<Elem, BN>(s, q_desc + k_step(ks, BM), k_tile + k_step(ks, BN), ks > 0);
    wgmma_commit();
  };
  auto mask_last = [&](float (&s)[Tr::kNTiles][4], int j) {
    if ((j + 1) * BN > w.keys) fused_sm80::mask_tile_keys(s, w.keys - j * BN, quad_col);
  };

  {  // tile 0 (peeled: the loop below has no branch around its wgmma groups)
    begin_tile(0, std::integral_constant<int, 0>{});
    float s[Tr::kNTiles][4];
    issue_scores(s, std::integral_constant<int, 0>{});
    wgmma_wait<0>();
    wgmma_fence_operands(s);
    mask_last(s, 0);
    fused_sm80::online_softmax_probs(s, row_max, row_sum, p.scale_log2, [&](int h, float) {
      fused_sm80::pack_probs_row<Elem>(s, pa, h);  // O is still zero: nothing to rescale
    });
  }
  // Tiles 1 .. n - 1, unrolled by two so that every stage index (j & 1) is a compile-time constant: the
  // descriptors and copy offsets of both stages are fixed instead of rotated through uniform registers
  // every tile (seen in the SASS of the run-time version; its cost was not measured apart from the
  // row-sum pin below, which fixed the order of the softmax and the wait).
  auto steady_tile = [&](int j, auto parity) {
    constexpr int kStage = decltype(parity)::value;  // j & 1
    begin_tile(j, parity);
    // S_j = Q·K_jᵀ, then P·V_{j-1}: the softmax of tile j overlaps that GEMM.
    float s[Tr::kNTiles][4];
    issue_scores(s, parity);
    issue_pv(std::integral_constant<int, kStage ^ 1>{});
    wgmma_wait<1>();  // S_j done; P·V_{j-1} may still run
    wgmma_fence_operands(s);
    mask_last(s, j);
    float alpha[2];
    fused_sm80::online_softmax_probs(s, row_max, row_sum, p.scale_log2, [&](int h, float a) { alpha[h] = a; });
    // The operand fences order the softmax before the wait (else the compiler sinks it below, and
    // nothing overlaps P·V_{j-1}) and the rounding into pa after it: the tensor core reads pa until
    // P·V_{j-1} completes, which the compiler does not know. After the wait O holds tiles < j at the
    // old maximum. At D = 64 a store of the row sums pins the softmax on the other side: ptxas would
    // hoist the next tile's cp.async wait, proxy fence and barrier above it (no memory operation in
    // between), and with them a wait for P·V_{j-1}, which the proxy fence needs. Measured on the H100
    // (same run, µs): H = 16 S = 384 B = 32 70.6 vs 72.6, H = 12 S = 512 83.2 vs 86.4; at D = 128 it
    // costs registers (8 bytes of spills at 255) and ran 617 vs 608 (BF16, S = 2048), so not there.
    wgmma_fence_operands(s);
    if constexpr (D <= 64) pin_before_barrier(row_sum[0] + row_sum[1]);
    wgmma_wait<0>();
    wgmma_fence_operands(o);
    wgmma_fence_operands(s);
    fused_sm80::rescale_row(o, 0, alpha[0]);
    fused_sm80::rescale_row(o, 1, alpha[1]);
    fused_sm80::pack_probs_row<Elem>(s, pa, 0);
    fused_sm80::pack_probs_row<Elem>(s, pa, 1);
  };
  using Odd = std::integral_constant<int, 1>;
  using Even = std::integral_constant<int, 0>;
  int j = 1;
  for (; j + 1 < n_tiles; j += 2) {
    steady_tile(j, Odd{});
    steady_tile(j + 1, Even{});
  }
  if (j < n_tiles) steady_tile(j, Odd{});
  tiles_landed();  // V_{n-1}; every warpgroup is done with K_{n-1}
  after_last_barrier();
  wgmma_fence_operands(o);
  wgmma_fence();
  if (n_tiles & 1) issue_pv(std::integral_constant<int, 0>{});
  else issue_pv(std::integral_constant<int, 1>{});
  wgmma_wait<0>();
  wgmma_fence_operands(o);

  // ---- epilogue: normalize, round, stage this warp's 16 rows in its own rows of the Q tile (read
  // only by this warpgroup's wgmmas, all complete; same swizzle: conflict-free both ways), then 16-byte
  // row-contiguous stores of the valid rows ----
  fence_proxy_async_shared();
  const int g = lane / 4;
  const int tile_row0 = warpgroup * 64 + warp * 16;  // this warp's first row in the tile
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float inv = fused_sm80::inverse_quad_row_sum(row_sum[h]);
    const int r = tile_row0 + g + 8 * h;
#pragma unroll
    for (int dt = 0; dt < Tr::kDTiles; ++dt)
      *reinterpret_cast<std::uint32_t*>(q_tile + swizzled_offset<BM, Tr::kRowBytes>(r, dt) + quad_col * 2) =
          pack2_rn<Elem>(o[dt][2 * h] * inv, o[dt][2 * h + 1] * inv);
  }
  __syncwarp();
  Elem* o_g = static_cast<Elem*>(p.out) + out_offset(p.layout, w.row0, w.head, 0, H, D, p.num_tokens);
  const std::int64_t out_stride = w.row_step * E;
#pragma unroll
  for (int i = lane; i < 16 * CH; i += 32) {
    const int r = tile_row0 + i / CH, c = i % CH;
    if (q0 + r < w.rows)
      *reinterpret_cast<uint4*>(o_g + (q0 + r) * out_stride + c * 8) =
          *reinterpret_cast<const uint4*>(q_tile + swizzled_offset<BM, Tr::kRowBytes>(r, c));
  }
}

// The CTA: items in ItemIter order (one per CTA when the grid has one CTA per item; the resident CTAs
// of a persistent launch walk them all). The next item's Q and K_0 load into the other Q buffer and K
// stage 0 under the current item's last P·V and epilogue, so only a CTA's first item waits for them.
template <class Tr>
__device__ __forceinline__ void wgmma_cta(const FusedParams& p) {
  fused_sm80::ItemIter items;
  fused_sm80::CtaWork w;
  if (!fused_sm80::next_work<Tr>(p, items, w)) return;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Swizzle atoms need 1024-byte alignment; the launch adds 1 KiB for it (kSmemAlignSlack).
  unsigned char* const smem = smem_raw + ((1024 - (cuda::ptx::smem_u32(smem_raw) & 1023)) & 1023);
  const std::uint32_t k_stage0 = cuda::ptx::smem_u32(smem) + p.q_buffers * Tr::kQBytes;
  issue_item_head<Tr>(p, w, cuda::ptx::smem_u32(smem), k_stage0);
  cuda::ptx::cp_async_commit();
  for (int buf = 0;; buf ^= 1) {
    fused_sm80::CtaWork next;
    bool has_next = false;
    attend_item<Tr>(p, w, smem, buf, [&] {
      has_next = fused_sm80::next_work<Tr>(p, items, next);
      if (has_next) {
        issue_item_head<Tr>(p, next, cuda::ptx::smem_u32(smem + (buf ^ 1) * Tr::kQBytes), k_stage0);
        cuda::ptx::cp_async_commit();
      }
    });
    if (!has_next) break;
    w = next;
  }
  cuda::ptx::cp_async_wait<0>();
}

#endif  // sm_90a

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocks) fused_wgmma_kernel(const FusedParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  // CTA 0 also checks cu_seqlens and rewrites the StatsBlock (no separate kernel or memset).
  if (blockIdx.x == 0)
    cuda::write_stats_block(p.stats, p.mask == MaskMode::varlen ? p.cu_seqlens : nullptr, p.batch, p.max_seqlen,
                            p.num_tokens);
  wgmma_cta<Tr>(p);
#else
  __trap();  // the planner launches wg128 on sm_90 only (tile_runs_on)
#endif
}

}  // namespace qkv2ctx::fused_sm90
