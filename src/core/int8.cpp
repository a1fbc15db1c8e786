#include <cmath>
#include <string>

#include "qkv2ctx/detail/int8_math.hpp"
#include "qkv2ctx/error.hpp"
#include "qkv2ctx/int8.hpp"

namespace qkv2ctx {
namespace {
void check_scale(const char* name, float v, const char* what) {
  if (!std::isfinite(v) || !(v > 0.0f))
    throw Error(ErrorCode::invalid_argument,
                std::string("int8.") + name + " = " + std::to_string(v) +
                    " is not allowed: it must be finite and > 0 (" + what + ")");
}
}  // namespace

Int8Derived derive_int8_scales(const Int8Scales& s, int scale_head_size) {
  check_scale("qkv_scale", s.qkv_scale, "QKV quantization scale, amax_qkv / 127");
  check_scale("ctx_scale", s.ctx_scale, "context quantization scale, amax_ctx / 127");
  check_scale("dq_probs", s.dq_probs, "probability dequantization scale, default 1/127");
  if (scale_head_size <= 0)
    throw Error(ErrorCode::invalid_argument, "scale head size " + std::to_string(scale_head_size) +
                                                 " is not allowed: it must be > 0");
  Int8Derived d;
  // FP32 host arithmetic in TensorRT's order (SPEC 5.0).
  const float rsqrt_h = 1.0f / std::sqrt(static_cast<float>(scale_head_size));
  d.scale_bmm1 = s.qkv_scale * s.qkv_scale * rsqrt_h;
  d.scale_softmax = 1.0f / s.dq_probs;
  d.scale_bmm2 = s.dq_probs * s.qkv_scale / s.ctx_scale;
  d.fixed_bound = d.scale_bmm1 * int8_math::kFixedBoundFactor;
  d.max_relative_scale = (s.qkv_scale / s.ctx_scale) * (1.0f / int8_math::kMaxRelativeLevels);
  const double two22 = 4194304.0;
  d.enable_i2f_trick = (-two22 * d.scale_bmm2 <= -128.0) && (two22 * d.scale_bmm2 >= 127.0);
  // exp(0 - p_max) flushes to zero once p_max > 126 ln 2 (SPEC 5.0.1).
  d.fixed_bound_underflow_likely = d.fixed_bound > 126.0f * 0.69314718f;
  for (float v : {d.scale_bmm1, d.scale_softmax, d.scale_bmm2, d.fixed_bound, d.max_relative_scale})
    if (!std::isfinite(v) || !(v > 0.0f))
      throw Error(ErrorCode::invalid_argument,
                  "int8 scales qkv_scale=" + std::to_string(s.qkv_scale) + ", ctx_scale=" +
                      std::to_string(s.ctx_scale) + ", dq_probs=" + std::to_string(s.dq_probs) +
                      " give a derived kernel scale that is 0 or not finite in FP32");
  return d;
}

}  // namespace qkv2ctx
