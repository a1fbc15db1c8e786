// The cuBLASLt unfused backend against the CPU reference: every dtype x layout x mask x bound mode on
// random inputs (fresh seeds), S = 1 ... 1024 plus long rows, ragged and empty sequences. Tolerances
// are derived in gpu_test_util.cpp (float_tolerance, expect_matches_reference).
#include <string>
#include <vector>

#include "gpu/gpu_test_util.hpp"

using namespace qkv2ctx;
using namespace qkv2ctx::test;

namespace {

struct Combo {
  DType dtype;
  Layout layout;
  MaskMode mask;
  BoundMode bound;
  ProbsMode probs = ProbsMode::trt;
};

std::vector<Combo> all_combos() {
  std::vector<Combo> v;
  for (DType dt : {DType::fp32, DType::fp16, DType::bf16, DType::int8})
    for (Layout l : {Layout::trt, Layout::hf, Layout::chw32})
      for (MaskMode m : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
        if (l == Layout::chw32 && (dt != DType::int8 || m != MaskMode::varlen)) continue;
        if (dt != DType::int8) {
          v.push_back({dt, l, m, BoundMode::row_max});
          continue;
        }
        for (BoundMode b : {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded}) v.push_back({dt, l, m, b});
        v.push_back({dt, l, m, BoundMode::row_max, ProbsMode::max_relative});
      }
  return v;
}

std::string combo_name(const Combo& c) {
  std::string s = std::string(to_string(c.dtype)) + "_" + std::string(to_string(c.layout)) + "_" +
                  std::string(to_string(c.mask));
  if (c.dtype == DType::int8) s += "_" + std::string(to_string(c.bound));
  if (c.probs == ProbsMode::max_relative) s += "_max_relative";
  return s;
}

// INT8 scale settings. benign: amax 127, p_max = 16129 * 0.02^2 / 8 = 0.8: the fixed bound never
// fails. stress: amax 20 with s_qkv = 0.3 (p_max = 181 > 87.3): most rows underflow under the fixed
// bound, and spike tokens (q = k = +20 in every lane, logit 288 > p_max + 88.7) overflow it.
struct Int8Setting {
  float qkv_scale, ctx_scale;
  int int_amax, spike_tokens;
};
constexpr Int8Setting kBenign{0.02f, 0.01f, 127, 0};
constexpr Int8Setting kStress{0.3f, 0.075f, 20, 2};

AttentionDesc make_desc(const Combo& c, int N, int H, const Int8Setting& s) {
  AttentionDesc d;
  d.dtype = c.dtype;
  d.num_heads = N;
  d.head_size = H;
  d.layout = c.layout;
  d.mask = c.mask;
  d.bound = c.bound;
  d.probs = c.probs;
  if (c.dtype == DType::int8) {
    d.int8.qkv_scale = s.qkv_scale;
    d.int8.ctx_scale = s.ctx_scale;
  }
  return d;
}

ProblemSpec make_spec(const Combo& c, int B, int S, const Int8Setting& s) {
  ProblemSpec spec = random_problem(c.mask, B, S, fresh_seed());
  spec.int_amax = s.int_amax;
  spec.int8_spike_tokens = s.spike_tokens;
  return spec;
}

// Shapes every combination runs (CPU reference cost ~ B * N * S^2 * H kept modest for large S).
// H varies: 40 and 80 are not multiples of 16 (padding paths); INT8 uses 32 / 64 / 128.
struct ShapeCase {
  int S, B, N, H_float, H_int8;
};
constexpr ShapeCase kShapes[] = {
    {1, 5, 2, 64, 64}, {63, 5, 3, 40, 32}, {128, 1, 2, 64, 64},
    {384, 5, 1, 80, 64}, {513, 1, 2, 64, 128}, {1024, 1, 1, 64, 64},
};

const PlanOptions kUnfused{Backend::cuda_unfused, 0};

class UnfusedVsCpu : public ::testing::TestWithParam<Combo> {};

TEST_P(UnfusedVsCpu, RandomShapes) {
  QKV2CTX_REQUIRE_GPU();
  const Combo c = GetParam();
  int index = 0;
  for (const ShapeCase& sh : kShapes) {
    const Int8Setting& s8 = (index++ % 2 == 0) ? kBenign : kStress;
    const int H = c.dtype == DType::int8 ? sh.H_int8 : sh.H_float;
    expect_matches_reference(make_desc(c, sh.N, H, s8), make_spec(c, sh.B, sh.S, s8), kUnfused);
  }
}

INSTANTIATE_TEST_SUITE_P(Unfused, UnfusedVsCpu, ::testing::ValuesIn(all_combos()),
                         [](const ::testing::TestParamInfo<Combo>& info) { return combo_name(info.param); });

// Rows longer than 1024 run the block-per-row softmax kernel.
TEST(UnfusedLongRows, BlockPerRowKernel) {
  QKV2CTX_REQUIRE_GPU();
  const Combo combos[] = {
      {DType::fp32, Layout::trt, MaskMode::lengths, BoundMode::row_max},
      {DType::fp16, Layout::hf, MaskMode::varlen, BoundMode::row_max},
      {DType::bf16, Layout::trt, MaskMode::none, BoundMode::row_max},
      {DType::int8, Layout::trt, MaskMode::varlen, BoundMode::row_max},
      {DType::int8, Layout::chw32, MaskMode::varlen, BoundMode::guarded},
      {DType::int8, Layout::hf, MaskMode::lengths, BoundMode::fixed_bound},
  };
  for (const Combo& c : combos) {
    const Int8Setting& s8 = c.bound == BoundMode::row_max ? kBenign : kStress;
    expect_matches_reference(make_desc(c, 1, 32, s8), make_spec(c, 2, 1500, s8), kUnfused);
  }
}

// S = 16384 (SPEC R2: any S): a long padded row with few valid keys keeps the reference cheap while
// the GPU still runs full 16384-wide rows; and one fully valid 3000-key sequence.
TEST(UnfusedLongRows, VeryLongSequences) {
  QKV2CTX_REQUIRE_GPU();
  for (DType dt : {DType::fp16, DType::int8}) {
    const Combo c{dt, Layout::trt, MaskMode::lengths, BoundMode::row_max};
    ProblemSpec spec = make_spec(c, 1, 16384, kBenign);
    spec.lengths = {37};
    expect_matches_reference(make_desc(c, 1, 64, kBenign), spec, kUnfused);
  }
  const Combo c{DType::bf16, Layout::hf, MaskMode::varlen, BoundMode::row_max};
  ProblemSpec spec = make_spec(c, 1, 3000, kBenign);
  spec.lengths = {3000};
  expect_matches_reference(make_desc(c, 1, 32, kBenign), spec, kUnfused);
}

// Head sizes beyond the common ones, and the TensorRT v2/v3 scale override (1/sqrt(64) with H=32).
TEST(UnfusedShapes, HeadSizesAndScaleOverride) {
  QKV2CTX_REQUIRE_GPU();
  const Combo fp16{DType::fp16, Layout::trt, MaskMode::varlen, BoundMode::row_max};
  for (int H : {1, 8, 96, 128, 256}) expect_matches_reference(make_desc(fp16, 2, H, kBenign), make_spec(fp16, 3, 77, kBenign), kUnfused);
  AttentionDesc d = make_desc(fp16, 2, 32, kBenign);
  d.scale_head_size = 64;
  expect_matches_reference(d, make_spec(fp16, 3, 77, kBenign), kUnfused);
  const Combo s8{DType::int8, Layout::chw32, MaskMode::varlen, BoundMode::row_max};
  AttentionDesc d8 = make_desc(s8, 2, 32, kBenign);
  d8.scale_head_size = 64;
  expect_matches_reference(d8, make_spec(s8, 3, 77, kBenign), kUnfused);
}

// Small shapes, every mode: what bench/device.sh runs under compute-sanitizer (memcheck, racecheck).
TEST(UnfusedSanitizer, TinyShapesAllModes) {
  QKV2CTX_REQUIRE_GPU();
  for (const Combo& c : all_combos())
    for (int S : {1, 17}) {
      const Int8Setting& s8 = S == 1 ? kBenign : kStress;
      expect_matches_reference(make_desc(c, 2, 32, s8), make_spec(c, 3, S, s8), kUnfused);
    }
}

}  // namespace
