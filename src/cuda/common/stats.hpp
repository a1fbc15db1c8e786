// The StatsBlock at the start of every CUDA workspace: reset at the start of each run, device-side
// input checks (cu_seqlens), and reading it back (the only host synchronization, on request).
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "core/backend.hpp"
#include "cuda/common/seq_table.hpp"

namespace qkv2ctx::cuda {

// Zeroes the StatsBlock (stream-ordered).
void reset_stats(StatsBlock* stats, cudaStream_t stream);

// Checks device cu_seqlens[0..batch] (cu_seqlens[0] == 0, lengths >= 0 and <= max_seqlen,
// cu_seqlens[batch] <= num_tokens) and writes ranges[0..batch) clamped into [0, num_tokens) with
// len <= max_seqlen. The first violation (lowest sequence index) sets kErrorBadCuSeqlens and its
// details in the StatsBlock. One small kernel; no host synchronization.
void resolve_cu_seqlens(const std::int32_t* cu_seqlens, int batch, int max_seqlen,
                        std::int64_t num_tokens, SeqRange* ranges, StatsBlock* stats,
                        cudaStream_t stream);

// Copies the StatsBlock back (synchronizes `stream`), throws Error(invalid_argument) describing the
// bad input if a device-side check failed during the run, else returns the counters.
RunStats read_stats(const void* workspace, cudaStream_t stream);

// Reasons stored in StatsBlock::error_detail[0] (high 32 bits; low 32 bits: sequence index) when
// kErrorBadCuSeqlens is set. error_detail[1..3]: the values involved (see stats.cu).
enum class CuSeqlensError : std::uint32_t {
  first_not_zero = 1,  // cu_seqlens[0] != 0
  decreasing = 2,      // cu_seqlens[b + 1] < cu_seqlens[b]
  too_long = 3,        // cu_seqlens[b + 1] - cu_seqlens[b] > max_seqlen
  past_tokens = 4,     // cu_seqlens[batch] > num_tokens
};

}  // namespace qkv2ctx::cuda
