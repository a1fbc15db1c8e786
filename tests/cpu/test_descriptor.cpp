// Descriptor validation and INT8 scale math: every field, every message.
#include <cmath>

#include "common/test_util.hpp"
#include "qkv2ctx/detail/int8_math.hpp"

using namespace qkv2ctx;

namespace {
std::string error_of(const AttentionDesc& d) {
  try {
    validate(d);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Descriptor, DefaultIsValid) { EXPECT_EQ(error_of(AttentionDesc{}), ""); }

TEST(Descriptor, RejectsEachBadFieldWithItsName) {
  struct Case { void (*mutate)(AttentionDesc&); const char* expect; };
  const Case cases[] = {
      {[](AttentionDesc& d) { d.dtype = DType::int32; }, "AttentionDesc.dtype = int32 is not allowed: one of fp32, fp16, bf16, int8"},
      {[](AttentionDesc& d) { d.num_heads = 0; }, "AttentionDesc.num_heads = 0 is not allowed: 1 to 4096"},
      {[](AttentionDesc& d) { d.num_heads = -3; }, "AttentionDesc.num_heads = -3"},
      {[](AttentionDesc& d) { d.head_size = 0; }, "AttentionDesc.head_size = 0 is not allowed: 1 to 256"},
      {[](AttentionDesc& d) { d.head_size = 257; }, "AttentionDesc.head_size = 257"},
      {[](AttentionDesc& d) { d.layout = Layout::chw32; }, "chw32 (TensorRT plugin v3) requires dtype int8, got fp16"},
      {[](AttentionDesc& d) { d.dtype = DType::int8; d.layout = Layout::chw32; }, "requires mask varlen, got none"},
      {[](AttentionDesc& d) { d.dtype = DType::int8; d.layout = Layout::chw32; d.mask = MaskMode::varlen; d.num_heads = 3; d.head_size = 10; }, "multiple of 32, got 30"},
      {[](AttentionDesc& d) { d.layout = static_cast<Layout>(9); }, "AttentionDesc.layout = 9"},
      {[](AttentionDesc& d) { d.mask = static_cast<MaskMode>(7); }, "AttentionDesc.mask = 7"},
      {[](AttentionDesc& d) { d.bound = BoundMode::guarded; }, "AttentionDesc.bound = guarded is not allowed: fixed_bound and guarded are INT8 softmax modes; dtype fp16 takes row_max"},
      {[](AttentionDesc& d) { d.scale_head_size = -1; }, "AttentionDesc.scale_head_size = -1"},
      {[](AttentionDesc& d) { d.probs = ProbsMode::max_relative; }, "AttentionDesc.probs = max_relative is not allowed: an INT8 probability mode; dtype fp16 takes trt"},
      {[](AttentionDesc& d) { d.dtype = DType::int8; d.bound = BoundMode::guarded; d.probs = ProbsMode::max_relative; }, "need bound row_max, got guarded"},
      {[](AttentionDesc& d) { d.probs = static_cast<ProbsMode>(5); }, "AttentionDesc.probs = 5"},
      {[](AttentionDesc& d) { d.dtype = DType::int8; d.int8.qkv_scale = 0; }, "int8.qkv_scale = 0.000000 is not allowed: it must be finite and > 0"},
      {[](AttentionDesc& d) { d.dtype = DType::int8; d.int8.ctx_scale = -1; }, "int8.ctx_scale = -1.000000"},
      {[](AttentionDesc& d) { d.dtype = DType::int8; d.int8.dq_probs = NAN; }, "int8.dq_probs = nan"},
      {[](AttentionDesc& d) { d.dtype = DType::int8; d.int8.qkv_scale = INFINITY; }, "int8.qkv_scale = inf"},
      {[](AttentionDesc& d) { d.dtype = DType::int8; d.int8.qkv_scale = 1e-30f; }, "derived kernel scale that is 0 or not finite"},
  };
  for (const auto& c : cases) {
    AttentionDesc d;
    c.mutate(d);
    const std::string msg = error_of(d);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "message: '" << msg << "'\nexpected to contain: '" << c.expect << "'";
  }
}

TEST(Int8ScaleMath, MatchesHandComputedValues) {
  // s_qkv = 4/127, s_ctx = 4/127, dq_probs = 1/127, H = 64 (conformance folder int8_h2_lens128-77-3-100).
  Int8Scales s{0.031496062874794006f, 0.031496062874794006f, 0.007874015718698502f};
  const Int8Derived d = derive_int8_scales(s, 64);
  EXPECT_EQ(d.scale_bmm1, 0.031496062874794006f * 0.031496062874794006f * 0.125f);
  EXPECT_NEAR(d.scale_bmm1, 0.000124000246, 1e-12);
  EXPECT_EQ(d.scale_softmax, 1.0f / 0.007874015718698502f);
  EXPECT_NEAR(d.scale_softmax, 127.0, 1e-4);
  EXPECT_NEAR(d.scale_bmm2, 0.00787401572, 1e-10);
  EXPECT_EQ(d.fixed_bound, d.scale_bmm1 * 16129.0f);
  EXPECT_EQ(d.max_relative_scale, (0.031496062874794006f / 0.031496062874794006f) * (1.0f / 127.0f));
  EXPECT_TRUE(d.enable_i2f_trick);
  EXPECT_FALSE(d.fixed_bound_underflow_likely);
  // i2f trick boundary: scale_bmm2 >= 2^-15.
  EXPECT_TRUE(derive_int8_scales({1.0f, 1.0f, 0x1p-15f}, 64).enable_i2f_trick);
  EXPECT_FALSE(derive_int8_scales({1.0f, 1.0f, 0x1.fffffep-16f}, 64).enable_i2f_trick);
  // s_qkv = 0.25 at H = 64: p_max = 126.0 > 87.34 (SPEC 5.0.1 table).
  const Int8Derived big = derive_int8_scales({0.25f, 0.25f, 1.0f / 127}, 64);
  EXPECT_FLOAT_EQ(big.fixed_bound, 126.0078125f);
  EXPECT_TRUE(big.fixed_bound_underflow_likely);
  // H = 32: rsqrt computed in FP32.
  EXPECT_EQ(derive_int8_scales({0.5f, 1.0f, 1.0f / 127}, 32).scale_bmm1, 0.25f * (1.0f / std::sqrt(32.0f)));
}

TEST(Int8Math, RoundingAndSaturation) {
  using int8_math::sat8_rne;
  EXPECT_EQ(sat8_rne(2.5f), 2);
  EXPECT_EQ(sat8_rne(3.5f), 4);
  EXPECT_EQ(sat8_rne(-2.5f), -2);
  EXPECT_EQ(sat8_rne(126.6f), 127);
  EXPECT_EQ(sat8_rne(1e9f), 127);
  EXPECT_EQ(sat8_rne(-1e9f), -128);
  EXPECT_EQ(sat8_rne(NAN), 0);
  EXPECT_EQ(int8_math::fast_exp_ftz_host(-87.4f), 0.0f);
  EXPECT_GT(int8_math::fast_exp_ftz_host(-87.0f), 0.0f);
  EXPECT_TRUE(std::isinf(int8_math::fast_exp_ftz_host(88.8f)));
  EXPECT_EQ(int8_math::inverse_row_sum(0.0f), 1.0f);
  EXPECT_EQ(int8_math::inverse_row_sum(NAN), 1.0f);
  EXPECT_EQ(int8_math::inverse_row_sum(INFINITY), 0.0f);
}

TEST(Enums, RoundTripThroughStrings) {
  for (auto v : {DType::fp32, DType::fp16, DType::bf16, DType::int8}) EXPECT_EQ(parse_dtype(to_string(v)), v);
  for (auto v : {Layout::trt, Layout::hf, Layout::chw32}) EXPECT_EQ(parse_layout(to_string(v)), v);
  for (auto v : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) EXPECT_EQ(parse_mask_mode(to_string(v)), v);
  for (auto v : {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded}) EXPECT_EQ(parse_bound_mode(to_string(v)), v);
  for (auto v : {ProbsMode::trt, ProbsMode::max_relative}) EXPECT_EQ(parse_probs_mode(to_string(v)), v);
  for (auto v : {Backend::automatic, Backend::cpu, Backend::cuda_unfused, Backend::cuda_fused}) EXPECT_EQ(parse_backend(to_string(v)), v);
  EXPECT_FALSE(parse_dtype("fp64"));
}
