// Serialization: the byte blobs of versions 1-3 (byte exact, SPEC §6.5) and the field collections
// of versions 4-6 (SPEC §6.6). Every value read back is validated like the corresponding field.
#include <cstring>

#include "core/trt_internal.hpp"

namespace qkv2ctx::trt {
namespace {

using detail::ByteReader;
using detail::ByteWriter;
using detail::fail;
using detail::reject;

// Byte counts of SPEC §6.5.
constexpr std::size_t kV1Bytes = 57;        // 37 + 20 (runner state, zero-filled when absent)
constexpr std::size_t kV2HeaderBytes = 39;  // v1 fields 1-9 (33) + var_seqlen + hdim + scale_max
constexpr std::size_t kV2UnfusedBytes = kV2HeaderBytes + detail::kUnfusedRunnerBytes;  // 59
constexpr std::size_t kV2FusedBytes = kV2HeaderBytes + detail::kFusedRunnerBytes;      // 51
constexpr std::size_t kV3Bytes = 38;

// Index of the hidden dimension TensorRT serializes in v2 (mHdim).
constexpr std::int32_t kHdimFixed = 2;
constexpr std::int32_t kHdimVarSeqlen = 1;

void require_blob_version(int version) {
  detail::check_version(version);
  if (version > 3)
    fail(version,
         "versions 4-6 serialize as a field collection: use fields_to_serialize() and "
         "create_plugin_state(version, fields, sm, Phase::runtime)");
}

void check_size(int version, std::size_t got, std::size_t lo, std::size_t hi,
                const std::string& expected) {
  if (got < lo)
    fail(version, "blob: buffer too small: " + std::to_string(got) + " bytes, " + expected);
  if (got > hi)
    fail(version, "blob: buffer too large: " + std::to_string(got) + " bytes, " + expected);
}

// Fields 1-9 shared by v1 and v2: type, num_heads, head_size, has_mask, hidden_size, sm, S, B,
// dq_probs.
void write_common(ByteWriter& w, const PluginState& s) {
  w.i32(s.type_id);
  w.i32(s.num_heads);
  w.i32(s.head_size());
  w.boolean(s.has_mask);
  w.i32(s.hidden_size);
  w.i32(s.sm);
  w.i32(s.S);
  w.i32(s.B);
  w.f32(s.dq_probs);
}

// The serialized head size must be the one hidden_size and num_heads give.
void check_heads(int version, const PluginState& s, std::int32_t head_size,
                 const std::string& head_where) {
  if (s.hidden_size % s.num_heads != 0)
    reject(version, "blob hidden_size",
           std::to_string(s.hidden_size) + " with num_heads = " + std::to_string(s.num_heads),
           "a multiple of num_heads");
  if (head_size != s.hidden_size / s.num_heads)
    reject(version, head_where, std::to_string(head_size),
           "hidden_size / num_heads = " + std::to_string(s.hidden_size / s.num_heads));
}

void read_common(int version, ByteReader& r, PluginState& s) {
  s.type_id = r.i32("type");
  detail::check_type_id(version, r.where("type", 4), s.type_id);
  s.num_heads = r.i32("num_heads");
  detail::check_positive(version, r.where("num_heads", 4), s.num_heads);
  const std::int32_t head_size = r.i32("head_size");
  const std::string head_where = r.where("head_size", 4);
  s.has_mask = r.boolean("has_mask");
  s.hidden_size = r.i32("hidden_size");
  detail::check_positive(version, r.where("hidden_size", 4), s.hidden_size);
  check_heads(version, s, head_size, head_where);
  s.sm = r.i32("sm");
  detail::check_sm(version, r.where("sm", 4), s.sm);
  s.S = r.i32("S");
  detail::check_non_negative(version, r.where("S", 4), s.S);
  s.B = r.i32("B");
  detail::check_non_negative(version, r.where("B", 4), s.B);
  s.dq_probs = r.f32("dq_probs");
  detail::check_dq_probs(version, r.where("dq_probs", 4), s.dq_probs, s.type_id);
}

PluginState read_v1(ByteReader& r, PluginState s) {
  read_common(1, r, s);
  const std::int32_t has_runner = r.i32("hasUnfusedRunner");
  detail::check_flag(1, r.where("hasUnfusedRunner", 4), has_runner);
  if (has_runner == 1) {
    s.runner = detail::read_runner(r, RunnerKind::unfused);
    detail::check_runner(1, s.runner, s.head_size(), "blob runner");
  } else {
    // TensorRT leaves these bytes unspecified when there is no runner state: ignore them.
    r.skip(detail::kUnfusedRunnerBytes, "reserved runner bytes");
  }
  return s;
}

PluginState read_v2(ByteReader& r, std::size_t size, PluginState s) {
  read_common(2, r, s);
  s.var_seqlen = r.boolean("var_seqlen");
  const std::int32_t hdim = r.i32("hdim");
  const std::int32_t expected_hdim = s.var_seqlen ? kHdimVarSeqlen : kHdimFixed;
  if (hdim != expected_hdim)
    reject(2, r.where("hdim", 4), std::to_string(hdim),
           std::to_string(expected_hdim) + " (index of the hidden dimension with var_seqlen = " +
               std::to_string(s.var_seqlen) + ")");
  s.use_int8_scale_max = r.boolean("use_int8_scale_max");
  const RunnerKind kind = s.var_seqlen ? RunnerKind::fused : RunnerKind::unfused;
  const std::size_t expected = s.var_seqlen ? kV2FusedBytes : kV2UnfusedBytes;
  check_size(2, size, expected, expected,
             "a version 2 blob with var_seqlen = " + std::to_string(s.var_seqlen) + " is " +
                 std::to_string(expected) + " bytes");
  s.runner = detail::read_runner(r, kind);
  detail::check_runner(2, s.runner, s.head_size(), "blob runner");
  return s;
}

PluginState read_v3(ByteReader& r, PluginState s) {
  s.type_id = 2;
  s.var_seqlen = true;
  s.num_heads = r.i32("num_heads");
  detail::check_positive(3, r.where("num_heads", 4), s.num_heads);
  const std::int32_t head_size = r.i32("head_size");
  const std::string head_where = r.where("head_size", 4);
  s.hidden_size = r.i32("hidden_size");
  detail::check_positive(3, r.where("hidden_size", 4), s.hidden_size);
  check_heads(3, s, head_size, head_where);
  s.sm = r.i32("sm");
  detail::check_sm(3, r.where("sm", 4), s.sm);
  s.S = r.i32("S");
  s.B = r.i32("B");
  if (s.S != 0 || s.B != 0)
    reject(3, r.where("S, B", 8), std::to_string(s.S) + ", " + std::to_string(s.B),
           "0, 0 (version 3 never records S or B)");
  s.dq_probs = r.f32("dq_probs");
  detail::check_scale(3, r.where("dq_probs", 4), s.dq_probs, detail::kDqProbsMeaning);
  s.use_int8_scale_max = r.boolean("use_int8_scale_max");
  s.use_explicit_int8 = r.boolean("use_explicit_int8");
  s.input_qkv_scale = r.f32("input_qkv_scale");
  detail::check_scale(3, r.where("input_qkv_scale", 4), s.input_qkv_scale,
                      "QKV quantization scale");
  s.output_ctx_scale = r.f32("output_ctx_scale");
  detail::check_scale(3, r.where("output_ctx_scale", 4), s.output_ctx_scale,
                      "context quantization scale");
  return s;
}

std::vector<std::uint8_t> int_bytes(std::int32_t v) {
  std::vector<std::uint8_t> b(sizeof(v));
  std::memcpy(b.data(), &v, sizeof(v));  // in-memory value, as TensorRT points at its members
  return b;
}

std::vector<std::uint8_t> float_bytes(float v) {
  std::vector<std::uint8_t> b(sizeof(v));
  std::memcpy(b.data(), &v, sizeof(v));
  return b;
}

}  // namespace

std::size_t serialized_size(const PluginState& s) {
  require_blob_version(s.version);
  switch (s.version) {
    case 1:
      return kV1Bytes;
    case 2:
      return s.var_seqlen ? kV2FusedBytes : kV2UnfusedBytes;
    default:
      return kV3Bytes;
  }
}

std::vector<std::uint8_t> serialize(const PluginState& s) {
  require_blob_version(s.version);
  validate_state(s);
  ByteWriter w;
  if (s.version == 1) {
    write_common(w, s);
    const bool has_runner = s.runner.kind == RunnerKind::unfused;
    w.i32(has_runner ? 1 : 0);
    if (has_runner)
      detail::write_runner(w, s.runner);
    else
      w.zeros(detail::kUnfusedRunnerBytes);  // SPEC R5: reserved bytes zero-filled
  } else if (s.version == 2) {
    write_common(w, s);
    w.boolean(s.var_seqlen);
    w.i32(s.var_seqlen ? kHdimVarSeqlen : kHdimFixed);
    w.boolean(s.use_int8_scale_max);
    detail::write_runner(w, s.runner);
  } else {
    w.i32(s.num_heads);
    w.i32(s.head_size());
    w.i32(s.hidden_size);
    w.i32(s.sm);
    w.i32(s.S);
    w.i32(s.B);
    w.f32(s.dq_probs);
    w.boolean(s.use_int8_scale_max);
    w.boolean(s.use_explicit_int8);
    w.f32(s.input_qkv_scale);
    w.f32(s.output_ctx_scale);
  }
  if (w.size() != serialized_size(s))
    throw Error(ErrorCode::internal, detail::plugin_prefix(s.version) + ": wrote " +
                                         std::to_string(w.size()) + " bytes, expected " +
                                         std::to_string(serialized_size(s)));
  return w.take();
}

PluginState deserialize(int version, std::span<const std::uint8_t> bytes) {
  require_blob_version(version);
  PluginState s;
  s.version = version;
  ByteReader r(version, bytes, "blob");
  switch (version) {
    case 1:
      check_size(1, bytes.size(), kV1Bytes, kV1Bytes, "a version 1 blob is 57 bytes");
      s = read_v1(r, s);
      break;
    case 2:
      check_size(2, bytes.size(), kV2FusedBytes, kV2UnfusedBytes,
                 "a version 2 blob is 59 (var_seqlen 0) or 51 (var_seqlen 1) bytes");
      s = read_v2(r, bytes.size(), s);
      break;
    default:
      check_size(3, bytes.size(), kV3Bytes, kV3Bytes, "a version 3 blob is 38 bytes");
      s = read_v3(r, s);
      break;
  }
  validate_state(s);  // cross-field rules (e.g. v2 INT8 without var_seqlen)
  return s;
}

void SerializedFields::add(const char* name, PluginFieldType type, std::vector<std::uint8_t> bytes,
                           std::int32_t length) {
  values_.push_back(std::move(bytes));
  fields_.push_back({name, values_.back().data(), type, length});
}

SerializedFields fields_to_serialize(const PluginState& s) {
  detail::check_version(s.version);
  if (s.version <= 3) fail(s.version, "versions 1-3 serialize as a byte blob: use serialize()");
  validate_state(s);
  constexpr auto kInt = PluginFieldType::kINT32;
  constexpr auto kFloat = PluginFieldType::kFLOAT32;
  SerializedFields out;
  auto add_int = [&](const char* name, std::int32_t v) { out.add(name, kInt, int_bytes(v), 1); };
  auto add_float = [&](const char* name, float v) { out.add(name, kFloat, float_bytes(v), 1); };
  auto add_runner = [&] {
    ByteWriter w;
    detail::write_runner(w, s.runner);
    auto bytes = w.take();
    const auto n = static_cast<std::int32_t>(bytes.size());
    out.add("runnerStateBuffer", PluginFieldType::kUNKNOWN, std::move(bytes), n);
  };
  if (s.version == 4) {
    add_int("type_id", s.type_id);
    add_int("hidden_size", s.hidden_size);
    add_int("num_heads", s.num_heads);
    add_int("has_mask", s.has_mask);
    add_int("S", s.S);
    add_int("B", s.B);
    add_int("SM", s.sm);
    const bool has_runner = s.runner.kind == RunnerKind::unfused;
    if (has_runner) add_runner();
    add_int("hasUnfusedDispatcher", has_runner);
  } else if (s.version == 5) {
    add_int("type_id", s.type_id);
    add_int("hidden_size", s.hidden_size);
    add_int("num_heads", s.num_heads);
    add_int("has_mask", s.has_mask);
    add_int("var_seqlen", s.var_seqlen);
    add_int("use_int8_scale_max", s.use_int8_scale_max);
    add_int("S", s.S);
    add_int("B", s.B);
    add_runner();
  } else {
    add_int("hidden_size", s.hidden_size);
    add_int("num_heads", s.num_heads);
    add_int("use_int8_scale_max", s.use_int8_scale_max);
    add_int("use_explicit_int8", s.use_explicit_int8);
    add_float("input_qkv_scale", s.input_qkv_scale);
    add_float("output_ctx_scale", s.output_ctx_scale);
  }
  if (s.dq_probs >= 0.0f) add_float("dq_probs", s.dq_probs);
  return out;
}

}  // namespace qkv2ctx::trt
