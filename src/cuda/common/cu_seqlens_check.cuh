// The device-side cu_seqlens rules (used by stats.cu's resolve kernel too, so cuda::read_stats()
// describes a failure identically), and write_stats_block: the check as a function one CTA of a
// kernel runs inside its own launch: the fused kernels check their input without a separate kernel or memset on
// the stream (at S = 384 those two tiny launches would cost ~10% of a ragged varlen batch).
#pragma once
#include <cstdint>

#include "core/backend.hpp"
#include "cuda/common/stats.hpp"

namespace qkv2ctx::cuda {

// The cu_seqlens rules for sequence b (cu_seqlens[b] = c0, cu_seqlens[b + 1] = c1): 0 if they hold,
// else the first CuSeqlensError that applies. Shared by resolve_cu_seqlens (stats.cu) and
// write_stats_block below, so both report the same violation.
__device__ __forceinline__ unsigned cu_seqlens_violation(int b, int batch, std::int64_t c0, std::int64_t c1,
                                                         int max_seqlen, std::int64_t num_tokens) {
  if (b == 0 && c0 != 0) return static_cast<unsigned>(CuSeqlensError::first_not_zero);
  if (c1 < c0) return static_cast<unsigned>(CuSeqlensError::decreasing);
  if (c1 - c0 > max_seqlen) return static_cast<unsigned>(CuSeqlensError::too_long);
  if (b == batch - 1 && c1 > num_tokens) return static_cast<unsigned>(CuSeqlensError::past_tokens);
  return 0;
}

// Writes the first violation (encoded (b << 3) | reason; the lowest sequence wins) into the
// StatsBlock's error fields: error_detail[0] = reason << 32 | b, [1] = cu[b], [2] = cu[b+1], [3] = the limit.
__device__ __forceinline__ void record_cu_seqlens_error(StatsBlock* stats, unsigned long long first_bad,
                                                        const std::int32_t* cu_seqlens, int batch,
                                                        int max_seqlen, std::int64_t num_tokens) {
  const unsigned long long b = first_bad >> 3, reason = first_bad & 7;
  stats->error_flags = kErrorBadCuSeqlens;
  stats->error_detail[0] = (reason << 32) | b;
  stats->error_detail[1] = static_cast<unsigned long long>(static_cast<std::int64_t>(cu_seqlens[b]));
  stats->error_detail[2] =
      static_cast<unsigned long long>(static_cast<std::int64_t>(batch > 0 ? cu_seqlens[b + 1] : 0));
  stats->error_detail[3] = static_cast<unsigned long long>(
      reason == static_cast<unsigned>(CuSeqlensError::past_tokens) ? num_tokens : max_seqlen);
}

// Called by every thread of exactly one CTA (it has a barrier). Rewrites the whole StatsBlock: the
// row counters to 0 (the FP16/BF16 kernels have none), the error fields to the first violation of
// cu_seqlens[0..batch] if `cu_seqlens` is given, else to "no error".
__device__ __forceinline__ void write_stats_block(StatsBlock* stats, const std::int32_t* cu_seqlens, int batch,
                                                  int max_seqlen, std::int64_t num_tokens) {
  __shared__ unsigned long long first_bad;
  constexpr unsigned long long kNone = ~0ull;
  if (threadIdx.x == 0) first_bad = kNone;
  __syncthreads();
  if (cu_seqlens != nullptr) {
    if (batch == 0 && threadIdx.x == 0 && cu_seqlens[0] != 0)
      atomicMin(&first_bad, static_cast<unsigned long long>(CuSeqlensError::first_not_zero));
    for (int b = threadIdx.x; b < batch; b += blockDim.x) {
      const unsigned reason =
          cu_seqlens_violation(b, batch, cu_seqlens[b], cu_seqlens[b + 1], max_seqlen, num_tokens);
      if (reason != 0) atomicMin(&first_bad, (static_cast<unsigned long long>(b) << 3) | reason);
    }
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  stats->fixed_bound_underflow_rows = 0;
  stats->fixed_bound_overflow_rows = 0;
  stats->repaired_rows = 0;
  if (first_bad == kNone) {
    stats->error_flags = 0;
    for (auto& d : stats->error_detail) d = 0;
    return;
  }
  record_cu_seqlens_error(stats, first_bad, cu_seqlens, batch, max_seqlen, num_tokens);
}

}  // namespace qkv2ctx::cuda
