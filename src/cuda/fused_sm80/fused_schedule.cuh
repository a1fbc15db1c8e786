// Which (sequence, head, query tile) a CTA computes, and where that sequence's rows live. Padded modes
// decode the CTA index directly; varlen maps a tile slot to its sequence without a device scan or an
// extra launch: longest-first from one warp's view of all lengths (B <= kLongestFirstMaxBatch), else a
// 32-way search over cu_seqlens. Indices taken from cu_seqlens are clamped to [0, T]
// and to max_seqlen, so bad device cu_seqlens never make a CTA read or write out of bounds.
#pragma once
#include <cstdint>

#include "core/indexing.hpp"
#include "cuda/fused_sm80/fused_params.hpp"

namespace qkv2ctx::fused_sm80 {

struct CtaWork {
  std::int64_t row0;      // token row of the sequence's position 0
  std::int64_t row_step;  // token rows between consecutive positions
  int rows;               // query rows of the sequence
  int keys;               // valid keys
  int head;
  int m_block;            // query tile index within the sequence
};

// cu_seqlens[b] clamped to the tensor's rows.
__device__ __forceinline__ std::int64_t clamped_cu(const FusedParams& p, int b) {
  const std::int64_t v = __ldg(p.cu_seqlens + b);
  return v < 0 ? 0 : (v > p.num_tokens ? p.num_tokens : v);
}

// First slot of sequence b (fused_tile_policy.hpp, varlen_tile_slots): floor(cu[b] / BM) + b.
template <int kBlockM>
__device__ __forceinline__ std::int64_t varlen_first_slot(const FusedParams& p, int b) {
  return clamped_cu(p, b) / kBlockM + b;
}

// Longest-first varlen mapping (fused_tile_policy.hpp, longest_first_tile; batch <= kLongestFirstMaxBatch):
// lane l holds sequences 4l .. 4l + 3 (their cu_seqlens loaded at once), and the cost classes k are
// walked from the largest down with one warp reduction each until the one holding `slot`; then an
// exclusive scan over the lanes finds the sequence. Lengths are clamped as in resolve_cta_work().
template <int kBlockM>
__device__ __forceinline__ bool resolve_longest_first(const FusedParams& p, int slot, CtaWork& w) {
  constexpr int kPer = kLongestFirstMaxBatch / 32;
  const int lane = threadIdx.x & 31;
  int cu[kPer + 1];
#pragma unroll
  for (int i = 0; i <= kPer; ++i) {
    const int b = lane * kPer + i;
    cu[i] = b <= p.batch ? static_cast<int>(clamped_cu(p, b)) : 0;
  }
  int len[kPer], tiles[kPer], cls[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int end = cu[i + 1] > cu[i] ? cu[i + 1] : cu[i];
    len[i] = lane * kPer + i < p.batch ? min(end - cu[i], p.max_seqlen) : 0;
    tiles[i] = (len[i] + kBlockM - 1) / kBlockM;
    cls[i] = longest_first_class(len[i]);
  }
  for (int k = longest_first_class(p.max_seqlen); k >= 1; --k) {
    int mine = 0;  // tiles of this lane's sequences in class k
#pragma unroll
    for (int i = 0; i < kPer; ++i) mine += cls[i] == k ? tiles[i] : 0;
    const int total = __reduce_add_sync(0xffffffffu, mine);
    if (slot >= total) {
      slot -= total;
      continue;
    }
    int incl = mine;  // inclusive scan over the lanes (sequence order is lane-major)
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const int t = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += t;
    }
    const int excl = incl - mine;
    const int owner = __ffs(__ballot_sync(0xffffffffu, slot >= excl && slot < incl)) - 1;
    int r = slot - excl, row0 = 0, rows = 0, m_block = 0;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      if (cls[i] == k) {
        if (r >= 0 && r < tiles[i]) {
          row0 = cu[i];
          rows = len[i];
          m_block = r;
        }
        r -= tiles[i];
      }
    }
    w.row0 = __shfl_sync(0xffffffffu, row0, owner);
    w.rows = w.keys = __shfl_sync(0xffffffffu, rows, owner);
    w.m_block = __shfl_sync(0xffffffffu, m_block, owner);
    w.row_step = 1;
    return true;
  }
  return false;
}

