// The sm_90a fused INT8 kernels (Int8Schedule::wgmma), both GEMMs on the Hopper warpgroup MMA; one CTA
// = 128 query rows of one (sequence, head), 2 warpgroups x 64 rows:
//   S = Q·Kᵀ: D/32 wgmma m64nBNk32 s8·s8 -> s32 per key tile, Q and K read from shared memory;
//   O += P·V: BN/32 wgmma m64nDk32 with P from registers and Vᵀ from shared memory.
// Two forms (WgmmaInt8Traits<D, BN>):
//   whole row (BN = 128, sequences of at most 128 keys): Q, K and V of the item load at once, the
//     row's scores and exponentials stay in registers (64 per thread), so each exponential is computed
//     once: S, [row max], exponentials and sums, [guarded repair], probabilities, P·V;
//   streaming (BN = 64, any length): the streaming schedule's passes over the key tiles
//     (int8_streaming.cuh: [max], sum, [guarded repair: max, sum], out).
// Integer wgmma takes both operands K-major, so V ([keys][D] as stored) is transposed once per tile by
// the CTA (transpose_v: ldmatrix.trans + PRMT + stmatrix, 64 bytes per thread) instead of every warp
// rebuilding its B fragments per chunk as the sm_80 kernels do. Two orders are folded into that copy so
// that no register moves elsewhere:
//   keys: the S accumulator gives a thread keys 8j + 2q, 8j + 2q + 1 of n-tile j, while the A operand
//     wants 4 consecutive k per register; P's k order is permuted instead (int8_tile.cuh: a register
//     holds keys 2q, 2q+1, 8+2q, 9+2q of a 16-key block), and Vᵀ's rows follow the same order;
//   columns: Vᵀ row n holds output column φ(n) = 16h + 4q + 2s + b for n = 16h + 8s + 2q + b, so a
//     thread's accumulators hold 4 contiguous output columns (the sm_80 epilogue's layout,
//     store_output_rows, reused as is).
// Tiles sit in shared memory in the swizzled layouts the descriptors address (rows of D bytes: 64-byte
// swizzle at D = 64, 128-byte at D = 128; Vᵀ rows of BN keys: BN-byte swizzle), loaded with
// row-contiguous cp.async copies (WgmmaRowCopier).
//
// Streaming pipeline of a pass (one CTA barrier per tile): at the top of tile j, K_j (and, in the out pass, V_j
// and Vᵀ_{j-1}) have landed; K_{j+1} (and V_{j+1}) are issued into the stages tile j-1 left. The out pass
// issues S_j, then P·V_{j-1}, transposes V_j while both run, quantizes P_j once S_j is done, and writes
// P_j's registers after P·V_{j-1} completes. The last tile of a pass prefetches the next pass's first.
#pragma once
#include <climits>
#include <cstdint>
#include <type_traits>

#include "cuda/common/ptx_wgmma.cuh"
#include "cuda/fused_sm80/int8_cta.cuh"
#include "cuda/fused_sm90/swizzle.cuh"

