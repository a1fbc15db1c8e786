// Makes a plan's device current for the duration of a call and restores the caller's device after,
// so a plan made for device 1 runs there whatever the calling thread had selected.
#pragma once
#include <cuda_runtime.h>

#include "cuda/common/cuda_check.hpp"

namespace qkv2ctx::cuda {

class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    QKV2CTX_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) QKV2CTX_CUDA_CHECK(cudaSetDevice(device));
    switched_ = previous_ != device;
  }
  ~ScopedDevice() {
    if (switched_) (void)cudaSetDevice(previous_);  // destructors must not throw
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

}  // namespace qkv2ctx::cuda
