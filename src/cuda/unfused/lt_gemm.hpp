// Strided-batched GEMMs through cuBLASLt (column-major notation, as cuBLAS): descriptors and the
// heuristic's algorithm are prepared once per shape and cached, so run() only enqueues.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace qkv2ctx::cuda {

// D = op(A) * op(B) for `batch` matrices, alpha = 1, beta = 0 (C is D). Layouts describe matrices as
// stored: A is (op_a == N ? m x k : k x m) with leading dimension lda, and so on.
struct GemmShape {
  cudaDataType_t a_type = CUDA_R_32F, b_type = CUDA_R_32F, d_type = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cublasOperation_t op_a = CUBLAS_OP_N, op_b = CUBLAS_OP_N;
  std::int64_t m = 0, n = 0, k = 0;
  std::int64_t lda = 0, ldb = 0, ldd = 0;
  std::int64_t stride_a = 0, stride_b = 0, stride_d = 0;  // elements between batch entries
  std::int64_t batch = 1;

  std::string describe() const;
};

class LtGemmRunner {
 public:
  // Creates the cuBLASLt handle on the current device. `workspace_bytes` is the scratch each run()
  // passes (a slice of the plan's workspace).
  explicit LtGemmRunner(std::size_t workspace_bytes);
  ~LtGemmRunner();
  LtGemmRunner(const LtGemmRunner&) = delete;
  LtGemmRunner& operator=(const LtGemmRunner&) = delete;

  // Whether cuBLASLt's heuristic offers an algorithm for this GEMM on the current device.
  bool supported(const GemmShape& shape);
  // Enqueues the GEMM on `stream`; throws Error(unsupported) when cuBLASLt has no algorithm for it.
  // Thread-safe: plans may run concurrently on different streams.
  void run(const GemmShape& shape, const void* A, const void* B, void* D, void* workspace,
           cudaStream_t stream);

  std::size_t workspace_bytes() const { return workspace_bytes_; }

 private:
  struct Prepared;
  using Key = std::array<std::int64_t, 16>;
  // Shared so that a cache flush by one thread never frees what another is using.
  std::shared_ptr<const Prepared> prepare(const GemmShape& shape);

  cublasLtHandle_t handle_ = nullptr;
  std::size_t workspace_bytes_;
  std::mutex mutex_;
  std::map<Key, std::shared_ptr<const Prepared>> cache_;
};

}  // namespace qkv2ctx::cuda