namespace qkv2ctx::fused_int8 {

template <int D, int BN>
struct WgmmaInt8Traits {
  static_assert(D == 64 || D == 128, "INT8 wgmma head sizes 64 and 128");
  static_assert(BN == kWgmmaInt8TileKeys || BN == kWgmmaInt8WholeRowKeys, "streaming or whole-row tiles");
  static constexpr int kHeadDim = D;
  static constexpr int kThreads = kWgmmaInt8Threads;
  static constexpr int kBlockM = kWgmmaInt8BlockM;  // 2 warpgroups x 64 rows
  static constexpr int kBlockN = BN;
  static constexpr bool kWholeRow = BN == kWgmmaInt8WholeRowKeys;
  static constexpr int kStages = kWholeRow ? 1 : 2;  // K, V and Vᵀ tiles in flight
  static constexpr int kQBytes = kBlockM * D;
  static constexpr int kKvBytes = kBlockN * D;    // a K or V tile, and a Vᵀ tile
  static constexpr int kNTiles = kBlockN / 8;     // n8 tiles of the scores
  static constexpr int kDTiles = D / 8;           // n8 tiles of the context
  static constexpr int kChunksPerTile = kBlockN / kChunkKeys;
  static constexpr int kMinBlocks = D == 64 ? 2 : 1;
  // Q | K[kStages] | V staging[kStages] | Vᵀ[kStages], plus the alignment slack.
  static_assert(int8_wgmma_smem(D, BN) == kQBytes + 3 * kStages * kKvBytes + kWgmmaInt8AlignSlack,
                "one shared-memory layout");
};

// Q, K and V tiles: one D-byte row per position, swizzled (SWIZZLE_64B / SWIZZLE_128B).
template <int D>
struct SwizzledRows {
  static __device__ __forceinline__ int offset(int r, int c) { return fused_sm90::swizzled_offset<1, D>(r, c); }
};

// Q, K and V rows of one (sequence, head) into SwizzledRows<D> tiles. Thread t always copies 16-byte
// chunk t % (D/16) of rows t / (D/16) + i * kRowsPerPass (a multiple of 8, so its swizzled position
// within the row never changes): the addressing is done once per item, and a tile costs one 64-bit
// multiply-add plus a compare and a cp.async per pass (every layout's address is linear in the
// sequence position, src/core/indexing.hpp).
template <int D>
struct WgmmaRowCopier {
  static constexpr int kChunks = D / 16;
  static constexpr int kRowsPerPass = kWgmmaInt8Threads / kChunks;
  static_assert(kRowsPerPass % 8 == 0, "whole 8-row swizzle groups per pass");
  const std::int8_t* base[3];  // Q, K, V: the thread's chunk of sequence position r0
  std::int64_t step;           // bytes between consecutive sequence positions
  int r0, dst0;

  __device__ __forceinline__ WgmmaRowCopier(const Int8Params& p, const CtaWork& w) {
    const int c = static_cast<int>(threadIdx.x) % kChunks;
    r0 = static_cast<int>(threadIdx.x) / kChunks;
    dst0 = SwizzledRows<D>::offset(r0, c);
    const std::int64_t at0 = qkv_offset(p.layout, w.row0, 0, w.head, c * 16, p.num_heads, D, p.num_tokens);
    step = qkv_offset(p.layout, w.row0 + w.row_step, 0, w.head, c * 16, p.num_heads, D, p.num_tokens) - at0;
#pragma unroll
    for (int which = 0; which < 3; ++which)
      base[which] = p.qkv + qkv_offset(p.layout, w.row0, which, w.head, c * 16, p.num_heads, D, p.num_tokens) +
                    r0 * step;
  }
  // Positions first .. first + kRows - 1 of Q/K/V (which = 0/1/2) into the tile at `tile`; positions
  // at or past `limit` are zero-filled and not read.
  template <int kRows>
  __device__ __forceinline__ void copy(std::uint32_t tile, int which, int first, int limit) const {
    static_assert(kRows % kRowsPerPass == 0, "whole passes");
    const std::int8_t* src = base[which] + first * step;
    const int left = limit - first - r0;  // this thread's rows i * kRowsPerPass < left are valid
#pragma unroll
    for (int i = 0; i < kRows / kRowsPerPass; ++i) {
      const bool valid = i * kRowsPerPass < left;
      cuda::ptx::cp_async_16(tile + dst0 + i * kRowsPerPass * D, valid ? src + i * kRowsPerPass * step : base[which],
                             valid);
    }
  }
};

// Chunk c (32 keys: n-tiles 4c .. 4c + 3) of a tile's per-key values (scores, exponentials, probability
// bytes), in the shape of the sm_80 helpers (int8_softmax.cuh).
template <class T, int N>
__device__ __forceinline__ auto chunk(T (&v)[N][4], int c) -> T (&)[4][4] {
  return *reinterpret_cast<T(*)[4][4]>(&v[4 * c]);
}

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)

// Vᵀ row of output column d = 16h + 2g + b (the inverse of φ above).
__device__ __forceinline__ int vt_row_of_column(int h, int g, int b) { return 16 * h + 8 * (g & 1) + 2 * (g >> 1) + b; }

