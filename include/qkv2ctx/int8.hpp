// INT8 scale math (SPEC 5.0), in exactly one place. The device kernels and the CPU reference take
// their constants from here (qkv2ctx/detail/int8_math.hpp holds the per-element rounding helpers).
#pragma once
#include "qkv2ctx/descriptor.hpp"

namespace qkv2ctx {

struct Int8Derived {
  float scale_bmm1 = 0;     // s_qkv * s_qkv * (1 / sqrt(H_eff)), FP32
  float scale_softmax = 0;  // 1 / dq_probs
  float scale_bmm2 = 0;     // dq_probs * s_qkv / s_ctx
  float fixed_bound = 0;    // p_max = scale_bmm1 * 16129 (127^2): the use_int8_scale_max shift
  // probs=max_relative: O = sat8(RNE(float(acc2) * (max_relative_scale * (1 / row_sum)))), with
  // max_relative_scale = (s_qkv / s_ctx) * (1 / 127): Pi8 = RNE(127 e) carries the factor 127.
  float max_relative_scale = 0;
  bool enable_i2f_trick = false;  // scale_bmm2 >= 2^-15 (evaluated in double as TensorRT does)
  // True when the fixed bound zeroes every row whose largest logit is <= 0 (p_max > 87.34,
  // SPEC 5.0.1); the plan warns about it.
  bool fixed_bound_underflow_likely = false;
};

// Validates the scales (finite, > 0) and derives the kernel constants exactly as TensorRT does:
// FP32 arithmetic on the host, rsqrt(H_eff) computed as 1.0f / std::sqrt(float(H_eff)).
Int8Derived derive_int8_scales(const Int8Scales& scales, int scale_head_size);

}  // namespace qkv2ctx
