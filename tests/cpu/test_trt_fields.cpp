// TensorRT plugin fields (SPEC §2, §9 items 2-7), the mapping to AttentionDesc (SPEC §5.0, §5.3,
// R9) and output shapes (SPEC §9 item 9).
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <random>

#include "common/test_util.hpp"

using namespace qkv2ctx;
using namespace qkv2ctx::trt;
using qkv2ctx::test::expect_error;

namespace {

// Fields as a TensorRT network passes them; values live in deques so their addresses stay put.
class FieldList {
 public:
  FieldList() = default;
  FieldList(const FieldList&) = delete;  // fields point into this object
  FieldList& i(const char* name, std::int32_t v) {
    ints_.push_back(v);
    fields_.push_back({name, &ints_.back(), PluginFieldType::kINT32, 1});
    return *this;
  }
  FieldList& f(const char* name, float v) {
    floats_.push_back(v);
    fields_.push_back({name, &floats_.back(), PluginFieldType::kFLOAT32, 1});
    return *this;
  }
  FieldList& raw(PluginField field) {
    fields_.push_back(field);
    return *this;
  }
  std::vector<PluginField>& fields() { return fields_; }
  std::span<const PluginField> span() const { return fields_; }
  // The same fields without `name` (pointers still into this object).
  std::vector<PluginField> without(std::string_view name) const {
    std::vector<PluginField> out;
    for (const auto& f : fields_)
      if (name != f.name) out.push_back(f);
    return out;
  }