// V tile (staged rows, SwizzledRows<D>) -> Vᵀ tile ([D][BN keys], BN-byte swizzle, keys in P's order,
// rows in φ's order). Unit u = (32-key chunk kc, 16-column group h): one ldmatrix.x4.trans gives a thread
// keys 2q, 2q+1 of each 8-key block for columns 2g, 2g+1 of group h; one PRMT per register gathers keys
// (2q, 2q+1, 8+2q, 9+2q) of one column; one stmatrix.x4 writes 4 rows x 16 keys.
template <class Tr>
__device__ __forceinline__ void transpose_v(std::uint32_t v_tile, std::uint32_t vt_tile, int warp, int lane) {
  constexpr int D = Tr::kHeadDim;
  constexpr int kUnits = Tr::kChunksPerTile * (D / 16), kWarps = Tr::kThreads / 32;
  static_assert(kUnits % kWarps == 0, "whole units per warp");
  const int m = lane >> 3, r = lane & 7;
#pragma unroll
  for (int i = 0; i < kUnits / kWarps; ++i) {
    const int u = warp + kWarps * i;
    const int kc = u % Tr::kChunksPerTile, h = u / Tr::kChunksPerTile;
    std::uint32_t t[4];
    cuda::ptx::ldmatrix_x4_trans(t, v_tile + SwizzledRows<D>::offset(kChunkKeys * kc + 8 * m + r, h));
    const std::uint32_t out[4] = {__byte_perm(t[0], t[1], 0x6420), __byte_perm(t[0], t[1], 0x7531),
                                  __byte_perm(t[2], t[3], 0x6420), __byte_perm(t[2], t[3], 0x7531)};
    // Matrix m (= this lane's address slot): column parity b = m & 1, 16-key block 2kc + (m >> 1).
    const int row = vt_row_of_column(h, r, m & 1);
    cuda::ptx::stmatrix_x4(vt_tile + fused_sm90::swizzled_offset<1, Tr::kBlockN>(row, 2 * kc + (m >> 1)), out);
  }
}

#endif  // sm_90a

