// Device versions of the INT8 per-element steps whose host emulation lives in
// qkv2ctx/detail/int8_math.hpp. Every product is an explicit __fmul_rn so the compiler cannot fuse
// it into an FMA with a neighbouring add: the CPU reference rounds each step separately.
#pragma once
#include <cstdint>

#include "qkv2ctx/detail/int8_math.hpp"

namespace qkv2ctx::cuda {

// ex2.approx.ftz.f32: what __expf compiles to under fast math; subnormal results flush to +0,
// 2^y overflows to +inf for y >= 128.
__device__ __forceinline__ float ex2_approx_ftz(float y) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(y));
  return r;
}

// Device equivalent of int8_math::fast_exp_ftz_host: 2^(x * log2e), the product rounded to FP32.
__device__ __forceinline__ float fast_exp_ftz(float x) {
  return ex2_approx_ftz(__fmul_rn(x, int8_math::kLog2e));
}

// SPEC 5.0 step 2: logit = float(acc1) * scale_bmm1 (exact int -> float conversion, one rounding).
__device__ __forceinline__ float int8_logit(std::int32_t acc1, float scale_bmm1) {
  return __fmul_rn(__int2float_rn(acc1), scale_bmm1);
}

// SPEC 5.0 steps 5-6: Pi8 = sat8(RNE((e * inv) * scale_softmax)).
__device__ __forceinline__ std::int32_t int8_probability(float e, float inv_sum, float scale_softmax) {
  return int8_math::sat8_rne(__fmul_rn(__fmul_rn(e, inv_sum), scale_softmax));
}

// SPEC 5.0 step 8: O = sat8(RNE(float(acc2) * scale_bmm2)), converting exactly (no i2f trick).
__device__ __forceinline__ std::int32_t int8_requantize(std::int32_t acc2, float scale_bmm2) {
  return int8_math::sat8_rne(__fmul_rn(__int2float_rn(acc2), scale_bmm2));
}

}  // namespace qkv2ctx::cuda
