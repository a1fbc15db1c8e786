// The resident INT8 schedule (int8_params.hpp): one CTA = up to block_m query rows of one (sequence,
// head); the whole K and V of the sequence in shared memory; single pass over the keys.
//
//   prologue   cp.async Q rows and K rows (swizzled), V rows through the staging area, then every warp
//              converts part of V into fragment order (ldmatrix.trans + PRMT, int8_tile.cuh), so P·V
//              later reads each B fragment pair with one 16-byte load.
//   row blocks 16 query rows at a time per "row group" of G = key_groups warps. Warp g of the group
//              owns a contiguous run of the sequence's 32-key chunks (at most 4 = 128 keys), keeps its
//              BMM1 accumulators, then exponentials, in registers, and exchanges row maxima (row_max)
//              and row sums with the other G - 1 warps through shared memory (named barrier per group).
//              Every warp then knows the exact row sum (same FP32 order in every warp), quantizes its
//              probabilities and multiplies them with its keys' V; the G int32 partial contexts are
//              added through shared memory (exact) and requantized.
//   guarded    rows whose fixed-bound sum fails guarded_row_needs_repair are recomputed from the
//              resident K with their row maximum (two more Q·Kᵀ sweeps for the group; rare).
//
// 4 warps = kResidentWarps / G row groups working independently after the prologue; two CTAs per SM,
// so one CTA's K/V copy overlaps the other's compute.
#pragma once
#include <climits>
#include <cstdint>

#include "cuda/fused_sm80/int8_cta.cuh"

