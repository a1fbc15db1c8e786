// The streaming INT8 schedule (int8_params.hpp), for sequences too long for the buffered one: one CTA =
// 64 query rows (4 warps x 16) of one (sequence, head); K/V tiles of 64 or 128 keys through a 2-stage cp.async
// ring; passes over the keys:
//   [max]  row_max only: Q·Kᵀ and the integer row maximum (no exponential),
//   sum    Q·Kᵀ, exponentials with the row's shift, row sums,
//   [max, sum again]  guarded only, when some row of the CTA failed the fixed bound: its row maximum,
//          then the sums with the per-row shift (unchanged rows recompute bit-identical sums),
//   out    Q·Kᵀ and exponentials again, probabilities quantized with the known sum, P·V with V's B
//          fragments gathered by ldmatrix.trans + PRMT (int8_tile.cuh).
// Pipeline: at the top of every tile step, wait for the tile issued one step earlier, barrier, then
// issue the next one (this pass's next tile, or the next pass's first) into the other stage, which every
// warp finished reading before the barrier. The sum pass prefetches K and V of tile 0, as both possible
// next passes (out, or guarded's max) start there. Exponentials and probabilities use the buffered
// schedule's contracted forms (int8_tile.cuh); full tiles run without key tests.
#pragma once
#include <climits>
#include <cstdint>
#include <type_traits>

#include "cuda/fused_sm80/int8_cta.cuh"

