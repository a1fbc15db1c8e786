// The attention descriptor: one plain value that says what op to run. Validated once, by validate().
#pragma once
#include <string>

#include "qkv2ctx/types.hpp"

namespace qkv2ctx {

// INT8 quantization scales (real = int8 * scale), SPEC 5.0.
struct Int8Scales {
  float qkv_scale = 1.0f;           // s_qkv: amax(QKV) / 127
  float ctx_scale = 1.0f;           // s_ctx: amax(context) / 127
  float dq_probs = 1.0f / 127.0f;   // probability dequantization scale: amax(probs) / 127
};

struct AttentionDesc {
  DType dtype = DType::fp16;            // fp32, fp16, bf16 or int8 (QKV and context share it)
  int num_heads = 12;                   // N
  int head_size = 64;                   // H (also D); E = N * H
  Layout layout = Layout::trt;
  MaskMode mask = MaskMode::none;
  BoundMode bound = BoundMode::row_max; // INT8 only (must stay row_max otherwise)
  ProbsMode probs = ProbsMode::trt;     // INT8 only: how probabilities are quantized (types.hpp)
  Int8Scales int8{};                    // INT8 only
  // Head size used in the softmax scale 1/sqrt(H_eff); 0 means head_size. TensorRT compatibility:
  // plugin v2 var-seqlen pads H < 64 to 32/64 and v3 hard-codes 64 (SPEC 5.3, 7.7).
  int scale_head_size = 0;

  int hidden_size() const { return num_heads * head_size; }
  int effective_scale_head_size() const { return scale_head_size > 0 ? scale_head_size : head_size; }
};

// Checks every field; throws Error(invalid_argument) naming the field, its value and what is allowed.
void validate(const AttentionDesc& desc);

// One-line human description, e.g. "int8 N=12 H=64 layout=trt mask=varlen bound=guarded s_qkv=...".
std::string describe(const AttentionDesc& desc);

}  // namespace qkv2ctx
