// Device building blocks of the fused INT8 kernels (int8_buffered.cuh, int8_streaming.cuh,
// int8_resident.cuh), part 1: which work a CTA owns, shared-memory tiles and their loads, the two GEMMs
// on 16-row warp tiles. Part 2, int8_softmax.cuh: the SPEC 5.0 per-element steps and the bound modes;
// part 3, int8_cta.cuh: the CTA's prologue and epilogue. Fragment layouts are those of ptx_int8.cuh
// (g = lane / 4, q = lane % 4).
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

// acc2 = 0 before the first P·V chunk.
template <int D>
__device__ __forceinline__ void clear_context_acc(int (&acc2)[D / 16][2][4]) {
#pragma unroll
  for (int h = 0; h < D / 16; ++h)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc2[h][0][i] = acc2[h][1][i] = 0;
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

// ---- K/V tiles -------------------------------------------------------------------------------------------

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

}  // namespace qkv2ctx::fused_int8
