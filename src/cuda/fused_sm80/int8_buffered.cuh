// The buffered INT8 schedule (int8_params.hpp): one CTA = up to 4 warps x 16 query rows of one (sequence,
// head); K and V stream through one ring of 64- or 128-key tiles (buffered_stages deep); every warp keeps the FP32 exponentials
// of its 16 rows in its own region of shared memory (16 rows x S keys x 4 B), so each exponential is
// computed once and probabilities are still quantized after normalization (SPEC 5.0 step 6):
//   sum    Q·Kᵀ, exponentials with the fixed bound, row sums; the exponentials go to the warp's buffer.
//          row_max: Q·Kᵀ and the integer row maxima, the accumulators go to the buffer; then each thread
//          turns its accumulators into exponentials in place and sums them (no second pass over K),
//   [max, sum again]  guarded only, when some row of the CTA failed the fixed bound (rare),
//   out    V tiles only: exponentials back from the buffer, probabilities quantized with the known sum,
//          P·V with V's B fragments gathered by ldmatrix.trans + PRMT (int8_tile.cuh).
// The buffer is thread-private in effect: a thread reads back exactly the elements it wrote (same
// fragment positions), so it needs no barrier. Layout per warp: [chunk][n-tile j][lane] x float4 (the
// thread's e[j][0..3]), so each 16-byte access of a warp covers 512 contiguous bytes (no bank conflict).
// Ring: the CTA's passes form one tile sequence; tile g is issued kStages - 1 steps before its
// use, across pass boundaries (the V pass's first tiles land while the sum pass computes). At the top of
// every step: wait for tile g, barrier, issue tile g + kStages - 1 into the stage that tile g - 1
// left. A stage holds whichever matrix its tile is from.
#pragma once
#include <climits>
#include <cstdint>
#include <type_traits>

#include "cuda/fused_sm80/int8_cta.cuh"

