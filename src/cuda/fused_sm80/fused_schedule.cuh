// Which (sequence, head, query tile) a CTA computes, and where that sequence's rows live. Padded modes
// decode the CTA index directly; varlen maps a tile slot to its sequence with a 32-way search over
// cu_seqlens (no device scan, no extra launch). Indices taken from cu_seqlens are clamped to [0, T]
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

// Returns false when this CTA has no work (a surplus varlen slot). Uniform across the CTA (every warp
// computes the same answer, so no barrier is needed).
template <int kBlockM>
__device__ __forceinline__ bool resolve_cta_work(const FusedParams& p, CtaWork& w) {
  const std::int64_t cta = blockIdx.x;
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

}  // namespace qkv2ctx::fused_sm80
