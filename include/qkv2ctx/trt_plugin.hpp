// TensorRT compatibility layer for the `CustomQKVToContextPluginDynamic` plugin (SPEC §1, §2,
// §3.2.2, §6.5, §6.6, §9): plugin fields exactly as TensorRT passes them, the parsed and validated
// plugin state, its byte-exact serialization, the mapping to an AttentionDesc, the packed-mask
// format of embLayerNormPlugin, and output shapes.
//
// Nothing here depends on TensorRT headers: the few TensorRT types involved (PluginField,
// PluginFieldType, Dims) are mirrored with the same layout and numeric values, so a TensorRT plugin
// can pass its arguments through with a reinterpret_cast-free field-by-field copy.
//
// Every bad input throws qkv2ctx::Error naming the plugin version, the field, its value and what is
// allowed; where TensorRT aborts the process (PLUGIN_ASSERT) qkv2ctx throws instead. See
// docs/tensorrt.md for the per-version tables and where qkv2ctx deliberately differs.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qkv2ctx/descriptor.hpp"
#include "qkv2ctx/types.hpp"

namespace qkv2ctx::trt {

// ---------------------------------------------------------------------------------------------
// Identity (SPEC §1.1)

inline constexpr const char* kPluginName = "CustomQKVToContextPluginDynamic";
inline constexpr int kMinVersion = 1;
inline constexpr int kMaxVersion = 6;

// "1" .. "6". Throws Error(invalid_argument) for any other version.
std::string_view version_string(int version);
// "1" .. "6" -> 1 .. 6. Throws Error(invalid_argument) for anything else.
int parse_version(std::string_view version);
// Versions 4/5/6 are IPluginV3 ports of 1/2/3 with the same attributes: 4 -> 1, 5 -> 2, 6 -> 3.
int legacy_version(int version);

// ---------------------------------------------------------------------------------------------
// Plugin fields as TensorRT passes them (nvinfer1::PluginFieldType / PluginField, same values)

enum class PluginFieldType : std::int32_t {
  kFLOAT16 = 0,
  kFLOAT32 = 1,
  kFLOAT64 = 2,
  kINT8 = 3,
  kINT16 = 4,
  kINT32 = 5,
  kCHAR = 6,
  kDIMS = 7,
  kUNKNOWN = 8,
  kBF16 = 9,  // TensorRT 10
  kINT64 = 10,
  kFP8 = 11,
  kINT4 = 12,
  kFP4 = 13,  // TensorRT 10.8
};
// "kINT32", ...; "PluginFieldType(<n>)" for values outside the enum.
std::string to_string(PluginFieldType type);

struct PluginField {
  const char* name = nullptr;
  const void* data = nullptr;  // read unaligned; never written
  PluginFieldType type = PluginFieldType::kUNKNOWN;
  std::int32_t length = 0;  // number of elements (bytes for kUNKNOWN)
};

// The attributes a creator advertises through getFieldNames(): name, declared type, length 1, no
// data. Version 1 (and 4): type_id, hidden_size, num_heads, has_mask, dq_probs; version 2 (and 5)
// adds var_seqlen, use_int8_scale_max; version 3 (and 6): hidden_size, num_heads, dq_probs,
// use_int8_scale_max, use_explicit_int8, input_qkv_scale, output_ctx_scale (SPEC §9 item 2).
std::span<const PluginField> creator_fields(int version);
// The names of creator_fields(version), in the same order.
std::vector<std::string_view> field_names(int version);

// ---------------------------------------------------------------------------------------------
// Plugin state

// IPluginV3 creators (versions 4-6) are called in two phases: build (from the network's attributes)
// and runtime (from the field collection the plugin serialized into the engine, SPEC §6.6).
// Versions 1-3 only have the build phase; their engines hold a byte blob (deserialize()).
enum class Phase : std::uint8_t { build, runtime };

// cuBLAS algorithm id CUBLAS_GEMM_DEFAULT_TENSOR_OP: what TensorRT's unfused runner holds until its
// FP16 GEMMs are tuned (FP32 is never tuned).
inline constexpr std::int32_t kCublasGemmDefaultTensorOp = 99;

// The runner state TensorRT serializes after the plugin attributes (SPEC §6.5): the unfused runner
// writes algo1, algo2, S, B, head_size (20 bytes), the fused var-seqlen runner S, B, head_size
// (12). qkv2ctx does not use the cuBLAS algorithm ids; it carries them through unchanged so blobs
// round-trip.
enum class RunnerKind : std::uint8_t { none, unfused, fused };
struct RunnerState {
  RunnerKind kind = RunnerKind::none;
  std::int32_t algo1 = kCublasGemmDefaultTensorOp;  // unfused only
  std::int32_t algo2 = kCublasGemmDefaultTensorOp;  // unfused only
  std::int32_t S = 0;
  std::int32_t B = 0;
  std::int32_t head_size = 0;
  bool operator==(const RunnerState&) const = default;
};

// Everything a plugin instance knows after creation or deserialization. Plain values; the plugin
// that owns it updates S, B and runner when TensorRT configures it (SPEC §6.2).
struct PluginState {
  int version = 1;          // 1 .. 6
  int type_id = 1;          // 0 FP32, 1 FP16, 2 INT8 (nvinfer1::DataType); v3/v6: always 2
  int hidden_size = 0;      // E
  int num_heads = 0;        // N
  bool has_mask = false;    // v1/v2/v4/v5: a mask input is present; v3/v6: false
  float dq_probs = -1.0f;   // > 0; -1 = not given and unused (FP32/FP16)
  bool var_seqlen = false;  // packed tokens + cu_seqlens: v2/v5 field; always true for v3/v6
  // v2/v3/v5/v6 field (default 1); versions 1/4 have no such field and keep false.
  bool use_int8_scale_max = false;
  bool use_explicit_int8 = false;  // v3/v6
  float input_qkv_scale = 1.0f;    // v3/v6, used iff use_explicit_int8
  float output_ctx_scale = 1.0f;   // v3/v6, used iff use_explicit_int8
  int sm = 0;                      // 10*major+minor of the device the plugin was created on
  int S = 0;                       // mS: sequence length configured for (0 = not yet)
  int B = 0;                       // mB: batch size configured for (0 = not yet)
  // v1/v4: none or unfused; v2/v5: unfused (var_seqlen 0) or fused (var_seqlen 1); v3/v6: none.
  RunnerState runner;