namespace qkv2ctx::fused_int8 {

// 64-key tiles (short sequences, where shared memory allows 4 CTAs per SM): <= 128 registers for D <= 64.
// 128-key tiles (long sequences: shared memory allows 2 CTAs of 4 warps per SM at most): up to 255, so
// ptxas can keep more of a tile's independent exponentials in flight.
template <int D, int kTileKeys>
inline constexpr int kBufferedMinBlocks = kTileKeys == 64 && D <= 64 ? 4 : 2;

// One chunk's exponentials into a warp's buffer slot (n-tile j at slot[32 j], the lane's offset included).
// All buffer accesses are int4, so no type punning between stores and loads.
__device__ __forceinline__ void store_exponentials(int4* slot, const float (&e)[4][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
    slot[j * 32] = make_int4(__float_as_int(e[j][0]), __float_as_int(e[j][1]), __float_as_int(e[j][2]),
                             __float_as_int(e[j][3]));
}

template <int D, int kTileKeys>
__global__ void __launch_bounds__(kBufferedMaxThreads, kBufferedMinBlocks<D, kTileKeys>) int8_buffered_kernel(const Int8Params p) {
  constexpr int kStages = buffered_stages(kTileKeys);
  constexpr int kDG = Tile<D>::kDGroups;
  constexpr int kChunksPerTile = kTileKeys / kChunkKeys;
  extern __shared__ __align__(128) std::uint8_t smem[];
  __shared__ CtaCounters counters;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  CtaWork w;
  if (!begin_int8_cta<D>(p, counters, w)) return;

  const BufferedSmem L = buffered_smem(D, p.block_m, p.keys_capacity, kTileKeys);
  const std::uint32_t q_s = smem_u32(smem + L.q), ring_s = smem_u32(smem + L.ring);
  // This warp's exponentials: chunk c, n-tile j at e_buf[(c * 4 + j) * 32] (16 bytes per lane). Plain
  // shared-memory pointers, so the compiler sees the accesses and schedules the loads freely.
  int4* const e_buf = reinterpret_cast<int4*>(smem + L.ebuf) +
                        warp * (p.keys_capacity / kChunkKeys) * (kEChunkBytes / 16) + lane;
  const int rows = w.row_end - w.row_begin;
  const int n_tiles = (w.keys + kTileKeys - 1) / kTileKeys;
  const int row0 = warp * 16, gl = lane >> 2;
  const bool active = row0 < rows;  // warps past the CTA's rows only help with loads and barriers
  const bool valid_a = row0 + gl < rows, valid_b = row0 + gl + 8 < rows;
  const bool quad_leader = (lane & 3) == 0;
  const float s1 = p.scale_bmm1, ssm = p.scale_softmax, s1_log2e = __fmul_rn(s1, int8_math::kLog2e);

  // The CTA's tile sequence: its passes back to back, n_tiles tiles each; bit k of v_passes says pass k
  // streams V (else K). Tile g goes to ring stage g % kStages, issued kStages - 1 steps
  // ahead, across pass boundaries. One commit group per step (empty past the end), so
  // cp.async.wait_group(kStages - 2) at step g means tile g has landed. The next tile to issue is
  // (issue_pass, issue_tile), tracked incrementally (issue is called once per step, in order).
  int v_passes = 0, n_passes = 0, issue_pass = 0, issue_tile = 0, issue_stage = 0;
  const KvTileLoader<D, kTileKeys> loader(p, w);
  auto issue = [&]() {
    if (issue_pass < n_passes) {
      loader.issue(ring_s + issue_stage * (kTileKeys * D), (v_passes >> issue_pass) & 1, issue_tile * kTileKeys,
                   w.keys);
      if (++issue_tile == n_tiles) {
        issue_tile = 0;
        ++issue_pass;
      }
      issue_stage = issue_stage == kStages - 1 ? 0 : issue_stage + 1;
    }
    cuda::ptx::cp_async_commit();
  };
  auto start_sequence = [&](int passes, int v_mask) {
    n_passes = passes;
    v_passes = v_mask;
    issue_pass = issue_tile = issue_stage = 0;
#pragma unroll
    for (int g = 0; g < kStages - 1; ++g) issue();
  };
  // One pass: body(tile address, chunk index in the sequence, key offset in the tile, valid keys of the
  // chunk (may be <= 0 in the last tile), masked). A full tile's two chunks run as one straight-line
  // block (masked = false_type: no key test, no branch between them), so the compiler interleaves one
  // chunk's MMAs and loads with the other's exponentials; only the sequence's last, partial tile tests
  // keys (masked = true_type). Chunks past the keys compute zeros, which P·V ignores.
  auto run_pass = [&](int pass, auto&& body) {
    for (int t = 0; t < n_tiles; ++t) {
      const int g = pass * n_tiles + t;
      cuda::ptx::cp_async_wait<kStages - 2>();
      __syncthreads();  // tile g visible to all; every warp is done with tile g - 1, whose stage tile
                        // g + kStages - 1 reuses
      issue();  // tile g + kStages - 1
      if (active) {
        const int tile_keys = w.keys - t * kTileKeys;
        const std::uint32_t tile = ring_s + (g % kStages) * kTileKeys * D;
        if (tile_keys >= kTileKeys) {
#pragma unroll
          for (int c = 0; c < kChunksPerTile; ++c)
            body(tile, t * kChunksPerTile + c, c * kChunkKeys, kChunkKeys, std::false_type{});
        } else {
#pragma unroll
          for (int c = 0; c < kChunksPerTile; ++c)
            body(tile, t * kChunksPerTile + c, c * kChunkKeys, chunk_valid_keys(tile_keys, c), std::true_type{});
        }
      }
    }
  };

  // Q rides with the first tile's commit group.
  load_rows_async<D>(q_s, p, w, 0, w.row_begin, (rows + 15) & ~15, rows);
  const bool use_row_max = p.bound == BoundMode::row_max;
  start_sequence(2, 0b10);  // K (exponentials, or row_max's logits), then V
  cuda::ptx::cp_async_wait<kStages - 2>();
  __syncthreads();
  std::uint32_t qa[D / 32][4];
  if (active) load_q_fragments<D>(qa, q_s, row0);  // before the first pass barrier: then the region is free

  // Integer row maxima over all keys (row_max, and guarded's repair).
  auto max_pass = [&](int pass, int (&m)[2]) {
    m[0] = m[1] = INT_MIN;
    run_pass(pass, [&](std::uint32_t k_tile, int, int key0, int valid, auto masked) {
      int a[4][4];
      qk_chunk<D>(a, qa, k_tile, key0);
      if constexpr (decltype(masked)::value) mask_chunk_acc(a, valid);
      chunk_row_max(a, m);
    });
    m[0] = quad_max(m[0]);
    m[1] = quad_max(m[1]);
  };
  auto sum_pass = [&](int pass, const float (&offset)[2], float (&sum)[2]) {
    sum[0] = sum[1] = 0.0f;
    run_pass(pass, [&](std::uint32_t k_tile, int chunk, int key0, int valid, auto masked) {
      int a[4][4];
      float e[4][4];
      qk_chunk<D>(a, qa, k_tile, key0);
      exponentials<decltype(masked)::value>(a, e, offset, s1_log2e, valid);
      chunk_sum_tree(e, sum);
      store_exponentials(e_buf + chunk * 128, e);
    });
    sum[0] = quad_sum(sum[0]);
    sum[1] = quad_sum(sum[1]);
  };

  float offset[2] = {exp_offset(p.fixed_bound), exp_offset(p.fixed_bound)};
  float sum[2];
  int out_pass = 1;
  if (use_row_max) {
    // One pass over K stores the integer accumulators in the buffer and takes the row maxima; then each
    // thread turns its own accumulators into exponentials in place (no K pass, no barrier), in the same
    // chunk order as sum_pass, so the sums are bit-identical to it.
    int m[2] = {INT_MIN, INT_MIN};
    run_pass(0, [&](std::uint32_t k_tile, int chunk, int key0, int valid, auto masked) {
      int a[4][4];
      qk_chunk<D>(a, qa, k_tile, key0);
      if constexpr (decltype(masked)::value) mask_chunk_acc(a, valid);
      chunk_row_max(a, m);
      int4* const dst = e_buf + chunk * 128;
#pragma unroll
      for (int j = 0; j < 4; ++j) dst[j * 32] = make_int4(a[j][0], a[j][1], a[j][2], a[j][3]);
    });
    offset[0] = exp_offset(row_max_shift(quad_max(m[0]), s1));
    offset[1] = exp_offset(row_max_shift(quad_max(m[1]), s1));
    sum[0] = sum[1] = 0.0f;
    if (active) {
      // Every chunk the K pass wrote (2 per tile; the last tile's may lie past the keys: masked to 0).
      auto convert = [&](int chunk, int valid, auto masked) {
        int a[4][4];
        float e[4][4];
        int4* const slot = e_buf + chunk * 128;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int4 v = slot[j * 32];
          a[j][0] = v.x;
          a[j][1] = v.y;
          a[j][2] = v.z;
          a[j][3] = v.w;
        }
        exponentials<decltype(masked)::value>(a, e, offset, s1_log2e, valid);
        chunk_sum_tree(e, sum);
        store_exponentials(slot, e);
      };
      const int full_tiles = w.keys / kTileKeys;
      for (int t = 0; t < full_tiles; ++t) {
#pragma unroll
        for (int c = 0; c < kChunksPerTile; ++c) convert(t * kChunksPerTile + c, kChunkKeys, std::false_type{});
      }
      if (full_tiles < n_tiles) {
        const int tile_keys = w.keys - full_tiles * kTileKeys;
#pragma unroll
        for (int c = 0; c < kChunksPerTile; ++c)
          convert(full_tiles * kChunksPerTile + c, chunk_valid_keys(tile_keys, c), std::true_type{});
      }
    }
    sum[0] = quad_sum(sum[0]);
    sum[1] = quad_sum(sum[1]);
  } else {
    sum_pass(0, offset, sum);
  }

  bool zero_a = false, zero_b = false, kept_failed_rows = false;
  if (!use_row_max) {
    const CtaVerdict v = judge_cta(p, sum, active && valid_a, active && valid_b, quad_leader, counters);
    zero_a = v.rows.zero_a;
    zero_b = v.rows.zero_b;
    kept_failed_rows = v.kept_failed_rows;
    if (v.any_failed && p.bound == BoundMode::guarded) {  // rare: the whole CTA takes two more passes over K
      // Drop the V tiles already in flight: let them land, then restart the ring on [max K, sum K,
      // out V] (no warp reads the ring after the barrier).
      cuda::ptx::cp_async_wait<0>();
      __syncthreads();
      start_sequence(3, 0b100);
      int m[2];
      max_pass(0, m);
      if (v.rows.fail_a) offset[0] = exp_offset(row_max_shift(m[0], s1));
      if (v.rows.fail_b) offset[1] = exp_offset(row_max_shift(m[1], s1));
      sum_pass(1, offset, sum);  // unchanged rows store bit-identical exponentials and sums
      out_pass = 2;
    }
  }

  const float inv_a = int8_math::inverse_row_sum(sum[0]), inv_b = int8_math::inverse_row_sum(sum[1]);
  int acc2[kDG][2][4];
  clear_context_acc<D>(acc2);
  auto out_body = [&](auto exact) {
    return [&](std::uint32_t v_tile, int chunk, int key0, int, auto) {
      float e[4][4];
      const int4* const src = e_buf + chunk * 128;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int4 v = src[j * 32];
        e[j][0] = __int_as_float(v.x);
        e[j][1] = __int_as_float(v.y);
        e[j][2] = __int_as_float(v.z);
        e[j][3] = __int_as_float(v.w);
      }
      std::uint32_t pa[4];
      pack_probabilities_fast<decltype(exact)::value>(pa, e, inv_a, inv_b, ssm);
      pv_chunk<D>(acc2, pa, [&](int h) { return v_fragment_from_rows<D>(v_tile, key0, h); });
    };
  };
  if (contracted_quantization_ok(ssm, kept_failed_rows)) run_pass(out_pass, out_body(std::false_type{}));
  else run_pass(out_pass, out_body(std::true_type{}));

  if (active) store_output_rows<D>(p, w, acc2, row0 + gl, valid_a, zero_a, valid_b, zero_b);
  if (p.slots != nullptr) {
    __syncthreads();
    write_counter_slot(p, counters);
  }
}

}  // namespace qkv2ctx::fused_int8
