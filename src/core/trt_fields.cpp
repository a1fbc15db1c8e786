// Plugin fields: what each creator advertises, parsing a field collection into a PluginState
// exactly as TensorRT's createPlugin does (SPEC §2, §6.6), and the state invariants
// (validate_state).
#include <algorithm>
#include <cstring>
#include <optional>

#include "core/trt_internal.hpp"

namespace qkv2ctx::trt {
namespace {

using detail::check_flag;
using detail::check_non_negative;
using detail::check_positive;
using detail::fail;
using detail::reject;

constexpr auto kInt = PluginFieldType::kINT32;
constexpr auto kFloat = PluginFieldType::kFLOAT32;
constexpr auto kBytes = PluginFieldType::kUNKNOWN;

// getFieldNames() of each creator (SPEC §9 item 2).
constexpr PluginField kV1Fields[] = {
    {"type_id", nullptr, kInt, 1},    {"hidden_size", nullptr, kInt, 1},
    {"num_heads", nullptr, kInt, 1},  {"has_mask", nullptr, kInt, 1},
    {"dq_probs", nullptr, kFloat, 1},
};
constexpr PluginField kV2Fields[] = {
    {"type_id", nullptr, kInt, 1},
    {"hidden_size", nullptr, kInt, 1},
    {"num_heads", nullptr, kInt, 1},
    {"has_mask", nullptr, kInt, 1},
    {"dq_probs", nullptr, kFloat, 1},
    {"var_seqlen", nullptr, kInt, 1},
    {"use_int8_scale_max", nullptr, kInt, 1},
};
constexpr PluginField kV3Fields[] = {
    {"hidden_size", nullptr, kInt, 1},        {"num_heads", nullptr, kInt, 1},
    {"dq_probs", nullptr, kFloat, 1},         {"use_int8_scale_max", nullptr, kInt, 1},
    {"use_explicit_int8", nullptr, kInt, 1},  {"input_qkv_scale", nullptr, kFloat, 1},
    {"output_ctx_scale", nullptr, kFloat, 1},
};
// Fields that only the IPluginV3 ports store in the engine and read back at runtime (SPEC §6.6).
constexpr PluginField kV4RuntimeFields[] = {
    {"S", nullptr, kInt, 1},
    {"B", nullptr, kInt, 1},
    {"SM", nullptr, kInt, 1},
    {"hasUnfusedDispatcher", nullptr, kInt, 1},
    {"runnerStateBuffer", nullptr, kBytes, 0},
};
constexpr PluginField kV5RuntimeFields[] = {
    {"S", nullptr, kInt, 1},
    {"B", nullptr, kInt, 1},
    {"runnerStateBuffer", nullptr, kBytes, 0},
};

std::span<const PluginField> runtime_fields(int version) {
  if (version == 4) return kV4RuntimeFields;
  if (version == 5) return kV5RuntimeFields;
  return {};
}

std::vector<std::string_view> required_fields(int version, Phase phase) {
  const int legacy = legacy_version(version);
  std::vector<std::string_view> names;
  if (legacy == 3)
    names = {"hidden_size", "num_heads"};
  else
    names = {"type_id", "hidden_size", "num_heads", "has_mask"};
  if (phase == Phase::runtime && version == 4)
    names.insert(names.end(), {"S", "B", "SM", "hasUnfusedDispatcher"});
  if (phase == Phase::runtime && version == 5)
    names.insert(names.end(), {"S", "B", "var_seqlen", "use_int8_scale_max", "runnerStateBuffer"});
  return names;
}

std::string join(const std::vector<std::string_view>& names) {
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + std::string(names[i]);
  return s;
}

// The last occurrence of each known field, read and checked as TensorRT reads it.
struct RawField {
  std::int32_t i = 0;
  float f = 0.0f;
  std::span<const std::uint8_t> bytes;
};

struct ParsedFields {
  std::vector<std::pair<std::string_view, RawField>> values;
  const RawField* get(std::string_view name) const {
    for (const auto& [n, v] : values)
      if (n == name) return &v;
    return nullptr;
  }
};

std::string quoted(std::string_view name) { return "field '" + std::string(name) + "'"; }

// Per-occurrence value rules (TensorRT validates each occurrence as it loops over the fields).
void check_value(int version, std::string_view name, const RawField& v) {
  const std::string what = quoted(name);
  if (name == "type_id")
    detail::check_type_id(version, what, v.i);
  else if (name == "hidden_size" || name == "num_heads")
    check_positive(version, what, v.i);
  else if (name == "has_mask" || name == "use_int8_scale_max" || name == "hasUnfusedDispatcher")
    check_flag(version, what, v.i);
  else if (name == "dq_probs")
    detail::check_scale(version, what, v.f, detail::kDqProbsMeaning);
  else if (name == "input_qkv_scale")
    detail::check_scale(version, what, v.f, "QKV quantization scale, used iff use_explicit_int8");
  else if (name == "output_ctx_scale")
    detail::check_scale(version, what, v.f,
                        "context quantization scale, used iff use_explicit_int8");
  else if (name == "S" || name == "B")
    check_non_negative(version, what, v.i);
  else if (name == "SM")
    detail::check_sm(version, what, v.i);
  // var_seqlen, use_explicit_int8: any value, non-zero means on (SPEC §2.2, §2.3).
}

ParsedFields parse_fields(int version, std::span<const PluginField> fields, Phase phase) {
  // Names first: a missing required field is reported before any value (as TensorRT does).
  for (std::size_t i = 0; i < fields.size(); ++i)
    if (fields[i].name == nullptr)
      fail(version, "field #" + std::to_string(i) + " has a null name");
  for (std::string_view req : required_fields(version, phase)) {
    const bool found = std::any_of(fields.begin(), fields.end(),
                                   [&](const PluginField& f) { return req == f.name; });
    if (!found)
      fail(version, "required " + quoted(req) + " is missing (version " + std::to_string(version) +
                        (phase == Phase::runtime ? " at runtime" : "") + " requires " +
                        join(required_fields(version, phase)) + ")");
  }

  const auto attributes = creator_fields(version);
  const auto runtime_only = runtime_fields(version);
  ParsedFields parsed;
  for (const PluginField& f : fields) {
    const std::string_view name(f.name);
    auto match = [&](const PluginField& spec) { return name == spec.name; };
    const PluginField* spec = nullptr;
    if (auto it = std::find_if(attributes.begin(), attributes.end(), match); it != attributes.end())
      spec = &*it;
    else if (auto rt = std::find_if(runtime_only.begin(), runtime_only.end(), match);
             rt != runtime_only.end()) {
      if (phase == Phase::build)
        fail(version, quoted(name) +
                          " is only read when TensorRT recreates the plugin from an "
                          "engine (runtime phase); TensorRT aborts on it at build time");
      spec = &*rt;
    }
    if (spec == nullptr) continue;  // unknown names are ignored, as in TensorRT

    if (f.data == nullptr) fail(version, quoted(name) + " has no data (null pointer)");
    if (f.type != spec->type)
      fail(version, quoted(name) + " is declared as " + to_string(f.type) + " (" +
                        std::to_string(static_cast<int>(f.type)) + "), expected " +
                        to_string(spec->type) + " (" +
                        std::to_string(static_cast<int>(spec->type)) + ")");
    RawField v;
    if (spec->type == kBytes) {
      if (f.length <= 0)
        fail(version, quoted(name) + " has length " + std::to_string(f.length) +
                          ", expected the runner state's size in bytes");
      v.bytes = {static_cast<const std::uint8_t*>(f.data), static_cast<std::size_t>(f.length)};
    } else {
      if (f.length != 1)
        fail(version, quoted(name) + " has length " + std::to_string(f.length) + ", expected 1");
      // The data pointer may be unaligned: copy the bytes.
      if (spec->type == kInt)
        std::memcpy(&v.i, f.data, sizeof(v.i));
      else
        std::memcpy(&v.f, f.data, sizeof(v.f));
      check_value(version, name, v);
    }
    auto slot = std::find_if(parsed.values.begin(), parsed.values.end(),
                             [&](const auto& p) { return p.first == name; });
    if (slot != parsed.values.end())
      slot->second = v;  // the last occurrence wins
    else
      parsed.values.emplace_back(name, v);
  }
  return parsed;
}

RunnerState runner_from_buffer(int version, const RawField& buffer, RunnerKind kind,
                               int head_size) {
  const std::size_t expected =
      kind == RunnerKind::unfused ? detail::kUnfusedRunnerBytes : detail::kFusedRunnerBytes;
  if (buffer.bytes.size() != expected)
    fail(version,
         "field 'runnerStateBuffer' has length " + std::to_string(buffer.bytes.size()) +
             ", expected " + std::to_string(expected) +
             (kind == RunnerKind::unfused ? " (unfused runner state: algo1, algo2, S, B, head_size)"
                                          : " (fused runner state: S, B, head_size)"));
  detail::ByteReader reader(version, buffer.bytes, "field 'runnerStateBuffer'");
  RunnerState r = detail::read_runner(reader, kind);
  detail::check_runner(version, r, head_size, "field 'runnerStateBuffer' runner");
  return r;
}

}  // namespace

std::span<const PluginField> creator_fields(int version) {
  switch (legacy_version(version)) {
    case 1:
      return kV1Fields;
    case 2:
      return kV2Fields;
    default:
      return kV3Fields;
  }
}

std::vector<std::string_view> field_names(int version) {
  std::vector<std::string_view> names;
  for (const PluginField& f : creator_fields(version)) names.emplace_back(f.name);
  return names;
}

PluginState create_plugin_state(int version, std::span<const PluginField> fields, int sm,
                                Phase phase) {
  detail::check_version(version);
  if (phase == Phase::runtime && version <= 3)
    fail(version,
         "Phase::runtime field collections exist only for versions 4-6; versions 1-3 are "
         "restored from their byte blob with deserialize()");
  const int legacy = legacy_version(version);
  const ParsedFields parsed = parse_fields(version, fields, phase);
  auto value = [&](std::string_view name) -> std::optional<RawField> {
    const RawField* v = parsed.get(name);
    return v ? std::optional<RawField>(*v) : std::nullopt;
  };

  PluginState s;
  s.version = version;
  s.type_id = legacy == 3 ? 2 : value("type_id")->i;
  s.hidden_size = value("hidden_size")->i;
  s.num_heads = value("num_heads")->i;
  s.has_mask = legacy != 3 && value("has_mask")->i == 1;
  if (auto dq = value("dq_probs"))
    s.dq_probs = dq->f;
  else
    s.dq_probs = s.type_id == 2 ? 1.0f / 127.0f : -1.0f;  // SPEC §9 item 5
  if (legacy == 2) s.var_seqlen = value("var_seqlen").value_or(RawField{}).i != 0;
  if (legacy == 3) s.var_seqlen = true;
  if (legacy != 1) {
    auto v = value("use_int8_scale_max");
    s.use_int8_scale_max = v ? v->i == 1 : true;  // default 1 (SPEC §9 item 6)
  }
  if (legacy == 3) {
    s.use_explicit_int8 = value("use_explicit_int8").value_or(RawField{}).i != 0;
    if (auto v = value("input_qkv_scale")) s.input_qkv_scale = v->f;
    if (auto v = value("output_ctx_scale")) s.output_ctx_scale = v->f;
  }
  s.sm = sm;
  if (phase == Phase::runtime && version == 4) s.sm = value("SM")->i;  // v5/v6 re-query the device
  detail::check_sm(version, "sm", s.sm);
  if (phase == Phase::runtime && legacy != 3) {
    s.S = value("S")->i;
    s.B = value("B")->i;
  }

  // Cross-field rules first, so a runner buffer is decoded only for a consistent state.
  if (s.hidden_size % s.num_heads != 0)
    reject(version, "hidden_size",
           std::to_string(s.hidden_size) + " with num_heads = " + std::to_string(s.num_heads),
           "a multiple of num_heads (head size = hidden_size / num_heads)");
  const int head_size = s.hidden_size / s.num_heads;
  if (legacy == 1 && phase == Phase::runtime) {
    const bool has_runner = value("hasUnfusedDispatcher")->i == 1;
    const auto buffer = value("runnerStateBuffer");
    if (has_runner && !buffer)
      fail(version, "field 'hasUnfusedDispatcher' = 1 but field 'runnerStateBuffer' is missing");
    if (!has_runner && buffer)
      fail(version, "field 'runnerStateBuffer' is present but field 'hasUnfusedDispatcher' = 0");
    if (has_runner) s.runner = runner_from_buffer(version, *buffer, RunnerKind::unfused, head_size);
  }
  if (legacy == 2) {
    // The record configurePlugin would create; validate_state then reports the type/mode
    // combinations (with their TensorRT background) before a runner buffer is decoded.
    const std::int32_t algo = kCublasGemmDefaultTensorOp;
    if (s.var_seqlen)
      s.runner = {RunnerKind::fused, algo, algo, 256, 1, head_size};
    else
      s.runner = {RunnerKind::unfused, algo, algo, 0, 0, head_size};
    validate_state(s);
    if (phase == Phase::runtime)
      s.runner = runner_from_buffer(version, *value("runnerStateBuffer"), s.runner.kind, head_size);
  }
  validate_state(s);
  return s;
}

void validate_state(const PluginState& s) {
  detail::check_version(s.version);
  const int v = s.version;
  const int legacy = legacy_version(v);
  detail::check_type_id(v, "type_id", s.type_id);
  if (legacy == 3 && s.type_id != 2)
    reject(v, "type_id", std::to_string(s.type_id), "2 (versions 3 and 6 are INT8 only)");
  check_positive(v, "hidden_size", s.hidden_size);
  check_positive(v, "num_heads", s.num_heads);
  if (s.hidden_size % s.num_heads != 0)
    reject(v, "hidden_size",
           std::to_string(s.hidden_size) + " with num_heads = " + std::to_string(s.num_heads),
           "a multiple of num_heads (head size = hidden_size / num_heads)");
  detail::check_dq_probs(v, "dq_probs", s.dq_probs, s.type_id);
  detail::check_scale(v, "input_qkv_scale", s.input_qkv_scale, "QKV quantization scale");
  detail::check_scale(v, "output_ctx_scale", s.output_ctx_scale, "context quantization scale");
  detail::check_sm(v, "sm", s.sm);
  check_non_negative(v, "S", s.S);
  check_non_negative(v, "B", s.B);

  // Values a version has no field for stay at their canonical value, so states compare equal.
  if (legacy != 3 && s.use_explicit_int8)
    reject(v, "use_explicit_int8", "1", "0 (only versions 3 and 6 have explicit INT8 scales)");
  if (legacy == 1 && s.var_seqlen)
    reject(v, "var_seqlen", "1", "0 (versions 1 and 4 have no var-seqlen mode; use version 2)");
  if (legacy == 1 && s.use_int8_scale_max)
    reject(v, "use_int8_scale_max", "1",
           "0 (versions 1 and 4 have no such field; CompatOptions.v1_int8_scale_max selects it)");
  if (legacy == 3 && (s.S != 0 || s.B != 0))
    reject(v, "S/B", std::to_string(s.S) + "/" + std::to_string(s.B),
           "0/0 (versions 3 and 6 never record S or B; both come from the inputs at each call)");
  if (legacy == 3 && (!s.var_seqlen || s.has_mask))
    reject(v, "var_seqlen/has_mask",
           std::to_string(s.var_seqlen) + "/" + std::to_string(s.has_mask),
           "1/0 (versions 3 and 6 are always var-seqlen and have no mask input)");
  if (legacy == 2 && s.type_id == 2 && !s.var_seqlen)
    reject(v, "type_id", "2 (INT8) with var_seqlen = 0",
           "version 2 runs INT8 only in var-seqlen mode (var_seqlen = 1); TensorRT aborts when it "
           "sets up the runner");
  if (legacy == 2 && s.var_seqlen && s.type_id == 0)
    reject(v, "var_seqlen", "1 with type_id = 0 (FP32)",
           "var-seqlen mode takes type_id 1 (FP16) or 2 (INT8); TensorRT aborts on FP32");
  if (legacy == 2 && s.var_seqlen && !s.has_mask)
    reject(v, "var_seqlen", "1 with has_mask = 0",
           "the var-seqlen plugin has 4 inputs (QKV, mask dummy, cu_seqlens, max-seqlen dummy), so "
           "has_mask must be 1; TensorRT aborts otherwise");

  const auto kind = s.runner.kind;
  if (legacy == 1 && kind == RunnerKind::fused)
    reject(v, "runner", "fused",
           "none or unfused (versions 1/4 serialize only the unfused runner)");
  if (legacy == 2) {
    const RunnerKind expected = s.var_seqlen ? RunnerKind::fused : RunnerKind::unfused;
    if (kind != expected)
      reject(v, "runner", kind == RunnerKind::none ? "none" : "the other runner kind",
             s.var_seqlen ? "fused (var_seqlen = 1)" : "unfused (var_seqlen = 0)");
  }
  if (legacy == 3 && kind != RunnerKind::none)
    reject(v, "runner", "present", "none (versions 3/6 have no runner state)");
  if (kind != RunnerKind::none) detail::check_runner(v, s.runner, s.head_size(), "runner");
}

}  // namespace qkv2ctx::trt
