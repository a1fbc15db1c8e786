// Per-sequence row ranges as every CUDA kernel sees them. Padded modes derive them from the batch
// index (and clamped seq_lens); varlen reads a table that resolve_cu_seqlens() builds on the device
// from the user's cu_seqlens, clamped so that even invalid cu_seqlens can never send a kernel out of
// bounds (the invalid input itself is reported through the StatsBlock, see stats.hpp).
#pragma once
#include <cstdint>

#include "core/indexing.hpp"
#include "qkv2ctx/types.hpp"

namespace qkv2ctx::cuda {

// Varlen sequence b: token rows [begin, begin + len), with 0 <= begin, begin + len <= T, len <= S.
struct SeqRange {
  std::int32_t begin;
  std::int32_t len;
};

struct SeqTable {
  MaskMode mask = MaskMode::none;
  Layout layout = Layout::trt;
  int batch = 0;
  int S = 0;                                  // padded length, or the varlen host upper bound
  const std::int32_t* seq_lens = nullptr;     // mask lengths (device); clamped by seq_span
  const SeqRange* ranges = nullptr;           // mask varlen: the resolved, clamped table (device)

  QKV2CTX_HD SeqSpan span(int b) const {
    if (mask == MaskMode::varlen) {
      const SeqRange r = ranges[b];
      return {r.begin, 1, r.len, r.len};
    }
    return seq_span(mask, layout, b, batch, S, seq_lens, nullptr);
  }
};

}  // namespace qkv2ctx::cuda