namespace qkv2ctx::fused_int8 {

// 64 exponentials per thread plus the P·V accumulators and the fragments ptxas keeps in flight need more
// than 128 registers (at 128 the exponentials spill to local memory): 4-warp CTAs, two per SM, each
// thread up to 255 registers.
template <int D>
inline constexpr int kResidentMinBlocks = 2;

template <int D>
__global__ void __launch_bounds__(kResidentThreads, kResidentMinBlocks<D>) int8_resident_kernel(const Int8Params p) {
  using Tl = Tile<D>;
  constexpr int kWarpChunks = kKeysPerWarp / kChunkKeys;  // 4
  constexpr int kDG = Tl::kDGroups;
  extern __shared__ __align__(128) std::uint8_t smem[];
  __shared__ CtaCounters counters;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  CtaWork w;
  if (!begin_int8_cta<D>(p, counters, w)) return;

  const ResidentSmem L = resident_smem(D, p.block_m, p.keys_capacity);
  const std::uint32_t base = smem_u32(smem);
  const std::uint32_t q_base = base + L.q, k_base = base + L.k, vt_base = base + L.vt, ob_s = base + L.obuf;
  const std::uint32_t xmax_s = base + L.xch, xsum_s = xmax_s + kResidentWarps * 16 * 4;  // [warp][16 rows] x 4 B
  using cuda::ptx::ld_shared_b32;
  using cuda::ptx::ld_shared_v4;
  using cuda::ptx::st_shared_b32;
  using cuda::ptx::st_shared_v4;

  const int rows = w.row_end - w.row_begin;
  const int n_chunks = (w.keys + kChunkKeys - 1) / kChunkKeys;
  const int keys_pad = n_chunks * kChunkKeys;

  // ---- prologue: Q, K, and V in fragment order --------------------------------------------------------
  load_rows_async<D>(q_base, p, w, 0, w.row_begin, (rows + 15) & ~15, rows);
  load_rows_async<D>(k_base, p, w, 1, 0, keys_pad, w.keys);
  for (int v0 = 0; v0 < keys_pad; v0 += kVStageKeys) {
    const int nk = min(kVStageKeys, keys_pad - v0);
    load_rows_async<D>(ob_s, p, w, 2, v0, nk, w.keys - v0);
    cuda::ptx::cp_async_commit();
    cuda::ptx::cp_async_wait<0>();
    __syncthreads();
    for (int blk = warp; blk < (nk / kChunkKeys) * kDG; blk += kResidentWarps) {
      const int c = blk / kDG, h = blk % kDG;
      st_shared_v4(vt_base + (((v0 / kChunkKeys + c) * kDG + h) * 32 + lane) * 16,
                   v_fragment_from_rows<D>(ob_s, kChunkKeys * c, h));
    }
    __syncthreads();
  }

  // ---- row groups ---------------------------------------------------------------------------------------
  const int G = p.key_groups, R = kResidentWarps / G;
  const int g = warp % G, r = warp / G;
  const int per = n_chunks / G, extra = n_chunks % G;
  const int my_count = per + (g < extra ? 1 : 0);  // <= 4: keys <= max_seqlen <= 128 G
  const int my_first = g * per + min(g, extra);
  const int last_valid = w.keys - (n_chunks - 1) * kChunkKeys;  // keys in the sequence's last chunk
  auto chunk_valid = [&](int ci) { return my_first + ci == n_chunks - 1 ? last_valid : kChunkKeys; };
  auto group_sync = [&] {
    if (G > 1) cuda::ptx::named_barrier_sync(1 + r, G * 32);
  };
  const int gl = lane >> 2;
  const bool quad_leader = (lane & 3) == 0;
  const float s1 = p.scale_bmm1, ssm = p.scale_softmax;

  // Row maxima of the group: quad reduction, then across the G warps.
  auto group_max = [&](int (&m)[2]) {
    m[0] = quad_max(m[0]);
    m[1] = quad_max(m[1]);
    if (G > 1) {
      if (quad_leader) {
        st_shared_b32(xmax_s + (warp * 16 + gl) * 4, static_cast<std::uint32_t>(m[0]));
        st_shared_b32(xmax_s + (warp * 16 + gl + 8) * 4, static_cast<std::uint32_t>(m[1]));
      }
      group_sync();
      m[0] = m[1] = INT_MIN;
      for (int k = 0; k < G; ++k) {
        m[0] = max(m[0], static_cast<int>(ld_shared_b32(xmax_s + ((r * G + k) * 16 + gl) * 4)));
        m[1] = max(m[1], static_cast<int>(ld_shared_b32(xmax_s + ((r * G + k) * 16 + gl + 8) * 4)));
      }
    }
  };
  // Row sums of the group, added in warp order so every warp gets the same bits.
  auto group_sum = [&](float (&s)[2]) {
    s[0] = quad_sum(s[0]);
    s[1] = quad_sum(s[1]);
    if (G > 1) {
      if (quad_leader) {
        st_shared_b32(xsum_s + (warp * 16 + gl) * 4, __float_as_uint(s[0]));
        st_shared_b32(xsum_s + (warp * 16 + gl + 8) * 4, __float_as_uint(s[1]));
      }
      group_sync();
      s[0] = s[1] = 0.0f;
      for (int k = 0; k < G; ++k) {
        s[0] += __uint_as_float(ld_shared_b32(xsum_s + ((r * G + k) * 16 + gl) * 4));
        s[1] += __uint_as_float(ld_shared_b32(xsum_s + ((r * G + k) * 16 + gl + 8) * 4));
      }
    }
  };
  // Row maxima of this warp's chunks, recomputed from K (guarded repair).
  auto recompute_max = [&](const std::uint32_t (&qa)[D / 32][4], std::uint32_t k_s, int (&m)[2]) {
#pragma unroll
    for (int ci = 0; ci < kWarpChunks; ++ci)
      if (ci < my_count) {
        int a[4][4];
        qk_chunk<D>(a, qa, k_s, (my_first + ci) * kChunkKeys);
        if (chunk_valid(ci) < kChunkKeys) mask_chunk_acc(a, chunk_valid(ci));
        chunk_row_max(a, m);
      }
  };

  for (int rb = r; rb * 16 < rows; rb += R) {
    // Shared-memory bases re-derived per row block (opaque): otherwise the compiler hoists ~40 fragment
    // addresses out of this loop and the 64 exponentials no longer fit in 128 registers.
    const std::uint32_t q_s = cuda::ptx::opaque(q_base), k_s = cuda::ptx::opaque(k_base);
    const std::uint32_t vt_s = cuda::ptx::opaque(vt_base);
    const int row0 = rb * 16;
    const bool valid_a = row0 + gl < rows, valid_b = row0 + gl + 8 < rows;
    std::uint32_t qa[D / 32][4];
    load_q_fragments<D>(qa, q_s, row0);

    // BMM1 of this warp's keys, kept in registers.
    int acc[kWarpChunks][4][4];
#pragma unroll
    for (int ci = 0; ci < kWarpChunks; ++ci)
      if (ci < my_count) qk_chunk<D>(acc[ci], qa, k_s, (my_first + ci) * kChunkKeys);

    float shift[2] = {p.fixed_bound, p.fixed_bound};
    if (p.bound == BoundMode::row_max) {
      int m[2] = {INT_MIN, INT_MIN};
#pragma unroll
      for (int ci = 0; ci < kWarpChunks; ++ci)
        if (ci < my_count) {
          if (chunk_valid(ci) < kChunkKeys) mask_chunk_acc(acc[ci], chunk_valid(ci));
          chunk_row_max(acc[ci], m);
        }
      group_max(m);
      shift[0] = row_max_shift(m[0], s1);
      shift[1] = row_max_shift(m[1], s1);
    }

    float e[kWarpChunks][4][4];
    float sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int ci = 0; ci < kWarpChunks; ++ci)
      if (ci < my_count) {
        chunk_exp(acc[ci], e[ci], shift, s1, chunk_valid(ci));
        chunk_sum(e[ci], sum);
      }
    group_sum(sum);

    bool zero_a = false, zero_b = false;
    if (p.bound != BoundMode::row_max) {
      // One warp per row group counts its rows.
      const RowPairVerdict v = judge_row_pair(p, sum, valid_a, valid_b, quad_leader, g == 0, counters);
      zero_a = v.zero_a;
      zero_b = v.zero_b;
      if (p.bound == BoundMode::guarded &&
          __any_sync(0xffffffffu, v.fail_a || v.fail_b)) {  // same answer in the group's G warps
        load_q_fragments<D>(qa, q_s, row0);  // reloaded: not kept live across the exponentials
        int m[2] = {INT_MIN, INT_MIN};
        recompute_max(qa, k_s, m);
        group_max(m);
        const float rep[2] = {row_max_shift(m[0], s1), row_max_shift(m[1], s1)};
#pragma unroll
        for (int ci = 0; ci < kWarpChunks; ++ci)
          if (ci < my_count) {
            int a[4][4];
            float en[4][4];
            qk_chunk<D>(a, qa, k_s, (my_first + ci) * kChunkKeys);
            chunk_exp(a, en, rep, s1, chunk_valid(ci));
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
              for (int i = 0; i < 4; ++i)
                if (i < 2 ? v.fail_a : v.fail_b) e[ci][j][i] = en[j][i];
          }
        sum[0] = sum[1] = 0.0f;
#pragma unroll
        for (int ci = 0; ci < kWarpChunks; ++ci)
          if (ci < my_count) chunk_sum(e[ci], sum);
        group_sum(sum);
      }
    }

    // Quantized probabilities (all packed first: 16 registers instead of 64 exponentials live beside the
    // P·V accumulators) x V of this warp's keys.
    const float inv_a = int8_math::inverse_row_sum(sum[0]), inv_b = int8_math::inverse_row_sum(sum[1]);
    std::uint32_t pa[kWarpChunks][4];
#pragma unroll
    for (int ci = 0; ci < kWarpChunks; ++ci)
      if (ci < my_count) pack_probabilities(pa[ci], e[ci], inv_a, inv_b, ssm);
    int acc2[kDG][2][4];
    clear_context_acc<D>(acc2);
#pragma unroll
    for (int ci = 0; ci < kWarpChunks; ++ci)
      if (ci < my_count) {
        const int cg = my_first + ci;
        pv_chunk<D>(acc2, pa[ci], [&](int h) { return ld_shared_v4(vt_s + ((cg * kDG + h) * 32 + lane) * 16); });
      }

    if (G == 1) {
      store_output_rows<D>(p, w, acc2, row0 + gl, valid_a, zero_a, valid_b, zero_b);
    } else {
      // Partial contexts of the G warps, added exactly; warp g finishes the column groups h = g mod G.
#pragma unroll
      for (int h = 0; h < kDG; ++h)
#pragma unroll
        for (int eo = 0; eo < 2; ++eo)
          st_shared_v4(ob_s + (((warp * kDG + h) * 2 + eo) * 32 + lane) * 16,
                       make_uint4(acc2[h][eo][0], acc2[h][eo][1], acc2[h][eo][2], acc2[h][eo][3]));
      group_sync();
#pragma unroll
      for (int h = 0; h < kDG; ++h)
        if (h % G == g) {
          int tot[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
          for (int k = 0; k < G; ++k)
#pragma unroll
            for (int eo = 0; eo < 2; ++eo) {
              const uint4 v = ld_shared_v4(ob_s + ((((r * G + k) * kDG + h) * 2 + eo) * 32 + lane) * 16);
              tot[eo][0] += static_cast<int>(v.x);
              tot[eo][1] += static_cast<int>(v.y);
              tot[eo][2] += static_cast<int>(v.z);
              tot[eo][3] += static_cast<int>(v.w);
            }
          store_output_group<D>(p, w, h, tot[0], tot[1], row0 + gl, valid_a, zero_a, valid_b, zero_b);
        }
      group_sync();  // the partials area is rewritten by the next row block
    }
  }

  if (p.slots != nullptr) {
    __syncthreads();
    write_counter_slot(p, counters);
  }
}

}  // namespace qkv2ctx::fused_int8