template <int D, int BN>
__global__ void __launch_bounds__(kWgmmaInt8Threads, WgmmaInt8Traits<D, BN>::kMinBlocks)
    int8_wgmma_kernel(const Int8Params p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace cuda::ptx;
  using Tr = WgmmaInt8Traits<D, BN>;
  constexpr int kNT = Tr::kNTiles, kChunks = Tr::kChunksPerTile;
  extern __shared__ __align__(128) std::uint8_t smem_raw[];
  __shared__ CtaCounters counters;

  CtaWork w;
  if (!begin_int8_cta<D>(p, counters, w)) return;
  // Swizzle atoms need 1024-byte alignment; the launch adds kWgmmaInt8AlignSlack for it.
  const std::uint32_t q_s = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const std::uint32_t k_s0 = q_s + Tr::kQBytes, v_s0 = k_s0 + Tr::kStages * Tr::kKvBytes,
                      vt_s0 = v_s0 + Tr::kStages * Tr::kKvBytes;

  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int warpgroup = warp >> 2;
  const int rows = w.row_end - w.row_begin;
  const int row0 = warp * 16, gl = lane >> 2;  // the warp's 16 rows of the CTA's 128 (its warpgroup's 64)
  const bool valid_a = row0 + gl < rows, valid_b = row0 + gl + 8 < rows;
  const bool quad_leader = (lane & 3) == 0;
  const float s1 = p.scale_bmm1, ssm = p.scale_softmax, s1_log2e = __fmul_rn(s1, int8_math::kLog2e);

  const WgmmaRowCopier<D> copier(p, w);
  auto issue_k = [&](int stage, int tile) {
    copier.template copy<BN>(k_s0 + stage * Tr::kKvBytes, 1, tile * BN, w.keys);
  };
  auto issue_v = [&](int stage, int tile) {
    copier.template copy<BN>(v_s0 + stage * Tr::kKvBytes, 2, tile * BN, w.keys);
  };
  copier.template copy<Tr::kBlockM>(q_s, 0, w.row_begin, w.row_end);
  issue_k(0, 0);
  if constexpr (Tr::kWholeRow) issue_v(0, 0);
  cp_async_commit();

  // Descriptors of stage 0, built once; a k32 step (32 bytes of each row) or another stage adds its byte
  // offset / 16 to the start-address field.
  const std::uint64_t q_desc = fused_sm90::swizzled_desc<D>(q_s + warpgroup * 64 * D, 16);
  const std::uint64_t k_desc = fused_sm90::swizzled_desc<D>(k_s0, 16);
  const std::uint64_t vt_desc = fused_sm90::swizzled_desc<BN>(vt_s0, 16);
  auto issue_scores = [&](int (&s)[kNT][4], int stage) {
    wgmma_fence();
    const std::uint64_t kd = k_desc + static_cast<std::uint64_t>(stage * (Tr::kKvBytes >> 4));
#pragma unroll
    for (int ks = 0; ks < D / 32; ++ks) wgmma_ss_s8<BN>(s, q_desc + 2 * ks, kd + 2 * ks, ks > 0);
    wgmma_commit();
  };
  auto scores = [&](int (&s)[kNT][4], int stage) {
    issue_scores(s, stage);
    wgmma_wait<0>();
    wgmma_fence_operands(s);
  };
  // Row maxima of one tile's scores into m (keys at or past tile_keys excluded).
  auto tile_row_max = [&](int (&s)[kNT][4], int tile_keys, int (&m)[2]) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      if (tile_keys < BN) mask_chunk_acc(chunk(s, c), chunk_valid_keys(tile_keys, c));
      chunk_row_max(chunk(s, c), m);
    }
  };
  // Exponentials of one tile's scores (keys at or past tile_keys get 0).
  auto tile_exponentials = [&](int (&s)[kNT][4], float (&e)[kNT][4], int tile_keys, const float (&offset)[2]) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      if (tile_keys >= BN) exponentials<false>(chunk(s, c), chunk(e, c), offset, s1_log2e, kChunkKeys);
      else exponentials<true>(chunk(s, c), chunk(e, c), offset, s1_log2e, chunk_valid_keys(tile_keys, c));
    }
  };
  // ... added to the row sums chunk by chunk: one fixed order, so a guarded repair recomputes unchanged
  // rows' sums bit for bit.
  auto add_tile_sums = [&](float (&e)[kNT][4], float (&sum)[2]) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) chunk_sum_tree(chunk(e, c), sum);
  };
  // Probability bytes of chunk c (low byte of each value; SPEC 5.0 step 6, exact or contracted form).
  auto probability_bytes = [&](const float (&e)[4][4], std::uint32_t (&b)[4][4], bool exact, float inv_a,
                               float inv_b, float k_a, float k_b) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const bool row_b = i >= 2;
        b[j][i] = exact ? probability_byte(e[j][i], row_b ? inv_b : inv_a, ssm)
                        : contracted_probability_byte(e[j][i], row_b ? k_b : k_a);
      }
  };
  // One chunk's bytes as the P·V A fragment (int8_tile.cuh's key order).
  auto pack_chunk = [](const std::uint32_t (&b)[4][4], std::uint32_t (&a)[4]) {
    a[0] = pack_low_bytes(b[0][0], b[0][1], b[1][0], b[1][1]);
    a[1] = pack_low_bytes(b[0][2], b[0][3], b[1][2], b[1][3]);
    a[2] = pack_low_bytes(b[2][0], b[2][1], b[3][0], b[3][1]);
    a[3] = pack_low_bytes(b[2][2], b[2][3], b[3][2], b[3][3]);
  };
  // The fixed bound's verdict (fixed_bound, guarded) on the sums: which rows are zeroed, whether failed
  // rows are kept (see contracted_quantization_ok), whether the CTA must repair rows (guarded).
  bool zero_a = false, zero_b = false, kept_failed_rows = false;
  auto judge = [&](const float (&sum)[2]) {
    const CtaVerdict v = judge_cta(p, sum, valid_a, valid_b, quad_leader, counters);
    zero_a = v.rows.zero_a;
    zero_b = v.rows.zero_b;
    kept_failed_rows = v.kept_failed_rows;
    return v;
  };
  const float fixed_offset = exp_offset(p.fixed_bound);

  int o[Tr::kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < Tr::kDTiles; ++dt)