  int head_size() const { return hidden_size / num_heads; }
  bool operator==(const PluginState&) const = default;
};

// Parses a field collection exactly as the version's createPlugin does (names, types, defaults),
// with the validation of SPEC §2 and §9 items 3-7, and records `sm`. Unknown names are ignored;
// when a name appears twice the last one wins (each occurrence is validated), as in TensorRT.
// Phase::runtime (versions 4-6 only) also reads the fields TensorRT stored in the engine
// (fields_to_serialize()); version 4 then takes sm from its "SM" field.
// Version 2/5 states get their runner record at once (TensorRT creates it in configurePlugin):
// var_seqlen 1 -> fused (S=256, B=1, H), the placeholder configurePlugin always sets; var_seqlen 0
// -> unfused (default algorithms, S=B=0). Throws Error(invalid_argument).
PluginState create_plugin_state(int version, std::span<const PluginField> fields, int sm,
                                Phase phase = Phase::build);

// Checks every invariant of a state (the same rules as create_plugin_state and deserialize).
// Throws Error(invalid_argument).
void validate_state(const PluginState& state);

// ---------------------------------------------------------------------------------------------
// Serialization, versions 1-3 (byte exact, SPEC §6.5): little-endian, packed.
//   v1: 57 bytes always; when there is no unfused runner state its 20 bytes are written as zeros
//       (and ignored when read).
//   v2: 59 bytes (var_seqlen 0, unfused runner) or 51 (var_seqlen 1, fused runner).
//   v3: 38 bytes.
std::size_t serialized_size(const PluginState& state);
std::vector<std::uint8_t> serialize(const PluginState& state);  // validates first
// Throws Error(invalid_argument) ("buffer too small", "buffer too large", or the offending value)
// for truncated, oversized or corrupt blobs; never reads outside `bytes`.
PluginState deserialize(int version, std::span<const std::uint8_t> bytes);

// ---------------------------------------------------------------------------------------------
// Serialization, versions 4-6 (SPEC §6.6): the field collection getFieldsToSerialize returns.
//   v4: type_id, hidden_size, num_heads, has_mask, S, B, SM, [runnerStateBuffer],
//   hasUnfusedDispatcher,
//       [dq_probs]     (runnerStateBuffer: kUNKNOWN, 20 bytes, iff an unfused runner state exists)
//   v5: type_id, hidden_size, num_heads, has_mask, var_seqlen, use_int8_scale_max, S, B,
//       runnerStateBuffer (20 or 12 bytes), [dq_probs]
//   v6: hidden_size, num_heads, use_int8_scale_max, use_explicit_int8, input_qkv_scale,
//       output_ctx_scale, [dq_probs]
// dq_probs is present iff >= 0. Read it back with create_plugin_state(version, fields, sm,
// Phase::runtime). Versions 5 and 6 do not store the SM: TensorRT re-queries the device, so the sm
// argument is used.
class SerializedFields {
 public:
  SerializedFields() = default;
  SerializedFields(SerializedFields&&) noexcept = default;
  SerializedFields& operator=(SerializedFields&&) noexcept = default;
  // Fields point into this object: copying would leave them pointing at the original.
  SerializedFields(const SerializedFields&) = delete;
  SerializedFields& operator=(const SerializedFields&) = delete;

