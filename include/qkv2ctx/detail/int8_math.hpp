// Per-element INT8 numerics shared by the CPU reference and every GPU kernel (SPEC 5.0 steps 2-8).
// One definition of the constants and rounding rules, usable from host and device code.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define QKV2CTX_HD __host__ __device__ __forceinline__
#else
#define QKV2CTX_HD inline
#endif

namespace qkv2ctx::int8_math {

// p_max = scale_bmm1 * 127^2 (SPEC 5.0 step 3).
inline constexpr float kFixedBoundFactor = 16129.0f;
// probs=max_relative: Pi8 = RNE(kMaxRelativeLevels * exp(x - row_max)), the full positive INT8 range.
inline constexpr float kMaxRelativeLevels = 127.0f;
// __expf(x) is ex2.approx(x * log2(e)); the product is rounded to FP32 first.
inline constexpr float kLog2e = 1.4426950408889634f;
// guarded mode: a row whose fixed-bound exponential sum is below this (or not finite) is recomputed
// with its true row maximum. Why 2^-100: a key can only reach P >= 1 if p >= dq_probs / 2; with
// sum >= 2^-100 such a key has e = p * sum >= dq_probs * 2^-101, which stays a normal FP32 number
// (>= 2^-126, so it survives flush-to-zero with full precision) for any dq_probs >= 2^-25.
inline constexpr float kGuardedMinRowSum = 0x1p-100f;

// cvt.rni.sat.s8.f32: round to nearest even, saturate to [-128, 127], NaN -> 0.
QKV2CTX_HD std::int32_t sat8_rne(float x) {
#if defined(__CUDA_ARCH__)
  int r = __float2int_rn(x);  // cvt.rni.s32.f32: NaN -> 0, saturates to int32
  return r < -128 ? -128 : (r > 127 ? 127 : r);
#else
  if (std::isnan(x)) return 0;
  if (x <= -128.0f) return -128;
  if (x >= 127.0f) return 127;
  return static_cast<std::int32_t>(std::nearbyint(x));  // default rounding mode: ties to even
#endif
}

// Host emulation of __expf with flush-to-zero (the fast-math exp the INT8 kernels use):
// 2^(x*log2e) rounded to FP32, 0 below 2^-126, +inf from 2^128 on.
inline float fast_exp_ftz_host(float x) {
  const float y = x * kLog2e;
  if (std::isnan(y)) return y;
  if (y >= 128.0f) return std::numeric_limits<float>::infinity();
  const float r = static_cast<float>(std::exp2(static_cast<double>(y)));
  return r < std::numeric_limits<float>::min() ? 0.0f : r;
}

// SPEC 5.0 step 5: inv = (sum == 0 || sum is NaN) ? 1 : 1 / sum.
QKV2CTX_HD float inverse_row_sum(float sum) {
  return (sum == 0.0f || sum != sum) ? 1.0f : 1.0f / sum;
}

// guarded: does this fixed-bound row need recomputing with its row maximum?
QKV2CTX_HD bool guarded_row_needs_repair(float sum) {
  return !(sum >= kGuardedMinRowSum) || sum > 0x1.fffffep127f;  // below the threshold, NaN, or +inf
}

}  // namespace qkv2ctx::int8_math
