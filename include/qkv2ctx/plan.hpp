// Plan, then run (as cuBLASLt/cuDNN): make_plan() validates the descriptor, picks a backend and a
// kernel for the device present and says which and why; Plan::run() checks sizes and pointers
// cheaply, allocates nothing and never synchronizes the host.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "qkv2ctx/descriptor.hpp"
#include "qkv2ctx/tensor.hpp"

namespace qkv2ctx {

enum class Backend : std::uint8_t {
  automatic,     // fastest backend for the descriptor on the device present (CPU if there is no GPU)
  cpu,           // reference: double precision for float types, exact INT8 emulation
  cuda_unfused,  // cuBLASLt GEMMs + softmax kernels (TensorRT's fallback design)
  cuda_fused,    // fused flash-style kernels (the fast path)
};
std::string_view to_string(Backend b);
std::optional<Backend> parse_backend(std::string_view s);  // auto | cpu | cuda-unfused | cuda-fused

struct PlanOptions {
  Backend backend = Backend::automatic;
  int cuda_device = 0;  // CUDA device ordinal for CUDA backends
};

// The tensors of one call. Shapes (E = num_heads * head_size):
//   mask none/lengths, layout trt: qkv [S, B, 3E], out [S, B, E]      (TensorRT fixed-length mode)
//   mask none/lengths, layout hf:  qkv [B, S, 3E], out [B, S, E]
//   mask varlen, layout trt/hf:    qkv [T, 3E],    out [T, E]          (T >= cu_seqlens[B])
//   mask varlen, layout chw32:     qkv [3E/32, T, 32], out [E/32, T, 32] (INT8 only)
//   seq_lens:   int32 [B]     (mask lengths; values are clamped to [0, S], 0 gives a zero context)
//   cu_seqlens: int32 [B + 1] (mask varlen; non-decreasing, cu_seqlens[0] = 0, cu_seqlens[B] <= T)
// seq_lens / cu_seqlens live in the same memory space as qkv.
struct AttentionArgs {
  TensorView qkv;
  TensorView out;
  TensorView seq_lens;
  TensorView cu_seqlens;
  int max_seqlen = 0;  // varlen: host-side upper bound of every length (no device sync needed)
};

struct Workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

// Counters a run leaves in its workspace (INT8 bound modes). Read with Plan::read_stats().
struct RunStats {
  std::int64_t fixed_bound_underflow_rows = 0;  // rows whose fixed-bound exponential sum underflowed
  std::int64_t fixed_bound_overflow_rows = 0;   // rows whose fixed-bound exponentials overflowed
  std::int64_t repaired_rows = 0;               // guarded: rows recomputed with their row maximum
};

// Run-time sizes a workspace must cover.
struct ProblemSize {
  int batch = 0;
  int max_seqlen = 0;
  std::int64_t num_tokens = 0;  // rows of the qkv tensor (B*S when padded)
};

class BackendImpl;

class Plan {
 public:
  Plan(Plan&&) noexcept;
  Plan& operator=(Plan&&) noexcept;
  ~Plan();

  const AttentionDesc& desc() const;
  Backend backend() const;
  MemSpace memory_space() const;  // where run() expects tensors and workspace
  // What runs and why: backend, kernel, and why faster choices were declined.
  std::string describe() const;

  std::size_t workspace_bytes(const ProblemSize& size) const;
  ProblemSize problem_size(const AttentionArgs& args) const;  // from the tensors' shapes

  // stream is a cudaStream_t for CUDA backends (nullptr = default stream); ignored on CPU.
  void run(const AttentionArgs& args, const Workspace& workspace, void* stream = nullptr) const;
  // Counters of the last run on this workspace (synchronizes the stream on CUDA backends).
  RunStats read_stats(const Workspace& workspace, void* stream = nullptr) const;

 private:
  friend Plan make_plan(const AttentionDesc&, const PlanOptions&);
  Plan(AttentionDesc desc, std::unique_ptr<BackendImpl> impl);
  AttentionDesc desc_;
  std::unique_ptr<BackendImpl> impl_;
};

Plan make_plan(const AttentionDesc& desc, const PlanOptions& options = {});

// What this build and machine offer (CLI `info`).
struct SystemInfo {
  std::string version;
  bool cuda_built = false;
  int cuda_device_count = 0;
  std::string cuda_devices;  // one line per device: name, SM, memory
};
SystemInfo system_info();

}  // namespace qkv2ctx
