// Internal interface between the dispatcher and the backends. Backends receive already-validated
// descriptors and arguments (RunParams) and never re-validate.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "qkv2ctx/plan.hpp"

namespace qkv2ctx {

// Validated, resolved arguments of one run.
struct RunParams {
  const AttentionDesc* desc = nullptr;
  const void* qkv = nullptr;
  void* out = nullptr;
  const std::int32_t* seq_lens = nullptr;    // lengths mode: [batch]
  const std::int32_t* cu_seqlens = nullptr;  // varlen mode: [batch + 1]
  int batch = 0;
  int max_seqlen = 0;           // S (padded) or the host upper bound (varlen)
  std::int64_t num_tokens = 0;  // rows of qkv/out (T); B*S when padded
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  void* stream = nullptr;       // cudaStream_t
};

// Counters at the start of every workspace (backends reserve kStatsBytes there). Layout shared by
// host and device code.
struct StatsBlock {
  unsigned long long fixed_bound_underflow_rows;
  unsigned long long fixed_bound_overflow_rows;
  unsigned long long repaired_rows;
  unsigned long long error_flags;  // device-side input checks (e.g. bad cu_seqlens), see kError*
  unsigned long long error_detail[4];
};
inline constexpr std::size_t kStatsBytes = 256;
static_assert(sizeof(StatsBlock) <= kStatsBytes);
inline constexpr unsigned long long kErrorBadCuSeqlens = 1ull << 0;

class BackendImpl {
 public:
  virtual ~BackendImpl() = default;
  virtual Backend kind() const = 0;
  virtual MemSpace memory_space() const = 0;
  virtual std::string describe() const = 0;
  // Total bytes, kStatsBytes included.
  virtual std::size_t workspace_bytes(const ProblemSize& size) const = 0;
  virtual void run(const RunParams& params) const = 0;
  virtual RunStats read_stats(const Workspace& workspace, void* stream) const = 0;

  // Filled by the dispatcher: why faster backends were declined.
  std::string dispatch_notes;
};

std::unique_ptr<BackendImpl> make_cpu_backend(const AttentionDesc& desc);

// CUDA backends: return nullptr and set *why_not when this build, device or combination cannot run
// the descriptor. Defined in src/cuda/ (or src/core/cuda_stubs.cpp when built without CUDA).
std::unique_ptr<BackendImpl> make_cuda_unfused_backend(const AttentionDesc& desc, int device,
                                                       std::string* why_not);
std::unique_ptr<BackendImpl> make_cuda_fused_backend(const AttentionDesc& desc, int device,
                                                     std::string* why_not);
bool cuda_built();
int cuda_device_count();           // 0 when built without CUDA or no device/driver
std::string cuda_device_summary(); // one line per device

}  // namespace qkv2ctx