 private:
  std::deque<std::int32_t> ints_;
  std::deque<float> floats_;
  std::vector<PluginField> fields_;
};

void add_v1(FieldList& l, int type_id, int hidden, int heads, int has_mask) {
  l.i("type_id", type_id).i("hidden_size", hidden).i("num_heads", heads).i("has_mask", has_mask);
}

// A random valid (hidden_size, num_heads) with head size 1..256.
std::pair<int, int> random_heads(std::mt19937_64& rng) {
  const int heads = std::uniform_int_distribution<int>(1, 16)(rng);
  const int head_size = std::uniform_int_distribution<int>(1, 256)(rng);
  return {heads * head_size, heads};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Names, versions

TEST(TrtFields, NamesPerVersionExactly) {
  using V = std::vector<std::string_view>;
  const V v1 = {"type_id", "hidden_size", "num_heads", "has_mask", "dq_probs"};
  const V v2 = {"type_id",  "hidden_size", "num_heads",         "has_mask",
                "dq_probs", "var_seqlen",  "use_int8_scale_max"};
  const V v3 = {"hidden_size",       "num_heads",       "dq_probs",        "use_int8_scale_max",
                "use_explicit_int8", "input_qkv_scale", "output_ctx_scale"};
  EXPECT_EQ(field_names(1), v1);
  EXPECT_EQ(field_names(2), v2);
  EXPECT_EQ(field_names(3), v3);
  EXPECT_EQ(field_names(4), v1);
  EXPECT_EQ(field_names(5), v2);
  EXPECT_EQ(field_names(6), v3);
  for (int v = 1; v <= 6; ++v)
    for (const PluginField& f : creator_fields(v)) {
      EXPECT_EQ(f.data, nullptr);
      EXPECT_EQ(f.length, 1);
      const bool is_float =
          std::string_view(f.name) == "dq_probs" || std::string_view(f.name).ends_with("_scale");
      EXPECT_EQ(f.type, is_float ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32) << f.name;
    }
  EXPECT_STREQ(kPluginName, "CustomQKVToContextPluginDynamic");
}

TEST(TrtFields, FieldTypeValuesMirrorTensorRT) {
  EXPECT_EQ(static_cast<int>(PluginFieldType::kFLOAT16), 0);
  EXPECT_EQ(static_cast<int>(PluginFieldType::kFLOAT32), 1);
  EXPECT_EQ(static_cast<int>(PluginFieldType::kFLOAT64), 2);
  EXPECT_EQ(static_cast<int>(PluginFieldType::kINT8), 3);
  EXPECT_EQ(static_cast<int>(PluginFieldType::kINT16), 4);
  EXPECT_EQ(static_cast<int>(PluginFieldType::kINT32), 5);
  EXPECT_EQ(static_cast<int>(PluginFieldType::kCHAR), 6);
  EXPECT_EQ(static_cast<int>(PluginFieldType::kDIMS), 7);
  EXPECT_EQ(static_cast<int>(PluginFieldType::kUNKNOWN), 8);
  EXPECT_EQ(to_string(PluginFieldType::kINT32), "kINT32");
  EXPECT_EQ(to_string(static_cast<PluginFieldType>(77)), "PluginFieldType(77)");
}

TEST(TrtFields, VersionStrings) {
  for (int v = 1; v <= 6; ++v) {
    EXPECT_EQ(version_string(v), std::to_string(v));
    EXPECT_EQ(parse_version(std::to_string(v)), v);
    EXPECT_EQ(legacy_version(v), v > 3 ? v - 3 : v);
  }
  for (int bad : {0, 7, -1})
    expect_error([&] { (void)version_string(bad); },
                 "CustomQKVToContextPluginDynamic: version " + std::to_string(bad) +
                     " is not allowed: 1, 2 or 3 (IPluginV2DynamicExt) or 4, 5 or 6");
  for (const char* bad : {"", "0", "7", "1.0", "12", "v1"})
    expect_error([&] { (void)parse_version(bad); },
                 std::string("plugin version \"") + bad + "\" is not allowed");
  FieldList l;
  add_v1(l, 1, 64, 1, 0);
  expect_error([&] { create_plugin_state(0, l.span(), 80); }, "version 0 is not allowed");
  expect_error([&] { create_plugin_state(9, l.span(), 80); }, "version 9 is not allowed");
}

// ---------------------------------------------------------------------------------------------
// Parsing: required fields, values, types

TEST(TrtFields, EachRequiredFieldMissing) {
  for (int v : {1, 2, 4, 5}) {
    FieldList l;
    add_v1(l, 1, 768, 12, 1);
    for (const char* name : {"type_id", "hidden_size", "num_heads", "has_mask"}) {
      const auto fields = l.without(name);
      expect_error([&] { create_plugin_state(v, fields, 80); },
                   "CustomQKVToContextPluginDynamic v" + std::to_string(v) + ": required field '" +
                       name + "' is missing (version " + std::to_string(v) +
                       " requires type_id, hidden_size, num_heads, has_mask)");
    }
  }
  for (int v : {3, 6}) {
    FieldList l;
    l.i("hidden_size", 768).i("num_heads", 12);
    for (const char* name : {"hidden_size", "num_heads"}) {
      const auto fields = l.without(name);
      expect_error([&] { create_plugin_state(v, fields, 90); },
                   std::string("required field '") + name + "' is missing (version " +
                       std::to_string(v) + " requires hidden_size, num_heads)");
    }
  }
}

TEST(TrtFields, EachInvalidValueNamesFieldValueAndRule) {
  struct Case {
    int version;
    const char* field;
    bool is_float;
    double value;
    std::string fragment;
  };
  const std::string nan = "nan";
  const Case cases[] = {
      {1, "type_id", false, 3,
       "v1: field 'type_id' = 3 is not allowed: 0 (FP32), 1 (FP16) or 2 (INT8)"},
      {2, "type_id", false, -1,
       "v2: field 'type_id' = -1 is not allowed: 0 (FP32), 1 (FP16) or 2 (INT8)"},
      {1, "hidden_size", false, 0, "v1: field 'hidden_size' = 0 is not allowed: > 0"},
      {3, "hidden_size", false, -768, "v3: field 'hidden_size' = -768 is not allowed: > 0"},
      {2, "num_heads", false, 0, "v2: field 'num_heads' = 0 is not allowed: > 0"},
      {6, "num_heads", false, -4, "v6: field 'num_heads' = -4 is not allowed: > 0"},
      {1, "has_mask", false, 2, "v1: field 'has_mask' = 2 is not allowed: 0 or 1"},
      {5, "has_mask", false, -1, "v5: field 'has_mask' = -1 is not allowed: 0 or 1"},
      {1, "dq_probs", true, 0.0,
       "v1: field 'dq_probs' = 0 is not allowed: finite and > 0 (probability dequantization scale"},
      {2, "dq_probs", true, -0.5, "v2: field 'dq_probs' = -0.5 is not allowed: finite and > 0"},
      {3, "dq_probs", true, NAN, "v3: field 'dq_probs' = nan is not allowed"},
      {4, "dq_probs", true, INFINITY, "v4: field 'dq_probs' = inf is not allowed"},
      {2, "use_int8_scale_max", false, 2,
       "v2: field 'use_int8_scale_max' = 2 is not allowed: 0 or 1"},
      {3, "use_int8_scale_max", false, -1,
       "v3: field 'use_int8_scale_max' = -1 is not allowed: 0 or 1"},
      {3, "input_qkv_scale", true, 0.0,
       "v3: field 'input_qkv_scale' = 0 is not allowed: finite and > 0 (QKV quantization scale, "
       "used iff use_explicit_int8)"},
      {6, "input_qkv_scale", true, NAN, "v6: field 'input_qkv_scale' = nan is not allowed"},
      {3, "output_ctx_scale", true, -1.0,
       "v3: field 'output_ctx_scale' = -1 is not allowed: finite and > 0 (context quantization "
       "scale"},
      {6, "output_ctx_scale", true, INFINITY, "v6: field 'output_ctx_scale' = inf is not allowed"},
  };
  for (const Case& c : cases) {
    FieldList l;
    // Valid fields first; the bad one last (a later occurrence of the same name wins).
    if (legacy_version(c.version) == 3)
      l.i("hidden_size", 256).i("num_heads", 4);
    else
      add_v1(l, 2, 256, 4, 1);
    if (legacy_version(c.version) == 2) l.i("var_seqlen", 1);
    if (c.is_float)
      l.f(c.field, static_cast<float>(c.value));
    else
      l.i(c.field, static_cast<std::int32_t>(c.value));
    expect_error([&] { create_plugin_state(c.version, l.span(), 80); },
                 "CustomQKVToContextPluginDynamic " + c.fragment);
  }
}

TEST(TrtFields, HiddenSizeMustBeAMultipleOfNumHeads) {
  FieldList l;
  add_v1(l, 1, 100, 12, 0);
  expect_error([&] { create_plugin_state(1, l.span(), 80); },
               "CustomQKVToContextPluginDynamic v1: hidden_size = 100 with num_heads = 12 is not "
               "allowed: a multiple of num_heads (head size = hidden_size / num_heads)");
  FieldList v3;
  v3.i("hidden_size", 770).i("num_heads", 12);
  expect_error([&] { create_plugin_state(3, v3.span(), 80); },
               "v3: hidden_size = 770 with num_heads = 12");
}

TEST(TrtFields, AcceptsWhatTensorRTMerelyHasNoKernelFor) {
  // Any head size and any mask/type combination of v1 that TensorRT would run unfused or reject
  // only later for lack of a kernel (SPEC §7): qkv2ctx runs them, so creation accepts them.
  std::mt19937_64 rng(test::fresh_seed());
  for (int trial = 0; trial < 20; ++trial) {
    const auto [hidden, heads] = random_heads(rng);
    for (int type_id : {0, 1, 2})
      for (int has_mask : {0, 1}) {
        FieldList l;
        add_v1(l, type_id, hidden, heads, has_mask);
        const PluginState s = create_plugin_state(1, l.span(), 86);
        EXPECT_EQ(s.head_size(), hidden / heads);
      }
    FieldList var;
    add_v1(var, 1, hidden, heads, 1);
    var.i("var_seqlen", 1);
    EXPECT_NO_THROW(create_plugin_state(2, var.span(), 90));  // H > 64 aborts in TensorRT
    FieldList v3;
    v3.i("hidden_size", hidden).i("num_heads", heads);
    EXPECT_NO_THROW(create_plugin_state(3, v3.span(), 70));  // SM 70 has no v3 kernels
  }
}

TEST(TrtFields, DefaultsOfEveryVersion) {
  std::mt19937_64 rng(test::fresh_seed());
  const auto [hidden, heads] = random_heads(rng);
  for (int v : {1, 4}) {
    FieldList int8;
    add_v1(int8, 2, hidden, heads, 1);
    const PluginState s = create_plugin_state(v, int8.span(), 80);
    EXPECT_EQ(s.dq_probs, 1.0f / 127.0f);  // exactly, SPEC §9 item 5
    EXPECT_FALSE(s.use_int8_scale_max);    // v1 has no such field
    EXPECT_FALSE(s.var_seqlen);
    EXPECT_EQ(s.runner.kind, RunnerKind::none);
    EXPECT_EQ(s.S, 0);
    EXPECT_EQ(s.B, 0);
    EXPECT_EQ(s.sm, 80);
    FieldList fp16;
    add_v1(fp16, 1, hidden, heads, 0);
    EXPECT_EQ(create_plugin_state(v, fp16.span(), 80).dq_probs, -1.0f);  // unused
  }
  for (int v : {2, 5}) {
    FieldList l;
    add_v1(l, 1, hidden, heads, 1);
    const PluginState s = create_plugin_state(v, l.span(), 90);
    EXPECT_FALSE(s.var_seqlen);         // default 0
    EXPECT_TRUE(s.use_int8_scale_max);  // default 1
    EXPECT_EQ(s.dq_probs, -1.0f);
    EXPECT_EQ(s.runner, (RunnerState{RunnerKind::unfused, kCublasGemmDefaultTensorOp,
                                     kCublasGemmDefaultTensorOp, 0, 0, hidden / heads}));
    FieldList int8;
    add_v1(int8, 2, hidden, heads, 1);
    int8.i("var_seqlen", 1);
    const PluginState i8 = create_plugin_state(v, int8.span(), 90);
    EXPECT_EQ(i8.dq_probs, 1.0f / 127.0f);
    EXPECT_TRUE(i8.use_int8_scale_max);
    // configurePlugin's var-seqlen placeholder (SPEC §6.5).
    EXPECT_EQ(i8.runner, (RunnerState{RunnerKind::fused, kCublasGemmDefaultTensorOp,
                                      kCublasGemmDefaultTensorOp, 256, 1, hidden / heads}));
  }
  for (int v : {3, 6}) {
    FieldList l;
    l.i("hidden_size", hidden).i("num_heads", heads);
    const PluginState s = create_plugin_state(v, l.span(), 90);
    EXPECT_EQ(s.type_id, 2);
    EXPECT_EQ(s.dq_probs, 1.0f / 127.0f);
    EXPECT_TRUE(s.use_int8_scale_max);
    EXPECT_FALSE(s.use_explicit_int8);
    EXPECT_EQ(s.input_qkv_scale, 1.0f);
    EXPECT_EQ(s.output_ctx_scale, 1.0f);
    EXPECT_TRUE(s.var_seqlen);
    EXPECT_FALSE(s.has_mask);
  }
}

TEST(TrtFields, GivenValuesAreKept) {
  std::mt19937_64 rng(test::fresh_seed());
  const float dq = std::uniform_real_distribution<float>(0.001f, 0.05f)(rng);
  const float qkv = std::uniform_real_distribution<float>(0.01f, 1.0f)(rng);
  const float ctx = std::uniform_real_distribution<float>(0.01f, 1.0f)(rng);
  FieldList l;
  l.i("hidden_size", 1024)
      .i("num_heads", 16)
      .f("dq_probs", dq)
      .i("use_int8_scale_max", 0)
      .i("use_explicit_int8", 7)
      .f("input_qkv_scale", qkv)
      .f("output_ctx_scale", ctx);
  const PluginState s = create_plugin_state(3, l.span(), 90);
  EXPECT_EQ(s.dq_probs, dq);
  EXPECT_FALSE(s.use_int8_scale_max);
  EXPECT_TRUE(s.use_explicit_int8);  // any non-zero value is on
  EXPECT_EQ(s.input_qkv_scale, qkv);
  EXPECT_EQ(s.output_ctx_scale, ctx);
  EXPECT_EQ(s.head_size(), 64);

  FieldList v2;
  add_v1(v2, 1, 768, 12, 1);
  v2.i("var_seqlen", 5).f("dq_probs", dq);  // var_seqlen: any non-zero enables it
  const PluginState s2 = create_plugin_state(2, v2.span(), 80);
  EXPECT_TRUE(s2.var_seqlen);
  EXPECT_EQ(s2.dq_probs, dq);  // kept even for FP16 (unused there)
}

TEST(TrtFields, DeclaredTypeAndLengthMustMatch) {
  const std::int32_t ints[2] = {768, 12};
  const float f = 768.0f;
  FieldList l;
  add_v1(l, 1, 768, 12, 1);
  auto with = [&](PluginField bad) {
    std::vector<PluginField> fields = l.fields();
    fields.push_back(bad);
    return fields;
  };
  const auto as_float = with({"hidden_size", &f, PluginFieldType::kFLOAT32, 1});
  expect_error([&] { create_plugin_state(1, as_float, 80); },
               "v1: field 'hidden_size' is declared as kFLOAT32 (1), expected kINT32 (5)");
  const auto dq_as_int = with({"dq_probs", ints, PluginFieldType::kINT32, 1});
  expect_error([&] { create_plugin_state(1, dq_as_int, 80); },
               "v1: field 'dq_probs' is declared as kINT32 (5), expected kFLOAT32 (1)");
  const auto as_int8 = with({"has_mask", ints, PluginFieldType::kINT8, 1});
  expect_error([&] { create_plugin_state(2, as_int8, 80); },
               "v2: field 'has_mask' is declared as kINT8 (3), expected kINT32 (5)");
  const auto two = with({"num_heads", ints, PluginFieldType::kINT32, 2});
  expect_error([&] { create_plugin_state(1, two, 80); },
               "v1: field 'num_heads' has length 2, expected 1");
  const auto zero = with({"num_heads", ints, PluginFieldType::kINT32, 0});
  expect_error([&] { create_plugin_state(1, zero, 80); },
               "field 'num_heads' has length 0, expected 1");
  const auto null_data = with({"dq_probs", nullptr, PluginFieldType::kFLOAT32, 1});
  expect_error([&] { create_plugin_state(1, null_data, 80); },
               "v1: field 'dq_probs' has no data (null pointer)");
  std::vector<PluginField> null_name = l.fields();
  null_name.insert(null_name.begin() + 1, PluginField{nullptr, ints, PluginFieldType::kINT32, 1});
  expect_error([&] { create_plugin_state(1, null_name, 80); }, "v1: field #1 has a null name");
}

TEST(TrtFields, UnknownNamesIgnoredLastOccurrenceWinsUnalignedDataRead) {
  FieldList l;
  add_v1(l, 1, 512, 8, 0);
  l.raw({"no_such_field", nullptr, PluginFieldType::kFLOAT64, 3});  // ignored, even without data
  l.i("S", -5);         // not a v1/v2 attribute: ignored
  l.i("num_heads", 4);  // a second occurrence wins
  const PluginState s = create_plugin_state(1, l.span(), 80);
  EXPECT_EQ(s.num_heads, 4);
  EXPECT_EQ(s.head_size(), 128);
  EXPECT_EQ(s.S, 0);
  // TensorRT validates every occurrence, not only the last.
  FieldList twice;
  add_v1(twice, 1, 512, 8, 0);
  twice.i("num_heads", 0).i("num_heads", 8);
  expect_error([&] { create_plugin_state(1, twice.span(), 80); }, "field 'num_heads' = 0");
  // Runtime-only names of the IPluginV3 ports are errors at build time (TensorRT aborts).
  expect_error([&] { create_plugin_state(4, l.span(), 80); },
               "v4: field 'S' is only read when TensorRT recreates the plugin from an engine");
  // Field data need not be aligned.
  alignas(8) unsigned char buf[16] = {};
  const std::int32_t hidden = 96;
  std::memcpy(buf + 1, &hidden, 4);
  FieldList u;
  u.raw({"hidden_size", buf + 1, PluginFieldType::kINT32, 1}).i("num_heads", 2);
  EXPECT_EQ(create_plugin_state(3, u.span(), 80).hidden_size, 96);
}

TEST(TrtFields, Version2ModeCombinations) {
  FieldList int8_fixed;
  add_v1(int8_fixed, 2, 768, 12, 1);
  expect_error([&] { create_plugin_state(2, int8_fixed.span(), 80); },
               "CustomQKVToContextPluginDynamic v2: type_id = 2 (INT8) with var_seqlen = 0 is not "
               "allowed: version 2 runs INT8 only in var-seqlen mode (var_seqlen = 1)");
  int8_fixed.i("var_seqlen", 0);
  expect_error([&] { create_plugin_state(5, int8_fixed.span(), 80); },
               "v5: type_id = 2 (INT8) with var_seqlen = 0 is not allowed");
  FieldList fp32_var;
  add_v1(fp32_var, 0, 768, 12, 1);
  fp32_var.i("var_seqlen", 1);
  expect_error([&] { create_plugin_state(2, fp32_var.span(), 80); },
               "v2: var_seqlen = 1 with type_id = 0 (FP32) is not allowed: var-seqlen mode takes "
               "type_id 1 (FP16) or 2 (INT8)");
  FieldList no_mask;
  add_v1(no_mask, 1, 768, 12, 0);
  no_mask.i("var_seqlen", 1);
  expect_error([&] { create_plugin_state(2, no_mask.span(), 80); },
               "v2: var_seqlen = 1 with has_mask = 0 is not allowed: the var-seqlen plugin has 4 "
               "inputs");
}

TEST(TrtFields, SmIsRecordedAndChecked) {
  FieldList l;
  add_v1(l, 1, 64, 1, 0);
  for (int sm : {75, 80, 86, 90, 100, 120}) EXPECT_EQ(create_plugin_state(1, l.span(), sm).sm, sm);
  expect_error([&] { create_plugin_state(1, l.span(), 0); },
               "v1: sm = 0 is not allowed: the device's compute capability 10*major+minor");
  expect_error([&] { create_plugin_state(2, l.span(), -80); }, "v2: sm = -80 is not allowed");
  expect_error([&] { create_plugin_state(1, l.span(), 80, Phase::runtime); },
               "v1: Phase::runtime field collections exist only for versions 4-6");
}

TEST(TrtFields, ValidateStateKeepsVersionInvariants) {
  FieldList l;
  add_v1(l, 2, 768, 12, 1);
  PluginState s = create_plugin_state(1, l.span(), 80);
  EXPECT_NO_THROW(validate_state(s));
  PluginState bad = s;
  bad.use_int8_scale_max = true;
  expect_error([&] { validate_state(bad); }, "v1: use_int8_scale_max = 1 is not allowed");
  bad = s;
  bad.var_seqlen = true;
  expect_error([&] { validate_state(bad); }, "v1: var_seqlen = 1 is not allowed");
  bad = s;
  bad.dq_probs = -1.0f;  // INT8 needs a real dq_probs
  expect_error([&] { validate_state(bad); }, "v1: dq_probs = -1 is not allowed");
  bad = s;
  bad.runner.kind = RunnerKind::fused;
  expect_error([&] { validate_state(bad); }, "v1: runner = fused is not allowed");
  bad = s;
  bad.runner = {RunnerKind::unfused, 1, 2, 128, 8, 32};
  expect_error([&] { validate_state(bad); }, "runner head_size = 32 is not allowed");
  bad = s;
  bad.B = -1;
  expect_error([&] { validate_state(bad); }, "v1: B = -1 is not allowed: >= 0");
}

// ---------------------------------------------------------------------------------------------
// to_descriptor

namespace {
PluginState v1_state(int version, int type_id, int hidden, int heads, int has_mask, int sm = 90) {
  FieldList l;
  add_v1(l, type_id, hidden, heads, has_mask);
  return create_plugin_state(version, l.span(), sm);
}
PluginState v2_state(int version, int type_id, int hidden, int heads, int var_seqlen,
                     int scale_max = 1, int sm = 90) {
  FieldList l;
  add_v1(l, type_id, hidden, heads, 1);
  l.i("var_seqlen", var_seqlen).i("use_int8_scale_max", scale_max);
  return create_plugin_state(version, l.span(), sm);
}
PluginState v3_state(int version, int hidden, int heads, int explicit_int8, float qkv = 1.0f,
                     float ctx = 1.0f, int scale_max = 1) {
  FieldList l;
  l.i("hidden_size", hidden)
      .i("num_heads", heads)
      .i("use_explicit_int8", explicit_int8)
      .f("input_qkv_scale", qkv)
      .f("output_ctx_scale", ctx)
      .i("use_int8_scale_max", scale_max);
  return create_plugin_state(version, l.span(), 90);
}
}  // namespace

TEST(TrtDescriptor, Version1FloatTypesAndMask) {
  std::mt19937_64 rng(test::fresh_seed());
  const auto [hidden, heads] = random_heads(rng);
  for (int v : {1, 4}) {
    const AttentionDesc fp32 = to_descriptor(v1_state(v, 0, hidden, heads, 0), {});
    EXPECT_EQ(fp32.dtype, DType::fp32);
    EXPECT_EQ(fp32.num_heads, heads);
    EXPECT_EQ(fp32.head_size, hidden / heads);
    EXPECT_EQ(fp32.layout, Layout::trt);
    EXPECT_EQ(fp32.mask, MaskMode::none);
    EXPECT_EQ(fp32.bound, BoundMode::row_max);
    EXPECT_EQ(fp32.scale_head_size, 0);
    const AttentionDesc fp16 = to_descriptor(v1_state(v, 1, hidden, heads, 1), {});
    EXPECT_EQ(fp16.dtype, DType::fp16);
    EXPECT_EQ(fp16.mask, MaskMode::lengths);
    EXPECT_NO_THROW(validate(fp16));
    // Tensor scales are not read for float types (TensorRT passes -1).
    EXPECT_NO_THROW(to_descriptor(v1_state(v, 1, hidden, heads, 1), {-1.0f, -1.0f}));
  }
}

TEST(TrtDescriptor, Version1Int8RowMaxByDefaultFixedBoundOnRequest) {
  std::mt19937_64 rng(test::fresh_seed());
  std::uniform_real_distribution<float> scale(0.005f, 0.2f);
  const TensorScales ts{scale(rng), scale(rng)};
  const PluginState s = v1_state(1, 2, 768, 12, 1);
  const AttentionDesc d = to_descriptor(s, ts);
  EXPECT_EQ(d.dtype, DType::int8);
  EXPECT_EQ(d.layout, Layout::trt);
  EXPECT_EQ(d.mask, MaskMode::lengths);
  EXPECT_EQ(d.bound, BoundMode::row_max);  // SPEC §5.0.1: v1 cannot set use_int8_scale_max
  EXPECT_EQ(d.int8.qkv_scale, ts.qkv_scale);
  EXPECT_EQ(d.int8.ctx_scale, ts.ctx_scale);
  EXPECT_EQ(d.int8.dq_probs, 1.0f / 127.0f);
  CompatOptions o;
  o.v1_int8_scale_max = true;
  EXPECT_EQ(to_descriptor(s, ts, o).bound, BoundMode::guarded);
  o.scale_max_mode = BoundMode::fixed_bound;
  EXPECT_EQ(to_descriptor(s, ts, o).bound, BoundMode::fixed_bound);
  const TensorScales no_qkv{-1.0f, ts.ctx_scale}, no_ctx{ts.qkv_scale, 0.0f}, tiny{1e-30f, 1.0f};
  expect_error([&] { to_descriptor(s, no_qkv); },
               "v1: input 0 (QKV) tensor scale = -1 is not allowed: finite and > 0");
  expect_error([&] { to_descriptor(s, no_ctx); },
               "v1: output 0 (context) tensor scale = 0 is not allowed");
  expect_error([&] { to_descriptor(s, tiny); },  // the derived scale_bmm1 underflows to 0
               "cannot run in qkv2ctx: int8 scales qkv_scale=");
}

TEST(TrtDescriptor, Version2FixedAndVarSeqlen) {
  for (int v : {2, 5}) {
    const AttentionDesc fixed = to_descriptor(v2_state(v, 1, 1024, 16, 0), {});
    EXPECT_EQ(fixed.dtype, DType::fp16);
    EXPECT_EQ(fixed.mask, MaskMode::lengths);
    EXPECT_EQ(fixed.layout, Layout::trt);
    FieldList no_mask;
    add_v1(no_mask, 0, 1024, 16, 0);
    EXPECT_EQ(to_descriptor(create_plugin_state(v, no_mask.span(), 80), {}).mask, MaskMode::none);

    const AttentionDesc var = to_descriptor(v2_state(v, 1, 1024, 16, 1), {});
    EXPECT_EQ(var.mask, MaskMode::varlen);
    EXPECT_EQ(var.bound, BoundMode::row_max);  // FP16 ignores use_int8_scale_max

    const TensorScales ts{0.04f, 0.03f};
    const AttentionDesc i8 = to_descriptor(v2_state(v, 2, 768, 12, 1), ts);
    EXPECT_EQ(i8.dtype, DType::int8);
    EXPECT_EQ(i8.mask, MaskMode::varlen);
    EXPECT_EQ(i8.bound, BoundMode::guarded);  // use_int8_scale_max = 1 -> guarded (SPEC R9)
    CompatOptions fixed_bound;
    fixed_bound.scale_max_mode = BoundMode::fixed_bound;
    EXPECT_EQ(to_descriptor(v2_state(v, 2, 768, 12, 1), ts, fixed_bound).bound,
              BoundMode::fixed_bound);
    EXPECT_EQ(to_descriptor(v2_state(v, 2, 768, 12, 1, 0), ts, fixed_bound).bound,
              BoundMode::row_max);  // use_int8_scale_max = 0
  }
}

TEST(TrtDescriptor, Version3ExplicitScalesIgnoreTensorScales) {
  std::mt19937_64 rng(test::fresh_seed());
  std::uniform_real_distribution<float> scale(0.005f, 0.2f);
  const float qkv = scale(rng), ctx = scale(rng);
  for (int v : {3, 6}) {
    // SPEC §9 item 28: explicit -> the fields, whatever the tensor descriptors say.
    const AttentionDesc e = to_descriptor(v3_state(v, 768, 12, 1, qkv, ctx), {-1.0f, -1.0f});
    EXPECT_EQ(e.dtype, DType::int8);
    EXPECT_EQ(e.layout, Layout::chw32);
    EXPECT_EQ(e.mask, MaskMode::varlen);
    EXPECT_EQ(e.int8.qkv_scale, qkv);
    EXPECT_EQ(e.int8.ctx_scale, ctx);
    EXPECT_EQ(e.bound, BoundMode::guarded);
    const AttentionDesc e2 = to_descriptor(v3_state(v, 768, 12, 1, qkv, ctx), {0.5f, 0.25f});
    EXPECT_EQ(e2.int8.qkv_scale, qkv);
    EXPECT_EQ(e2.int8.ctx_scale, ctx);
    // Not explicit -> the tensor scales; the fields are ignored.
    const AttentionDesc t = to_descriptor(v3_state(v, 768, 12, 0, qkv, ctx), {0.5f, 0.25f});
    EXPECT_EQ(t.int8.qkv_scale, 0.5f);
    EXPECT_EQ(t.int8.ctx_scale, 0.25f);
    const TensorScales none{-1.0f, -1.0f};
    expect_error([&] { to_descriptor(v3_state(v, 768, 12, 0), none); },
                 "input 0 (QKV) tensor scale = -1 is not allowed");
    EXPECT_EQ(to_descriptor(v3_state(v, 768, 12, 0, 1, 1, 0), {0.5f, 0.25f}).bound,
              BoundMode::row_max);
  }
  // CHW32 needs E % 32 == 0: a qkv2ctx layout limit, named with the plugin fields.
  expect_error([&] { to_descriptor(v3_state(3, 100, 4, 1), {}); },
               "v3 (hidden_size = 100, num_heads = 4) cannot run in qkv2ctx: AttentionDesc.layout "
               "= chw32 is not allowed");
}

TEST(TrtDescriptor, HeadSizeBeyondQkv2ctxLimitIsAnErrorAtMappingNotCreation) {
  const PluginState s = v1_state(1, 0, 600, 2, 0);  // H = 300: TensorRT would run it unfused
  expect_error([&] { to_descriptor(s, {}); },
               "v1 (hidden_size = 600, num_heads = 2) cannot run in qkv2ctx: "
               "AttentionDesc.head_size = 300 is not allowed: 1 to 256");
}

TEST(TrtDescriptor, TrueScaleByDefaultPaddedScaleOnRequest) {
  CompatOptions padded;
  padded.padded_head_size_scale = true;
  // Default: the true 1/sqrt(H) everywhere (SPEC §5.3, §9 item 29).
  EXPECT_EQ(to_descriptor(v2_state(2, 1, 256, 16, 1), {}).scale_head_size, 0);
  EXPECT_EQ(to_descriptor(v3_state(3, 256, 8, 1), {}).scale_head_size, 0);
  // v3: 1/8 hard-coded for every head size.
  EXPECT_EQ(to_descriptor(v3_state(3, 256, 8, 1), {}, padded).scale_head_size, 64);   // H = 32
  EXPECT_EQ(to_descriptor(v3_state(6, 1024, 8, 1), {}, padded).scale_head_size, 64);  // H = 128
  EXPECT_EQ(to_descriptor(v3_state(3, 768, 12, 1), {}, padded).scale_head_size, 0);   // H = 64
  // v2 var-seqlen on SM 90: no D = 32 kernels, H < 64 is padded to 64.
  for (int h : {1, 16, 32, 48, 63})
    EXPECT_EQ(to_descriptor(v2_state(2, 1, 4 * h, 4, 1), {}, padded).scale_head_size, 64) << h;
  EXPECT_EQ(to_descriptor(v2_state(2, 1, 256, 4, 1), {}, padded).scale_head_size, 0);  // 64
  EXPECT_EQ(to_descriptor(v2_state(2, 1, 512, 4, 1), {}, padded).scale_head_size, 0);  // 128
  // Fixed-length modes are never padded.
  EXPECT_EQ(to_descriptor(v2_state(2, 1, 64, 4, 0), {}, padded).scale_head_size, 0);
  EXPECT_EQ(to_descriptor(v1_state(1, 1, 64, 4, 1), {}, padded).scale_head_size, 0);
  // SM 80: D = 32 exists for kernel S 128, 256, 512; the choice needs the max sequence length.
  const PluginState fp16_h16 = v2_state(2, 1, 64, 4, 1, 1, 80);
  const PluginState int8_h16 = v2_state(2, 2, 64, 4, 1, 1, 80);
  expect_error([&] { to_descriptor(fp16_h16, {}, padded); },
               "v2: padded_head_size_scale with head size 16 on SM 80 depends on the max sequence "
               "length",
               ErrorCode::unsupported);
  struct Case {
    const PluginState* s;
    int max_seqlen;
    int expect;
  };
  const Case cases[] = {
      {&fp16_h16, 64, 64},  {&fp16_h16, 96, 64},  {&fp16_h16, 100, 32}, {&fp16_h16, 150, 32},
      {&fp16_h16, 256, 32}, {&fp16_h16, 300, 64}, {&fp16_h16, 512, 32}, {&int8_h16, 64, 32},
      {&int8_h16, 150, 64}, {&int8_h16, 200, 32}, {&int8_h16, 384, 64}, {&int8_h16, 400, 32},
  };
  for (const Case& c : cases) {
    CompatOptions o = padded;
    o.max_seqlen = c.max_seqlen;
    EXPECT_EQ(to_descriptor(*c.s, {0.1f, 0.1f}, o).effective_scale_head_size(), c.expect)
        << "type " << c.s->type_id << " max_seqlen " << c.max_seqlen;
  }
  CompatOptions too_long = padded;
  too_long.max_seqlen = 600;
  expect_error([&] { to_descriptor(fp16_h16, {}, too_long); },
               "TensorRT has no var-seqlen kernel above 512", ErrorCode::unsupported);
  // 32 < H < 64 can only use D = 64, whatever the SM.
  EXPECT_EQ(to_descriptor(v2_state(2, 1, 160, 4, 1, 1, 80), {}, padded).scale_head_size, 64);
}

// ---------------------------------------------------------------------------------------------
// output_dims

namespace {
template <class... Extent>
Dims dims(Extent... extents) {
  Dims r;
  r.nbDims = static_cast<int>(sizeof...(extents));
  int i = 0;
  ((r.d[i++] = static_cast<std::int64_t>(extents)), ...);
  return r;
}
void expect_dims(const Dims& got, std::initializer_list<std::int64_t> want) {
  ASSERT_EQ(got.nbDims, static_cast<int>(want.size()));
  int i = 0;
  for (std::int64_t w : want) EXPECT_EQ(got.d[i++], w) << "d[" << i - 1 << "]";
}
}  // namespace

TEST(TrtOutputDims, EveryModeDividesTheHiddenExtentByThree) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::int64_t S = std::uniform_int_distribution<int>(1, 700)(rng);
  const std::int64_t B = std::uniform_int_distribution<int>(1, 64)(rng);
  const std::int64_t T = std::uniform_int_distribution<int>(1, 9000)(rng);
  for (int v : {1, 2, 4, 5}) {
    expect_dims(output_dims(v, dims(S, B, 2304, 1, 1)), {S, B, 768, 1, 1});
    expect_dims(output_dims(v, dims(-1, -1, 2304, 1, 1)), {-1, -1, 768, 1, 1});
  }
  for (int v : {2, 5}) expect_dims(output_dims(v, dims(T, 3072, 1, 1), true), {T, 1024, 1, 1});
  for (int v : {3, 6}) expect_dims(output_dims(v, dims(1, 2304, T, 1)), {1, 768, T, 1});
  expect_dims(output_dims(3, dims(1, -1, -1, 1)), {1, -1, -1, 1});
  expect_dims(output_dims(v2_state(2, 2, 768, 12, 1), dims(T, 2304, 1, 1)), {T, 768, 1, 1});
  expect_dims(output_dims(v1_state(1, 1, 768, 12, 1), dims(S, B, 2304, 1, 1)), {S, B, 768, 1, 1});
}

TEST(TrtOutputDims, RejectsShapesThePluginCannotTake) {
  expect_error([&] { output_dims(1, dims(128, 8, 2304, 1)); },
               "v1: input 0 (QKV) rank = 4 is not allowed: 5 ([S, B, 3E, 1, 1])");
  expect_error([&] { output_dims(2, dims(100, 2304, 1, 1, 1), true); },
               "v2: input 0 (QKV) rank = 5 is not allowed: 4 ([T, 3E, 1, 1])");
  expect_error([&] { output_dims(1, dims(128, 8, 2305, 1, 1)); },
               "v1: input 0 (QKV) d[2] = 2305 is not allowed: a multiple of 3");
  expect_error([&] { output_dims(1, dims(128, 8, 2304, 2, 1)); },
               "v1: input 0 (QKV) d[3] = 2 is not allowed: 1 ([S, B, 3E, 1, 1])");
  expect_error([&] { output_dims(3, dims(2, 2304, 100, 1)); },
               "v3: input 0 (QKV) d[0] = 2 is not allowed: 1 ([1, 3E, T, 1])");
  expect_error([&] { output_dims(1, dims(-2, 8, 2304, 1, 1)); },
               "d[0] = -2 is not allowed: >= 0, or -1 for a dynamic extent");
  expect_error([&] { output_dims(1, dims(128, 8, 2304, 1, 1), true); },
               "v1: var_seqlen = 1 is not allowed");
  expect_error([&] { output_dims(v1_state(1, 1, 768, 12, 1), dims(128, 8, 3072, 1, 1)); },
               "v1: input 0 (QKV) d[2] = 3072 is not allowed: 3 * hidden_size = 2304");
}
