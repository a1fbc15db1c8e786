// Error checking for every CUDA runtime / cuBLAS call and kernel launch: a failure throws
// qkv2ctx::Error(cuda_error) naming the call, the error and the source location.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "qkv2ctx/error.hpp"

namespace qkv2ctx::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line);

}  // namespace qkv2ctx::cuda

#define QKV2CTX_CUDA_CHECK(call)                                                      \
  do {                                                                                \
    cudaError_t qkv2ctx_err_ = (call);                                                \
    if (qkv2ctx_err_ != cudaSuccess)                                                  \
      ::qkv2ctx::cuda::throw_cuda_error(qkv2ctx_err_, #call, __FILE__, __LINE__);     \
  } while (0)

#define QKV2CTX_CUBLAS_CHECK(call)                                                    \
  do {                                                                                \
    cublasStatus_t qkv2ctx_st_ = (call);                                              \
    if (qkv2ctx_st_ != CUBLAS_STATUS_SUCCESS)                                         \
      ::qkv2ctx::cuda::throw_cublas_error(qkv2ctx_st_, #call, __FILE__, __LINE__);    \
  } while (0)

// After every kernel launch: launch-configuration errors surface here (no device sync).
#define QKV2CTX_CHECK_LAUNCH(kernel_name)                                             \
  do {                                                                                \
    cudaError_t qkv2ctx_err_ = cudaGetLastError();                                    \
    if (qkv2ctx_err_ != cudaSuccess)                                                  \
      ::qkv2ctx::cuda::throw_cuda_error(qkv2ctx_err_, "launch " kernel_name, __FILE__, __LINE__); \
  } while (0)