  std::span<const PluginField> fields() const { return fields_; }

 private:
  friend SerializedFields fields_to_serialize(const PluginState& state);
  void add(const char* name, PluginFieldType type, std::vector<std::uint8_t> bytes,
           std::int32_t length);
  std::vector<PluginField> fields_;
  std::vector<std::vector<std::uint8_t>> values_;  // moving the outer vector keeps inner buffers
};
SerializedFields fields_to_serialize(const PluginState& state);  // versions 4-6; validates first

// ---------------------------------------------------------------------------------------------
// Mapping to an AttentionDesc

// PluginTensorDesc::scale of input 0 (QKV) and output 0 (context); TensorRT sets -1 when the tensor
// is not INT8. Only read for INT8 without explicit scales.
struct TensorScales {
  float qkv_scale = -1.0f;
  float ctx_scale = -1.0f;
};

struct CompatOptions {
  // What use_int8_scale_max = 1 maps to: guarded (default, SPEC R9) or fixed_bound (bit-compatible
  // with TensorRT's SM 80 INT8 kernels, failures included). use_int8_scale_max = 0 is row_max.
  BoundMode scale_max_mode = BoundMode::guarded;
  // Versions 1/4 have no use_int8_scale_max field; their INT8 runs row_max (SPEC §5.0.1) unless
  // this is set, then scale_max_mode.
  bool v1_int8_scale_max = false;
  // Reproduce TensorRT's softmax scale instead of the true 1/sqrt(H) (SPEC §5.3, §7 item 7):
  // v3/v6 always 1/sqrt(64); v2/v5 var-seqlen with H < 64 pads H to 32 or 64.
  bool padded_head_size_scale = false;
  // Only for padded_head_size_scale with v2/v5 var-seqlen, H <= 32 on SM 75/80/86/89, where
  // TensorRT picks 32 or 64 from the kernel sequence length (hence from the max sequence length) of
  // each call.
  int max_seqlen = 0;
};

// dtype from type_id (v3/v6: int8), N, H = hidden_size / num_heads, layout trt (v1/v2/v4/v5) or
// chw32 (v3/v6), mask (fixed length: has_mask ? lengths : none; var-seqlen and v3/v6: varlen),
// INT8 scales (v3/v6 with use_explicit_int8: input_qkv_scale / output_ctx_scale, else the tensor
// scales; dq_probs), bound mode and scale head size per `options`. The result passes validate();
// configurations qkv2ctx cannot run (e.g. head size > 256) throw Error naming the plugin fields.
AttentionDesc to_descriptor(const PluginState& state, const TensorScales& scales,
                            const CompatOptions& options = {});

// ---------------------------------------------------------------------------------------------
// Packed mask of the v1 fused path (SPEC §3.2.2), as embLayerNormPlugin produces it

// Width P of the v1 mask tensor [B, P] (getMHAMaskPackedSize): 512 for S in {64, 96, 128} and 6144
// for S = 384 when type_id is FP16/INT8 and sm in {75, 80, 86, 87, 89, 90, 100, 120}; 1 (maskIdx,
// valid lengths) otherwise.
int packed_mask_width(int sm, int type_id, int S);

// CTA layout the packed words are laid out for (S in {64, 96, 128, 384}).
struct PackedMaskLayout {
  int warps_m = 0;
  int warps_n = 0;
  int threads = 0;  // warps_m * warps_n * 32
  int xmmas_m = 0;  // ceil(S / (16 * warps_m)): words per thread and batch entry
  int xmmas_n = 0;  // ceil(S / (16 * warps_n)): bytes used per word
  int words_per_batch() const {
    return xmmas_m * threads;
  }  // meaningful words, contiguous per batch
};
// Throws Error(invalid_argument) for S without a packed layout.
PackedMaskLayout packed_mask_layout(int S);

// Words of a [batch, P] packed mask tensor (P = packed_mask_width(), batch*P words) -> per-key
// validity [batch][S] (1 = valid), decoded from M-tile mi = 0. Throws Error(invalid_argument) if
// the size is wrong or the words are not a per-key mask as embLayerNormPlugin writes it (the
// redundant copies of a key's bit disagree, or bits beyond S are set).
std::vector<std::uint8_t> decode_packed_mask(std::span<const std::uint32_t> words, int batch,
                                             int S);

// decode_packed_mask, then valid lengths [batch] if every row is a prefix mask (1..1 0..0).
// Throws Error(unsupported) for a non-prefix key mask (not supported yet).
std::vector<std::int32_t> packed_mask_to_lengths(std::span<const std::uint32_t> words, int batch,
                                                 int S);

// The words embLayerNormPlugin's convertMask writes for a key mask given as [batch][S] (row per
// batch entry; embLayerNormPlugin itself reads its input as [S, B]): key bit = (value == 1).
// Returns batch*P words; words past batch*words_per_batch() are zero.
std::vector<std::uint32_t> encode_packed_mask(std::span<const std::int32_t> key_mask, int batch,
                                              int S);

// ---------------------------------------------------------------------------------------------
// Output shape (SPEC §9 item 9)

// nvinfer1::Dims64. -1 marks a dynamic extent.
struct Dims {
  static constexpr int kMaxDims = 8;
  std::int32_t nbDims = 0;
  std::array<std::int64_t, kMaxDims> d{};
};

// Fixed length (v1/v4, v2/v5 var_seqlen 0): [S, B, 3E, 1, 1] -> [S, B, E, 1, 1];
// var-seqlen (v2/v5 var_seqlen 1): [T, 3E, 1, 1] -> [T, E, 1, 1]; v3/v6: [1, 3E, T, 1] -> [1, E, T,
// 1]. The hidden extent is divided by 3 (floor, -1 stays -1). Throws Error(invalid_argument) for a
// wrong rank, a hidden extent not a multiple of 3, or a negative extent other than -1.
Dims output_dims(int version, const Dims& qkv, bool var_seqlen = false);
// As above with the state's version and var_seqlen; also requires hidden extent == 3 * hidden_size.
Dims output_dims(const PluginState& state, const Dims& qkv);

}  // namespace qkv2ctx::trt
