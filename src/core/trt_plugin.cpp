// Plugin state -> AttentionDesc (SPEC §3, §5.0, §5.3, R9) and output shapes (SPEC §9 item 9).
#include <cmath>
#include <vector>

#include "core/trt_internal.hpp"

namespace qkv2ctx::trt {
namespace {

using detail::reject;

// Kernel sequence length TensorRT's v2 var-seqlen enqueue picks from maxS (SPEC §5.2).
int v2_kernel_seqlen(int type_id, int max_seqlen) {
  const bool fp16 = type_id == 1;
  if (fp16 && max_seqlen <= 64) return 64;
  if (fp16 && max_seqlen <= 96) return 96;
  if (max_seqlen <= 128) return 128;
  if (max_seqlen <= 192) return fp16 ? 256 : 192;  // no FP16 S = 192 kernel
  if (max_seqlen <= 256) return 256;
  if (max_seqlen <= 384) return 384;
  return 512;
}

// Head size in TensorRT's softmax scale 1/sqrt(D) (SPEC §5.3, §7 item 7): v3 hard-codes 1/8; v2
// var-seqlen pads H < 64 to D = 32 when H <= 32 and the kernel S has a D = 32 variant on the SM
// (only SM 75/80/86/89 have any, at kernel S 128, 256, 512), else to D = 64. Other modes use H.
int trt_scale_head_size(const PluginState& s, const CompatOptions& o) {
  const int legacy = legacy_version(s.version);
  const int h = s.head_size();
  if (legacy == 3) return 64;
  if (legacy != 2 || !s.var_seqlen || h >= 64) return h;
  if (h > 32) return 64;
  const bool sm_has_d32_kernels = s.sm == 75 || s.sm == 80 || s.sm == 86 || s.sm == 89;
  if (!sm_has_d32_kernels) return 64;
  if (o.max_seqlen <= 0)
    throw Error(
        ErrorCode::unsupported,
        detail::plugin_prefix(s.version) + ": padded_head_size_scale with head size " +
            std::to_string(h) + " on SM " + std::to_string(s.sm) +
            " depends on the max sequence length of each call (TensorRT uses 1/sqrt(32) "
            "when the kernel S is 128, 256 or 512, else 1/8): set CompatOptions.max_seqlen");
  if (o.max_seqlen > 512)
    throw Error(ErrorCode::unsupported,
                detail::plugin_prefix(s.version) +
                    ": padded_head_size_scale with max_seqlen = " + std::to_string(o.max_seqlen) +
                    ": TensorRT has no var-seqlen kernel above 512 (it aborts), so there is no "
                    "padded scale to reproduce");
  const int kernel_s = v2_kernel_seqlen(s.type_id, o.max_seqlen);
  return (kernel_s == 128 || kernel_s == 256 || kernel_s == 512) ? 32 : 64;
}

void check_tensor_scale(int version, const char* what, float v) {
  if (!std::isfinite(v) || !(v > 0.0f))
    reject(version, what, detail::format_float(v),
           "finite and > 0: INT8 needs the tensor's quantization scale (dynamic range / 127; "
           "TensorRT passes -1 when it has none)");
}

}  // namespace

AttentionDesc to_descriptor(const PluginState& s, const TensorScales& scales,
                            const CompatOptions& options) {
  validate_state(s);
  const int v = s.version;
  const int legacy = legacy_version(v);
  AttentionDesc d;
  static constexpr DType kTypeIds[] = {DType::fp32, DType::fp16, DType::int8};
  d.dtype = kTypeIds[s.type_id];  // v3/v6 states always hold type_id 2
  d.num_heads = s.num_heads;
  d.head_size = s.head_size();
  d.layout = legacy == 3 ? Layout::chw32 : Layout::trt;
  if (s.var_seqlen)
    d.mask = MaskMode::varlen;  // always for v3/v6
  else
    d.mask = s.has_mask ? MaskMode::lengths : MaskMode::none;

  if (d.dtype == DType::int8) {
    if (legacy == 3 && s.use_explicit_int8) {
      d.int8.qkv_scale = s.input_qkv_scale;
      d.int8.ctx_scale = s.output_ctx_scale;
    } else {
      check_tensor_scale(v, "input 0 (QKV) tensor scale", scales.qkv_scale);
      check_tensor_scale(v, "output 0 (context) tensor scale", scales.ctx_scale);
      d.int8.qkv_scale = scales.qkv_scale;
      d.int8.ctx_scale = scales.ctx_scale;
    }
    d.int8.dq_probs = s.dq_probs;
    switch (options.scale_max_mode) {
      case BoundMode::row_max:
      case BoundMode::fixed_bound:
      case BoundMode::guarded:
        break;
      default:
        reject(v, "CompatOptions.scale_max_mode",
               std::to_string(static_cast<int>(options.scale_max_mode)),
               "guarded, fixed_bound or row_max");
    }
    const bool scale_max = legacy == 1 ? options.v1_int8_scale_max : s.use_int8_scale_max;
    d.bound = scale_max ? options.scale_max_mode : BoundMode::row_max;
  }

  if (options.padded_head_size_scale) {
    const int scale_h = trt_scale_head_size(s, options);
    if (scale_h != d.head_size) d.scale_head_size = scale_h;
  }

  try {
    validate(d);
  } catch (const Error& e) {
    // A configuration TensorRT accepts at creation but qkv2ctx cannot run (e.g. head size > 256):
    // say which plugin fields lead there.
    throw Error(e.code(), detail::plugin_prefix(v) +
                              " (hidden_size = " + std::to_string(s.hidden_size) +
                              ", num_heads = " + std::to_string(s.num_heads) +
                              ") cannot run in qkv2ctx: " + e.what());
  }
  return d;
}

Dims output_dims(int version, const Dims& qkv, bool var_seqlen) {
  detail::check_version(version);
  const int legacy = legacy_version(version);
  if (legacy == 1 && var_seqlen)
    reject(version, "var_seqlen", "1", "0 (versions 1 and 4 have no var-seqlen mode)");
  // Rank and index of the hidden extent: [S, B, 3E, 1, 1], [T, 3E, 1, 1] or [1, 3E, T, 1].
  const bool packed = legacy == 3 || (legacy == 2 && var_seqlen);
  const int rank = packed ? 4 : 5;
  const int hdim = packed ? 1 : 2;
  const std::string shape =
      legacy == 3 ? "[1, 3E, T, 1]" : (packed ? "[T, 3E, 1, 1]" : "[S, B, 3E, 1, 1]");
  if (qkv.nbDims != rank)
    reject(version, "input 0 (QKV) rank", std::to_string(qkv.nbDims),
           std::to_string(rank) + " (" + shape + ")");
  for (int i = 0; i < rank; ++i)
    if (qkv.d[i] < -1)
      reject(version, "input 0 (QKV) d[" + std::to_string(i) + "]", std::to_string(qkv.d[i]),
             ">= 0, or -1 for a dynamic extent");
  // The unit extents of the layout (TensorRT's format check; v3's CHW32 shape by SPEC §3.4).
  const std::vector<int> unit_dims =
      legacy == 3 ? std::vector<int>{0, 3} : std::vector<int>{hdim + 1, hdim + 2};
  for (int i : unit_dims)
    if (qkv.d[i] != 1)
      reject(version, "input 0 (QKV) d[" + std::to_string(i) + "]", std::to_string(qkv.d[i]),
             "1 (" + shape + ")");
  const std::int64_t h = qkv.d[hdim];
  if (h != -1 && h % 3 != 0)
    reject(version, "input 0 (QKV) d[" + std::to_string(hdim) + "]", std::to_string(h),
           "a multiple of 3 (3 * hidden_size)");
  Dims out = qkv;
  out.d[hdim] = h == -1 ? -1 : h / 3;
  return out;
}

Dims output_dims(const PluginState& s, const Dims& qkv) {
  validate_state(s);
  const int legacy = legacy_version(s.version);
  const Dims out = output_dims(s.version, qkv, legacy == 2 && s.var_seqlen);
  const int hdim = (legacy == 3 || s.var_seqlen) ? 1 : 2;
  if (qkv.d[hdim] != -1 && qkv.d[hdim] != 3 * static_cast<std::int64_t>(s.hidden_size))
    reject(s.version, "input 0 (QKV) d[" + std::to_string(hdim) + "]", std::to_string(qkv.d[hdim]),
           "3 * hidden_size = " + std::to_string(3 * static_cast<std::int64_t>(s.hidden_size)));
  return out;
}

}  // namespace qkv2ctx::trt
