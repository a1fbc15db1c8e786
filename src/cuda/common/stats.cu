// StatsBlock reset / device cu_seqlens check / read-back. See stats.hpp.
#include <algorithm>
#include <string>

#include "cuda/common/cu_seqlens_check.cuh"
#include "cuda/common/cuda_check.hpp"
#include "cuda/common/stats.hpp"
#include "qkv2ctx/error.hpp"

namespace qkv2ctx::cuda {
namespace {

constexpr int kResolveThreads = 256;
constexpr unsigned long long kNoError = ~0ull;

// One block: every thread checks and clamps a strided set of sequences; the lowest failing index
// (encoded as b * 8 + reason, so the minimum is the first violation) is reported by thread 0.
__global__ void __launch_bounds__(kResolveThreads)
resolve_cu_seqlens_kernel(const std::int32_t* __restrict__ cu, int batch, int max_seqlen,
                          std::int64_t num_tokens, SeqRange* __restrict__ ranges,
                          StatsBlock* __restrict__ stats) {
  __shared__ unsigned long long first_bad;
  if (threadIdx.x == 0) first_bad = kNoError;
  __syncthreads();
  // Ranges are int32 (cu_seqlens are int32): clamp the token count into that range as well.
  const std::int64_t tokens = num_tokens < 0x7fffffff ? num_tokens : 0x7fffffff;
  if (batch == 0 && threadIdx.x == 0 && cu[0] != 0)
    atomicMin(&first_bad, static_cast<unsigned long long>(CuSeqlensError::first_not_zero));
  for (int b = threadIdx.x; b < batch; b += blockDim.x) {
    const std::int64_t c0 = cu[b], c1 = cu[b + 1];
    const unsigned reason = cu_seqlens_violation(b, batch, c0, c1, max_seqlen, num_tokens);
    if (reason != 0) atomicMin(&first_bad, (static_cast<unsigned long long>(b) << 3) | reason);
    // Clamped so that rows [begin, begin + len) always lie inside qkv/out, whatever cu_seqlens hold.
    const std::int64_t begin = c0 < 0 ? 0 : (c0 > tokens ? tokens : c0);
    const std::int64_t end = c1 < begin ? begin : (c1 > tokens ? tokens : c1);
    const std::int64_t len = end - begin < max_seqlen ? end - begin : max_seqlen;
    ranges[b] = SeqRange{static_cast<std::int32_t>(begin), static_cast<std::int32_t>(len)};
  }
  __syncthreads();
  if (threadIdx.x == 0 && first_bad != kNoError)
    record_cu_seqlens_error(stats, first_bad, cu, batch, max_seqlen, num_tokens);
}

std::string describe_bad_cu_seqlens(const StatsBlock& s) {
  const auto reason = static_cast<CuSeqlensError>(s.error_detail[0] >> 32);
  const std::string b = std::to_string(s.error_detail[0] & 0xffffffffull);
  const std::string b1 = std::to_string((s.error_detail[0] & 0xffffffffull) + 1);
  const auto c0 = static_cast<std::int64_t>(s.error_detail[1]);
  const auto c1 = static_cast<std::int64_t>(s.error_detail[2]);
  const auto limit = static_cast<std::int64_t>(s.error_detail[3]);
  std::string what;
  switch (reason) {
    case CuSeqlensError::first_not_zero:
      what = "cu_seqlens[0] = " + std::to_string(c0) + " is not allowed: it must be 0";
      break;
    case CuSeqlensError::decreasing:
      what = "cu_seqlens must be non-decreasing: cu_seqlens[" + b1 + "] = " + std::to_string(c1) +
             " < cu_seqlens[" + b + "] = " + std::to_string(c0);
      break;
    case CuSeqlensError::too_long:
      what = "sequence " + b + " has length " + std::to_string(c1 - c0) + " > max_seqlen = " +
             std::to_string(limit) + " (cu_seqlens[" + b + "] = " + std::to_string(c0) +
             ", cu_seqlens[" + b1 + "] = " + std::to_string(c1) + ")";
      break;
    case CuSeqlensError::past_tokens:
      what = "cu_seqlens[B] = cu_seqlens[" + b1 + "] = " + std::to_string(c1) + " exceeds the " +
             std::to_string(limit) + " token rows of qkv";
      break;
    default:
      what = "unknown cu_seqlens check " + std::to_string(static_cast<unsigned>(reason));
  }
  return "invalid device cu_seqlens, found by the GPU-side check of the last run (its output is "
         "undefined; lengths were clamped so nothing was accessed out of bounds): " + what;
}

}  // namespace

void reset_stats(StatsBlock* stats, cudaStream_t stream) {
  QKV2CTX_CUDA_CHECK(cudaMemsetAsync(stats, 0, kStatsBytes, stream));
}

void resolve_cu_seqlens(const std::int32_t* cu_seqlens, int batch, int max_seqlen,
                        std::int64_t num_tokens, SeqRange* ranges, StatsBlock* stats,
                        cudaStream_t stream) {
  resolve_cu_seqlens_kernel<<<1, kResolveThreads, 0, stream>>>(cu_seqlens, batch, max_seqlen,
                                                                num_tokens, ranges, stats);
  QKV2CTX_CHECK_LAUNCH("resolve_cu_seqlens_kernel");
}

RunStats read_stats(const void* workspace, cudaStream_t stream) {
  StatsBlock s{};
  QKV2CTX_CUDA_CHECK(cudaMemcpyAsync(&s, workspace, sizeof(s), cudaMemcpyDeviceToHost, stream));
  QKV2CTX_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (s.error_flags & kErrorBadCuSeqlens) throw Error(ErrorCode::invalid_argument, describe_bad_cu_seqlens(s));
  if (s.error_flags != 0)
    throw Error(ErrorCode::internal, "the last run set unknown device error flags " + std::to_string(s.error_flags));
  RunStats r;
  r.fixed_bound_underflow_rows = static_cast<std::int64_t>(s.fixed_bound_underflow_rows);
  r.fixed_bound_overflow_rows = static_cast<std::int64_t>(s.fixed_bound_overflow_rows);
  r.repaired_rows = static_cast<std::int64_t>(s.repaired_rows);
  return r;
}

}  // namespace qkv2ctx::cuda