#pragma unroll
    for (int i = 0; i < 4; ++i) o[dt][i] = 0;
  std::uint32_t pa[kChunks][4];  // P of a tile, read by its P·V until that completes
  auto issue_pv = [&](int buf) {
    wgmma_fence();
    const std::uint64_t vd = vt_desc + static_cast<std::uint64_t>(buf * (Tr::kKvBytes >> 4));
#pragma unroll
    for (int c = 0; c < kChunks; ++c) wgmma_rs_s8<D>(o, pa[c], vd + 2 * c, true);
    wgmma_commit();
    wgmma_fence_operands(o);
  };

  if constexpr (Tr::kWholeRow) {
    // ---- the whole row in registers: one tile of at most 128 keys ----
    cp_async_wait<0>();
    fence_proxy_async_shared();
    __syncthreads();
    int s[kNT][4];
    issue_scores(s, 0);
    transpose_v<Tr>(v_s0, vt_s0, warp, lane);  // while S runs
    fence_proxy_async_shared();
    wgmma_wait<0>();
    wgmma_fence_operands(s);
    float offset[2] = {fixed_offset, fixed_offset};
    if (p.bound == BoundMode::row_max) {
      int m[2] = {INT_MIN, INT_MIN};
      tile_row_max(s, w.keys, m);
      m[0] = quad_max(m[0]);
      m[1] = quad_max(m[1]);
      offset[0] = exp_offset(row_max_shift(m[0], s1));
      offset[1] = exp_offset(row_max_shift(m[1], s1));
    }
    float e[kNT][4], sum[2] = {0.0f, 0.0f};
    tile_exponentials(s, e, w.keys, offset);
    add_tile_sums(e, sum);
    sum[0] = quad_sum(sum[0]);
    sum[1] = quad_sum(sum[1]);
    if (p.bound != BoundMode::row_max) {
      const CtaVerdict v = judge(sum);
      if (v.any_failed && p.bound == BoundMode::guarded) {  // rare: the scores again, the failed rows' maxima
        scores(s, 0);
        int m[2] = {INT_MIN, INT_MIN};
        tile_row_max(s, w.keys, m);
        m[0] = quad_max(m[0]);  // every lane shuffles: not inside the per-row conditions below
        m[1] = quad_max(m[1]);
        if (v.rows.fail_a) offset[0] = exp_offset(row_max_shift(m[0], s1));
        if (v.rows.fail_b) offset[1] = exp_offset(row_max_shift(m[1], s1));
        scores(s, 0);  // tile_row_max masked the scores in place
        sum[0] = sum[1] = 0.0f;
        tile_exponentials(s, e, w.keys, offset);
        add_tile_sums(e, sum);
        sum[0] = quad_sum(sum[0]);
        sum[1] = quad_sum(sum[1]);
      }
    }
    const float inv_a = int8_math::inverse_row_sum(sum[0]), inv_b = int8_math::inverse_row_sum(sum[1]);
    const float k_a = __fmul_rn(inv_a, ssm), k_b = __fmul_rn(inv_b, ssm);
    const bool exact = !contracted_quantization_ok(ssm, kept_failed_rows);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      std::uint32_t b[4][4];
      probability_bytes(chunk(e, c), b, exact, inv_a, inv_b, k_a, k_b);
      pack_chunk(b, pa[c]);
    }
    __syncthreads();  // Vᵀ from every warp
    issue_pv(0);
    wgmma_wait<0>();
    wgmma_fence_operands(o);
  } else {
    // ---- streaming: passes over 64-key tiles ----
    const int n_tiles = (w.keys + BN - 1) / BN;
    // One pass over the key tiles. out: the pass also streams V (the out pass); next: what to prefetch
    // for the following pass (-1 nothing, 0 K_0, 1 K_0 and V_0). body(tile, K stage, keys in the tile).
    int kst = 0;
    auto run_pass = [&](bool out, int next, auto&& body) {
      for (int t = 0; t < n_tiles; ++t) {
        cp_async_wait<0>();
        fence_proxy_async_shared();
        __syncthreads();
        if (t + 1 < n_tiles) {
          issue_k(kst ^ 1, t + 1);
          if (out) issue_v((t + 1) & 1, t + 1);
        } else if (next >= 0) {
          issue_k(kst ^ 1, 0);
          if (next == 1) issue_v(0, 0);
        }
        cp_async_commit();
        body(t, kst, w.keys - t * BN);
        kst ^= 1;
      }
    };
    // Integer row maxima over all keys (row_max, and guarded's repair).
    auto max_pass = [&](int (&m)[2], int next) {
      m[0] = m[1] = INT_MIN;
      run_pass(false, next, [&](int, int stage, int tile_keys) {
        int s[kNT][4];
        scores(s, stage);
        tile_row_max(s, tile_keys, m);
      });
      m[0] = quad_max(m[0]);
      m[1] = quad_max(m[1]);
    };
    auto sum_pass = [&](const float (&offset)[2], float (&sum)[2]) {
      sum[0] = sum[1] = 0.0f;
      run_pass(false, 1, [&](int, int stage, int tile_keys) {
        int s[kNT][4];
        float e[kNT][4];
        scores(s, stage);
        tile_exponentials(s, e, tile_keys, offset);
        add_tile_sums(e, sum);
      });
      sum[0] = quad_sum(sum[0]);
      sum[1] = quad_sum(sum[1]);
    };

    float offset[2], sum[2];
    bounded_row_sums(p, max_pass, sum_pass, judge, offset, sum);

    // ---- out pass ----
    const float inv_a = int8_math::inverse_row_sum(sum[0]), inv_b = int8_math::inverse_row_sum(sum[1]);
    const float k_a = __fmul_rn(inv_a, ssm), k_b = __fmul_rn(inv_b, ssm);
    // Tile t of the out pass; kFirst (t = 0) has no P·V in flight. The two forms are whole branches: a
    // wgmma issued and waited for under separate conditions makes ptxas serialize every wgmma (C7514).
    auto out_tile = [&](int t, int stage, int tile_keys, auto exact, auto first) {
      constexpr bool kExact = decltype(exact)::value, kFirst = decltype(first)::value;
      int s[kNT][4];
      issue_scores(s, stage);
      if constexpr (!kFirst) issue_pv((t - 1) & 1);
      transpose_v<Tr>(v_s0 + (t & 1) * Tr::kKvBytes, vt_s0 + (t & 1) * Tr::kKvBytes, warp, lane);
      fence_proxy_async_shared();  // Vᵀ_t is read by the tensor core after the next barrier
      if constexpr (kFirst) wgmma_wait<0>();
      else wgmma_wait<1>();  // S_t done; P·V_{t-1} may still run
      wgmma_fence_operands(s);
      float e[kNT][4];
      tile_exponentials(s, e, tile_keys, offset);
      std::uint32_t b[kNT][4];
#pragma unroll
      for (int c = 0; c < kChunks; ++c) probability_bytes(chunk(e, c), chunk(b, c), kExact, inv_a, inv_b, k_a, k_b);
      // The tensor core reads pa until P·V_{t-1} completes: write P_t only after the wait, ordered by the
      // fences on its inputs (else ptxas may reuse the in-flight registers).
      wgmma_fence_operands(b);
      if constexpr (!kFirst) {
        wgmma_wait<0>();
        wgmma_fence_operands(o);
        wgmma_fence_operands(b);
      }
#pragma unroll
      for (int c = 0; c < kChunks; ++c) pack_chunk(chunk(b, c), pa[c]);
    };
    auto out_body = [&](auto exact) {
      return [&, exact](int t, int stage, int tile_keys) {
        if (t == 0) out_tile(t, stage, tile_keys, exact, std::true_type{});
        else out_tile(t, stage, tile_keys, exact, std::false_type{});
      };
    };
    if (contracted_quantization_ok(ssm, kept_failed_rows)) run_pass(true, -1, out_body(std::false_type{}));
    else run_pass(true, -1, out_body(std::true_type{}));
    // Vᵀ_{n-1} from every warp, then the last P·V.
    __syncthreads();
    issue_pv((n_tiles - 1) & 1);
    wgmma_wait<0>();
    wgmma_fence_operands(o);
  }

  // o[2h + s][b] (row g) holds column 16h + 4q + 2s + b (φ): the sm_80 epilogue's even / odd tiles.
  int acc2[D / 16][2][4];
#pragma unroll
  for (int h = 0; h < D / 16; ++h)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      acc2[h][0][2 * half] = o[2 * h][2 * half];
      acc2[h][1][2 * half] = o[2 * h][2 * half + 1];
      acc2[h][0][2 * half + 1] = o[2 * h + 1][2 * half];
      acc2[h][1][2 * half + 1] = o[2 * h + 1][2 * half + 1];
    }
  store_output_rows<D>(p, w, acc2, row0 + gl, valid_a, zero_a, valid_b, zero_b);
  if (p.slots != nullptr) {
    __syncthreads();
    write_counter_slot(p, counters);
  }
#else
  (void)p;
  __trap();  // the planner takes the wgmma schedule on SM 9.0 only
#endif
}

}  // namespace qkv2ctx::fused_int8
