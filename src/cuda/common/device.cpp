// CUDA error reporting and device queries.
#include <cuda_runtime.h>

#include <sstream>

#include "core/backend.hpp"
#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device.hpp"

namespace qkv2ctx::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  std::ostringstream os;
  os << "CUDA error " << cudaGetErrorName(err) << " (" << cudaGetErrorString(err) << ") in " << call
     << " at " << file << ":" << line;
  throw Error(ErrorCode::cuda_error, os.str());
}

void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line) {
  std::ostringstream os;
  os << "cuBLAS error " << static_cast<int>(st) << " in " << call << " at " << file << ":" << line;
  throw Error(ErrorCode::cuda_error, os.str());
}

DeviceCaps query_device(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    count = 0;
  }
  if (device < 0 || device >= count)
    throw Error(ErrorCode::invalid_argument, "CUDA device " + std::to_string(device) +
                                                 " does not exist (" + std::to_string(count) + " found)");
  cudaDeviceProp p{};
  QKV2CTX_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  DeviceCaps c;
  c.device = device;
  c.sm = p.major * 10 + p.minor;
  c.num_sms = p.multiProcessorCount;
  c.max_smem_optin = static_cast<int>(p.sharedMemPerBlockOptin);
  c.l2_bytes = p.l2CacheSize;
  c.name = p.name;
  return c;
}

bool device_exists(int device, std::string* why_not) {
  const int count = cuda_device_count();
  if (device >= 0 && device < count) return true;
  *why_not = "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " found)";
  return false;
}

}  // namespace qkv2ctx::cuda

namespace qkv2ctx {

bool cuda_built() { return true; }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: not an error for dispatch
    return 0;
  }
  return count;
}

std::string cuda_device_summary() {
  std::ostringstream os;
  for (int d = 0; d < cuda_device_count(); ++d) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
    os << "cuda:" << d << " " << p.name << " sm_" << p.major << p.minor << " " << p.multiProcessorCount
       << " SMs " << (p.totalGlobalMem >> 20) << " MiB\n";
  }
  return os.str();
}

}  // namespace qkv2ctx
