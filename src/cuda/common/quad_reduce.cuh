// Reductions over the 4 lanes (q = lane % 4) that hold one row of an mma.sync accumulator fragment:
// shared by the FP16/BF16 and INT8 fused families.
#pragma once

namespace qkv2ctx::cuda {

__device__ __forceinline__ int quad_max(int v) {
  v = max(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return max(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

}  // namespace qkv2ctx::cuda