// Work item `cta` (0 .. num_items - 1, the CTA index of a one-item-per-CTA launch). Returns false when
// the item has no work (a surplus varlen slot). Uniform across the CTA (every warp computes the same
// answer, so no barrier is needed).
template <int kBlockM>
__device__ __forceinline__ bool resolve_cta_work(const FusedParams& p, std::int64_t cta, CtaWork& w) {
  if (p.mask != MaskMode::varlen) {
    w.m_block = static_cast<int>(cta % p.tile_slots);
    const std::int64_t seq_head = cta / p.tile_slots;
    w.head = static_cast<int>(seq_head % p.num_heads);
    const int b = static_cast<int>(seq_head / p.num_heads);
    const SeqSpan span = seq_span(p.mask, p.layout, b, p.batch, p.max_seqlen, p.seq_lens, nullptr);
    w.row0 = span.row0;
    w.row_step = span.row_step;
    w.rows = span.rows;
    w.keys = span.keys;
    return true;
  }
  if (varlen_longest_first(p.batch)) {
    // Slot-major over the heads: the longest sequences of every head come first.
    w.head = static_cast<int>(cta % p.num_heads);
    return resolve_longest_first<kBlockM>(p, static_cast<int>(cta / p.num_heads), w);
  }
  const std::int64_t slot = cta % p.tile_slots;
  w.head = static_cast<int>(cta / p.tile_slots);
  // Largest b in [0, B) with first_slot(b) <= slot (first_slot(0) = 0). Each round probes 32 evenly
  // spaced candidates, one per lane, and keeps the last one that qualifies: ceil(log32 B) rounds.
  const int lane = threadIdx.x & 31;
  int lo = 0, hi = p.batch;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const int step = (hi - lo + 31) / 32;
    const int cand = lo + lane * step;
    const bool ok = cand < hi && varlen_first_slot<kBlockM>(p, cand) <= slot;
    // Lane 0 (cand = lo) qualifies unless cu_seqlens is corrupt (then stay at lo).
    const unsigned mask = __ballot_sync(0xffffffffu, ok);
    const int last = mask != 0u ? 31 - __clz(mask) : 0;
    lo = lo + last * step;
    hi = min(hi, lo + step);
  }
  const int b = lo;
  const std::int64_t begin = clamped_cu(p, b);
  std::int64_t end = clamped_cu(p, b + 1);
  if (end < begin) end = begin;
  const int len = static_cast<int>(end - begin < p.max_seqlen ? end - begin : p.max_seqlen);
  w.m_block = static_cast<int>(slot - varlen_first_slot<kBlockM>(p, b));
  w.row0 = begin;
  w.row_step = 1;
  w.rows = len;
  w.keys = len;
  return w.m_block >= 0 && static_cast<std::int64_t>(w.m_block) * kBlockM < len;
}

// The items of one CTA: item blockIdx.x of round 0, then one per round of gridDim.x items, in snake
// order (odd rounds run backwards) so that, with items ordered longest-first, no CTA takes the most
// expensive item of every round. A one-item-per-CTA launch (grid = items) has a single round.
struct ItemIter {
  int round = 0;
  __device__ __forceinline__ std::int64_t next() {
    const std::int64_t g = gridDim.x, r = round++;
    return r * g + ((r & 1) ? g - 1 - blockIdx.x : blockIdx.x);
  }
};

// Rows of an item whose sequence has no valid key: an all-zero context (no load, no NaN).
// Tr: kHeadDim, kChunksPerRow (16-byte chunks per row), kBlockM, kThreads, Elem.
template <class Tr>
__device__ __forceinline__ void write_zero_rows(const FusedParams& p, const CtaWork& w) {
  using Elem = typename Tr::Elem;
  constexpr int D = Tr::kHeadDim, kCpr = Tr::kChunksPerRow;
  Elem* o = static_cast<Elem*>(p.out) + out_offset(p.layout, w.row0, w.head, 0, p.num_heads, D, p.num_tokens);
  const std::int64_t stride = w.row_step * p.num_heads * D;
  const int q0 = w.m_block * Tr::kBlockM;
  for (int i = static_cast<int>(threadIdx.x); i < Tr::kBlockM * kCpr; i += Tr::kThreads) {
    const int r = i / kCpr, ch = i % kCpr;
    if (q0 + r < w.rows) *reinterpret_cast<uint4*>(o + (q0 + r) * stride + ch * 8) = make_uint4(0, 0, 0, 0);
  }
}

// This CTA's next item with work (ItemIter order); items of sequences without valid keys are written
// as zeros on the way. Called by every thread (warp-collective schedule).
template <class Tr>
__device__ __forceinline__ bool next_work(const FusedParams& p, ItemIter& items, CtaWork& w) {
  const std::int64_t num_items =
      p.tile_slots * p.num_heads * (p.mask == MaskMode::varlen ? 1 : static_cast<std::int64_t>(p.batch));
  for (;;) {
    const std::int64_t item = items.next();
    if (item >= num_items) return false;
    if (!resolve_cta_work<Tr::kBlockM>(p, item, w)) continue;
    if (w.keys > 0) return true;
    write_zero_rows<Tr>(p, w);
  }
}

}  // namespace qkv2ctx::fused_sm80
