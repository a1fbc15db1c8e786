// Plain enums that describe the op. Each has to_string()/parse_*() so the CLI, the Python module
// and error messages all spell values the same way.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace qkv2ctx {

enum class DType : std::uint8_t { fp32, fp16, bf16, int8, int32 };

// Where the per-token 3E values sit and how padded batches are ordered.
//  - trt:   per token [N][3][H] (TensorRT plugin v1/v2, SPEC 3.1); padded batches are [S, B] (sequence-major).
//  - hf:    per token [3][N][H] (Hugging Face fused QKV projection); padded batches are [B, S].
//  - chw32: TensorRT plugin v3 INT8 CHW32 (SPEC 3.4): channel c = which*E + n*H + d of token t at
//           (c/32)*T*32 + t*32 + c%32. INT8 and var-seqlen only.
enum class Layout : std::uint8_t { trt, hf, chw32 };

// none: every key of the S-long sequence is valid.  lengths: per-sequence valid lengths (TensorRT maskIdx,
// right padding).  varlen: packed tokens with cu_seqlens (TensorRT var_seqlen = 1).
enum class MaskMode : std::uint8_t { none, lengths, varlen };

// INT8 softmax shift (SPEC 5.0.1): row_max = true row maximum (use_int8_scale_max = 0); fixed_bound =
// scale_bmm1 * 127^2 with no reduction (use_int8_scale_max = 1, bit-compatible, failures included);
// guarded = fixed bound, rows that under/overflow are recomputed with their row maximum and counted.
enum class BoundMode : std::uint8_t { row_max, fixed_bound, guarded };

// INT8 probability quantization (SPEC 5.0.3):
//  - trt: TensorRT's contract: p = e / sum normalized first, then Pi8 = sat8(RNE(p / dq_probs)).
//  - max_relative: Pi8 = RNE(127 * exp(x - row_max)), quantized relative to the row maximum, and the
//    row sum applied to the INT8 context's requantization scale instead. Flat rows at long S keep
//    their mass (trt loses every p < dq_probs / 2); a different numerical contract, so a named mode.
//    Requires bound row_max; dq_probs is not used.
enum class ProbsMode : std::uint8_t { trt, max_relative };

// Where a tensor's memory lives.
enum class MemSpace : std::uint8_t { host, cuda };

std::string_view to_string(DType v);
std::string_view to_string(Layout v);
std::string_view to_string(MaskMode v);
std::string_view to_string(BoundMode v);
std::string_view to_string(MemSpace v);
std::string_view to_string(ProbsMode v);

std::optional<DType> parse_dtype(std::string_view s);
std::optional<Layout> parse_layout(std::string_view s);
std::optional<MaskMode> parse_mask_mode(std::string_view s);
std::optional<BoundMode> parse_bound_mode(std::string_view s);
std::optional<ProbsMode> parse_probs_mode(std::string_view s);

// Bytes per element (1, 2 or 4).
std::size_t element_size(DType v);

}  // namespace qkv2ctx