namespace qkv2ctx::fused_int8 {

template <int D>
inline constexpr int kStreamingMinBlocks = D <= 64 ? 4 : 2;  // 128 registers (D <= 64), 255 (D = 128)

template <int D, int kTileKeys>
__global__ void __launch_bounds__(kStreamThreads, kStreamingMinBlocks<D>) int8_streaming_kernel(const Int8Params p) {
  constexpr int kDG = Tile<D>::kDGroups;
  constexpr int kTileBytes = kTileKeys * D;
  extern __shared__ __align__(128) std::uint8_t smem[];
  __shared__ CtaCounters counters;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  CtaWork w;
  if (!begin_int8_cta<D>(p, counters, w)) return;

  const std::uint32_t q_s = smem_u32(smem);
  const std::uint32_t k_s0 = q_s + kStreamBlockM * D, v_s0 = k_s0 + 2 * kTileBytes;
  const int rows = w.row_end - w.row_begin;
  const int n_tiles = (w.keys + kTileKeys - 1) / kTileKeys;
  const int row0 = warp * 16, gl = lane >> 2;
  const bool active = row0 < rows;  // warps past the CTA's rows only help with loads and barriers
  const bool valid_a = row0 + gl < rows, valid_b = row0 + gl + 8 < rows;
  const bool quad_leader = (lane & 3) == 0;
  const float s1 = p.scale_bmm1, ssm = p.scale_softmax, s1_log2e = __fmul_rn(s1, int8_math::kLog2e);

  const KvTileLoader<D, kTileKeys> loader(p, w);
  auto issue_tile = [&](int stage, int tile, bool with_v) {
    const int first = tile * kTileKeys;
    loader.issue(k_s0 + stage * kTileBytes, 0, first, w.keys);
    if (with_v) loader.issue(v_s0 + stage * kTileBytes, 1, first, w.keys);
  };
  load_rows_async<D>(q_s, p, w, 0, w.row_begin, (rows + 15) & ~15, rows);
  issue_tile(0, 0, false);
  cuda::ptx::cp_async_commit();
  cuda::ptx::cp_async_wait<0>();
  __syncthreads();
  std::uint32_t qa[D / 32][4];
  if (active) load_q_fragments<D>(qa, q_s, row0);

  // One pass over the key tiles. next: what to prefetch for the following pass (-1 nothing, 0 K, 1 K+V).
  int stage = 0;
  auto run_pass = [&](bool with_v, int next, auto&& body) {
    for (int t = 0; t < n_tiles; ++t) {
      cuda::ptx::cp_async_wait<0>();
      __syncthreads();
      if (t + 1 < n_tiles) issue_tile(stage ^ 1, t + 1, with_v);
      else if (next >= 0) issue_tile(stage ^ 1, 0, next == 1);
      cuda::ptx::cp_async_commit();
      if (active) {
        // A full tile's chunks as one straight-line block without key tests; only the last, partial
        // tile masks (its chunks past the keys compute zeros: zero-filled K and V rows, e masked to 0).
        const int tile_keys = w.keys - t * kTileKeys;
        const std::uint32_t k_tile = k_s0 + stage * kTileBytes, v_tile = v_s0 + stage * kTileBytes;
        if (tile_keys >= kTileKeys) {
#pragma unroll
          for (int c = 0; c < kTileKeys / kChunkKeys; ++c)
            body(k_tile, v_tile, c * kChunkKeys, kChunkKeys, std::false_type{});
        } else {
#pragma unroll
          for (int c = 0; c < kTileKeys / kChunkKeys; ++c)
            body(k_tile, v_tile, c * kChunkKeys, chunk_valid_keys(tile_keys, c), std::true_type{});
        }
      }
      stage ^= 1;
    }
  };

  // Integer row maxima over all keys (row_max, and guarded's repair).
  auto max_pass = [&](int (&m)[2], int next) {
    m[0] = m[1] = INT_MIN;
    run_pass(false, next, [&](std::uint32_t k_tile, std::uint32_t, int key0, int valid, auto masked) {
      int a[4][4];
      qk_chunk<D>(a, qa, k_tile, key0);
      if constexpr (decltype(masked)::value) mask_chunk_acc(a, valid);
      chunk_row_max(a, m);
    });
    m[0] = quad_max(m[0]);
    m[1] = quad_max(m[1]);
  };
  auto sum_pass = [&](const float (&offset)[2], float (&sum)[2]) {
    sum[0] = sum[1] = 0.0f;
    run_pass(false, 1, [&](std::uint32_t k_tile, std::uint32_t, int key0, int valid, auto masked) {
      int a[4][4];
      float e[4][4];
      qk_chunk<D>(a, qa, k_tile, key0);
      exponentials<decltype(masked)::value>(a, e, offset, s1_log2e, valid);
      chunk_sum_tree(e, sum);
    });
    sum[0] = quad_sum(sum[0]);
    sum[1] = quad_sum(sum[1]);
  };

  bool zero_a = false, zero_b = false, kept_failed_rows = false;
  float offset[2], sum[2];
  bounded_row_sums(p, max_pass, sum_pass, [&](const float (&s)[2]) {
    const CtaVerdict v = judge_cta(p, s, active && valid_a, active && valid_b, quad_leader, counters);
    zero_a = v.rows.zero_a;
    zero_b = v.rows.zero_b;
    kept_failed_rows = v.kept_failed_rows;
    return v;
  }, offset, sum);

  const float inv_a = int8_math::inverse_row_sum(sum[0]), inv_b = int8_math::inverse_row_sum(sum[1]);
  int acc2[kDG][2][4];
  clear_context_acc<D>(acc2);
  auto out_body = [&](auto exact) {
    return [&](std::uint32_t k_tile, std::uint32_t v_tile, int key0, int valid, auto masked) {
      int a[4][4];
      float e[4][4];
      std::uint32_t pa[4];
      qk_chunk<D>(a, qa, k_tile, key0);
      exponentials<decltype(masked)::value>(a, e, offset, s1_log2e, valid);
      pack_probabilities_fast<decltype(exact)::value>(pa, e, inv_a, inv_b, ssm);
      pv_chunk<D>(acc2, pa, [&](int h) { return v_fragment_from_rows<D>(v_tile, key0, h); });
    };
  };
  if (contracted_quantization_ok(ssm, kept_failed_rows)) run_pass(true, -1, out_body(std::false_type{}));
  else run_pass(true, -1, out_body(std::true_type{}));

  if (active) store_output_rows<D>(p, w, acc2, row0 + gl, valid_a, zero_a, valid_b, zero_b);
  if (p.slots != nullptr) {
    __syncthreads();
    write_counter_slot(p, counters);
  }
}

}  // namespace qkv2ctx::fused_int8
