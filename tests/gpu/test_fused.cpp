// The fused sm_80 FP16/BF16 backend against the CPU reference: every compiled kernel (dtype x head size
// x tile shape, the tile forced through QKV2CTX_FUSED_TILE) on S = 1 ... 4097, both layouts, B = 1 and
// 7, mask none / lengths / varlen with ragged and empty sequences (random_problem), plus the edge cases
// of varlen scheduling, bad device cu_seqlens, alignment and the why-not messages. The comparison
// (outputs poisoned twice, coverage, untouched rows) and the tolerances are gpu_test_util's:
// FP16 within A * (2^-11 + S * 2^-25 + 2^-10) (+ an FP32 term), BF16 within A * (2^-8 + 2^-7), with
// A = 2 the input amplitude (derivation in gpu_test_util.cpp). Those bounds are what the kernel's math
// allows: FP32 accumulation, P rounded once to the element type before P·V, the row sum taken from the
// unrounded P, one rounding of the output.
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/fused_sm80/fused_tile_policy.hpp"
#include "gpu/gpu_test_util.hpp"

using namespace qkv2ctx;
using namespace qkv2ctx::test;

namespace {

const PlanOptions kFused{Backend::cuda_fused, 0};

// Sets QKV2CTX_FUSED_TILE for the plans made in its scope (the backend reads it at plan creation).
class ForcedTile {
 public:
  explicit ForcedTile(const char* tile) { ::setenv("QKV2CTX_FUSED_TILE", tile, 1); }
  ~ForcedTile() { ::unsetenv("QKV2CTX_FUSED_TILE"); }
  ForcedTile(const ForcedTile&) = delete;
  ForcedTile& operator=(const ForcedTile&) = delete;
};

struct Traits {
  DType dtype;
  int head_size;
  const char* tile;  // "m64" | "m128" | "m128n64" | "wg128"
  fused_sm80::TileShape shape;
};

std::vector<Traits> all_traits() {
  using fused_sm80::TileShape;
  std::vector<Traits> v;
  for (DType dt : {DType::fp16, DType::bf16})
    for (int h : fused_sm80::kSupportedHeadSizes)
      for (auto [tile, shape] : {std::pair{"m64", TileShape::m64}, std::pair{"m128", TileShape::m128},
                                 std::pair{"m128n64", TileShape::m128n64}, std::pair{"wg128", TileShape::wg128}})
        if (fused_sm80::has_tile(shape, h)) v.push_back({dt, h, tile, shape});
  return v;
}

AttentionDesc make_desc(DType dt, int N, int H, Layout layout, MaskMode mask) {
  AttentionDesc d;
  d.dtype = dt;
  d.num_heads = N;
  d.head_size = H;
  d.layout = layout;
  d.mask = mask;
  return d;
}

// One shape of the sweep. The CPU reference costs ~ B * N * S^2 * H in double: large S runs with
// B = N = 1.
struct Case {
  int S, B, N;
};
// Every S of the issue; masks and layouts rotate over the list so each kernel sees every mask and
// layout at short, tile-boundary and long S.
constexpr Case kSweep[] = {
    {1, 7, 2},   {2, 1, 2},   {63, 7, 2},  {64, 1, 2},  {65, 7, 2},   {127, 1, 2},   {128, 7, 2},   {129, 1, 2},
    {384, 7, 1}, {511, 1, 1}, {512, 7, 1}, {513, 1, 1}, {1000, 1, 1}, {2048, 1, 1}, {4097, 1, 1},
};

class FusedVsCpu : public ::testing::TestWithParam<Traits> {};

TEST_P(FusedVsCpu, SweepS) {
  QKV2CTX_REQUIRE_GPU();
  const Traits t = GetParam();
  if (!fused_sm80::tile_runs_on(t.shape, device_sm()))
    GTEST_SKIP() << "tile " << t.tile << " needs sm_" << fused_sm80::tile_min_sm(t.shape) << " (this device: sm_"
                 << device_sm() << ")";
  ForcedTile forced(t.tile);
  const MaskMode masks[] = {MaskMode::none, MaskMode::lengths, MaskMode::varlen};
  int i = 0;
  for (const Case& c : kSweep) {
    const MaskMode mask = masks[i % 3];
    const Layout layout = (i / 3) % 2 == 0 ? Layout::trt : Layout::hf;
    ++i;
    expect_matches_reference(make_desc(t.dtype, c.N, t.head_size, layout, mask),
                             random_problem(mask, c.B, c.S, fresh_seed()), kFused);
  }
}

INSTANTIATE_TEST_SUITE_P(Fused, FusedVsCpu, ::testing::ValuesIn(all_traits()),
                         [](const ::testing::TestParamInfo<Traits>& info) {
                           return std::string(to_string(info.param.dtype)) + "_d" +
                                  std::to_string(info.param.head_size) + "_" + info.param.tile;
                         });

// The tile policy's own choice (no forcing), every mask and layout, a BERT-like head count.
TEST(FusedPolicy, DefaultTileChoice) {
  QKV2CTX_REQUIRE_GPU();
  for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen})
    for (Layout layout : {Layout::trt, Layout::hf}) {
      expect_matches_reference(make_desc(DType::fp16, 12, 64, layout, mask), random_problem(mask, 9, 200, fresh_seed()),
                               kFused);
      expect_matches_reference(make_desc(DType::bf16, 4, 128, layout, mask), random_problem(mask, 3, 300, fresh_seed()),
                               kFused);
      // Enough 128-row tiles for the large shape (wg128 on sm_90, m128 elsewhere).
      expect_matches_reference(make_desc(DType::fp16, 12, 64, layout, mask), random_problem(mask, 24, 260, fresh_seed()),
                               kFused);
    }
}

// A forced wg128 tile where it has no kernel (D = 80) or cannot run (not sm_90) is refused at plan time.
TEST(FusedPolicy, ForcedHopperTileRefusedWhereItCannotRun) {
  QKV2CTX_REQUIRE_GPU();
  ForcedTile forced("wg128");
  const bool hopper = fused_sm80::tile_runs_on(fused_sm80::TileShape::wg128, device_sm());
  try {
    const Plan plan = make_plan(make_desc(DType::fp16, 2, hopper ? 80 : 64, Layout::trt, MaskMode::none), kFused);
    ADD_FAILURE() << "wg128 accepted: " << plan.describe();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find(hopper ? "head size 80" : "needs an sm_90 device"), std::string::npos)
        << e.what();
  }
}

// Varlen scheduling edge cases: more sequences than tokens (mostly empty), max_seqlen = 1, every
// sequence empty, one sequence much shorter than max_seqlen, many sequences (several search rounds:
// 32-way search over 1500 sequences), the longest-first schedule at and past its batch limit, and rows
// after cu_seqlens[B] that must stay untouched.
TEST(FusedVarlen, Scheduling) {
  QKV2CTX_REQUIRE_GPU();
  for (const char* tile : {"m64", "m128", "wg128"}) {
    if (std::string(tile) == "wg128" && !fused_sm80::tile_runs_on(fused_sm80::TileShape::wg128, device_sm())) continue;
    ForcedTile forced(tile);
    const AttentionDesc d = make_desc(DType::fp16, 2, 64, Layout::trt, MaskMode::varlen);
    ProblemSpec p;
    p.batch = 40;
    p.max_seqlen = 3;
    p.lengths.assign(40, 0);
    p.lengths[3] = 1;
    p.lengths[17] = 3;
    p.lengths[39] = 2;
    p.extra_tokens = 5;
    expect_matches_reference(d, p, kFused);  // 40 sequences, 6 tokens

    p = ProblemSpec{};
    p.batch = 9;
    p.max_seqlen = 1;
    p.lengths = {1, 0, 1, 1, 0, 0, 1, 1, 1};
    expect_matches_reference(d, p, kFused);

    p = ProblemSpec{};
    p.batch = 4;
    p.max_seqlen = 300;
    p.lengths = {0, 0, 0, 0};
    p.extra_tokens = 7;
    expect_matches_reference(d, p, kFused);  // nothing to compute; extra rows untouched

    p = ProblemSpec{};
    p.batch = 2;
    p.max_seqlen = 2000;
    p.lengths = {70, 129};
    const int odd_d = std::string(tile) == "wg128" ? 128 : 96;  // wg128 has no D = 96 kernel
    expect_matches_reference(make_desc(DType::bf16, 1, odd_d, Layout::hf, MaskMode::varlen), p, kFused);

    p = random_problem(MaskMode::varlen, 1500, 40, fresh_seed());
    expect_matches_reference(make_desc(DType::fp16, 1, 32, Layout::hf, MaskMode::varlen), p, kFused);

    // The longest-first schedule at its batch limit (lane 31's last sequence) and the sequence-ordered
    // one just past it, ragged over several tile classes (1-3 tiles of 128 rows), 2 heads.
    for (int batch : {fused_sm80::kLongestFirstMaxBatch, fused_sm80::kLongestFirstMaxBatch + 1, 33}) {
      p = random_problem(MaskMode::varlen, batch, 300, fresh_seed());
      expect_matches_reference(make_desc(DType::bf16, 2, 64, Layout::trt, MaskMode::varlen), p, kFused);
    }
  }
}

// Sets QKV2CTX_FUSED_PERSISTENT for the plans made in its scope.
class ForcedPersistent {
 public:
  explicit ForcedPersistent(const char* v) { ::setenv("QKV2CTX_FUSED_PERSISTENT", v, 1); }
  ~ForcedPersistent() { ::unsetenv("QKV2CTX_FUSED_PERSISTENT"); }
  ForcedPersistent(const ForcedPersistent&) = delete;
  ForcedPersistent& operator=(const ForcedPersistent&) = delete;
};

// The persistent schedule with several items per CTA (more query tiles x heads than the 2-3 resident
// CTAs per SM of a 132-SM H100 hold): one-tile items (keys <= BN: the next item's prologue issued at
// j = 0), multi-tile items, items of sequences without keys (lengths mode, len 0: zeros written on the
// way), ragged varlen items in longest-first order, for both shapes of each persistent configuration;
// then the same problem with the schedule turned off.
TEST(FusedPersistent, ManyItemsPerCta) {
  QKV2CTX_REQUIRE_GPU();
  for (const char* tile : {"m64", "m128"}) {
    ForcedTile forced(tile);
    for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
      expect_matches_reference(make_desc(DType::fp16, 16, 64, Layout::hf, mask),
                               random_problem(mask, 40, 65, fresh_seed()), kFused);
      expect_matches_reference(make_desc(DType::fp16, 8, 64, Layout::trt, mask),
                               random_problem(mask, 90, 60, fresh_seed()), kFused);
      expect_matches_reference(make_desc(DType::bf16, 16, 128, Layout::trt, mask),
                               random_problem(mask, 14, 130, fresh_seed()), kFused);
    }
  }
  ForcedPersistent off("0");
  expect_matches_reference(make_desc(DType::fp16, 16, 64, Layout::hf, MaskMode::varlen),
                           random_problem(MaskMode::varlen, 40, 200, fresh_seed()), kFused);
  ForcedPersistent bad("yes");
  try {
    (void)make_plan(make_desc(DType::fp16, 1, 64, Layout::trt, MaskMode::none), kFused);
    ADD_FAILURE() << "QKV2CTX_FUSED_PERSISTENT=yes accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("QKV2CTX_FUSED_PERSISTENT = 'yes'"), std::string::npos) << e.what();
  }
}

// The persistent schedule on a 3-CTA grid (QKV2CTX_FUSED_MAX_CTAS): every CTA walks many items of
// every kind (one-tile, multi-tile, zero-key, varlen longest-first), small enough for compute-sanitizer
// (bench/device.sh runs *Sanitizer*: racecheck covers the Q double buffer and the K/V stream across
// items).
TEST(FusedSanitizer, PersistentFewCtas) {
  QKV2CTX_REQUIRE_GPU();
  ::setenv("QKV2CTX_FUSED_MAX_CTAS", "3", 1);
  for (const char* tile : {"m64", "m128", "wg128"}) {
    if (std::string(tile) == "wg128" && !fused_sm80::tile_runs_on(fused_sm80::TileShape::wg128, device_sm())) continue;
    ForcedTile forced(tile);
    for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
      expect_matches_reference(make_desc(DType::fp16, 2, 64, Layout::trt, mask),
                               random_problem(mask, 7, 200, fresh_seed()), kFused);
      expect_matches_reference(make_desc(DType::bf16, 3, 64, Layout::hf, mask),
                               random_problem(mask, 9, 60, fresh_seed()), kFused);
    }
  }
  ::setenv("QKV2CTX_FUSED_MAX_CTAS", "0", 1);
  EXPECT_THROW((void)make_plan(make_desc(DType::fp16, 1, 64, Layout::trt, MaskMode::none), kFused), Error);
  ::unsetenv("QKV2CTX_FUSED_MAX_CTAS");
}

// lengths mode: len = 0 everywhere (all-zero context), len > S (clamped to S), negative len (zeros).
TEST(FusedLengths, ClampedLengths) {
  QKV2CTX_REQUIRE_GPU();
  ProblemSpec p;
  p.batch = 5;
  p.max_seqlen = 77;
  p.lengths = {0, 500, -3, 77, 1};
  for (Layout layout : {Layout::trt, Layout::hf})
    expect_matches_reference(make_desc(DType::fp16, 3, 80, layout, MaskMode::lengths), p, kFused);
}

// Bad device cu_seqlens: the run stays in bounds (tokens untouched past the tensor are checked by the
// sanitizer run of FusedSanitizer) and read_stats() names the violation.
TEST(FusedVarlen, BadDeviceCuSeqlensAreReported) {
  QKV2CTX_REQUIRE_GPU();
  const AttentionDesc d = make_desc(DType::fp16, 2, 64, Layout::trt, MaskMode::varlen);
  const Plan plan = make_plan(d, kFused);
  const std::int64_t T = 50, E = d.hidden_size();
  DeviceBuffer qkv(static_cast<std::size_t>(T * 3 * E * 2)), out(static_cast<std::size_t>(T * E * 2));
  qkv.fill_byte(0x3c);  // 1.0 in FP16 (0x3c3c ~ 1.06): finite inputs
  struct BadCase {
    std::vector<std::int32_t> cu;
    const char* expect;
  };
  const BadCase cases[] = {
      {{0, 30, 20, 50}, "non-decreasing"},
      {{0, 30, 55}, "exceeds the 50 token rows"},
      {{5, 10, 20}, "cu_seqlens[0] = 5"},
      {{0, 49, 50}, "max_seqlen = 40"},
      {{0, -7, 3}, "non-decreasing"},
  };
  for (const BadCase& bc : cases) {
    DeviceBuffer cu(bc.cu.size() * 4);
    cu.upload(bc.cu.data(), bc.cu.size() * 4);
    AttentionArgs a;
    a.qkv = TensorView(qkv.data(), DType::fp16, MemSpace::cuda, {T, 3 * E});
    a.out = TensorView(out.data(), DType::fp16, MemSpace::cuda, {T, E});
    a.cu_seqlens = TensorView(cu.data(), DType::int32, MemSpace::cuda, {static_cast<std::int64_t>(bc.cu.size())});
    a.max_seqlen = 40;
    DeviceBuffer ws(plan.workspace_bytes(plan.problem_size(a)));
    ws.fill_byte(0xff);
    plan.run(a, {ws.data(), ws.bytes()}, nullptr);
    try {
      plan.read_stats({ws.data(), ws.bytes()}, nullptr);
      ADD_FAILURE() << "bad cu_seqlens not reported: " << ::testing::PrintToString(bc.cu);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(bc.expect), std::string::npos) << e.what();
    }
    // A good run on the same workspace clears the report.
    const std::vector<std::int32_t> good = {0, 20, 50};
    DeviceBuffer cu_good(good.size() * 4);
    cu_good.upload(good.data(), good.size() * 4);
    a.cu_seqlens = TensorView(cu_good.data(), DType::int32, MemSpace::cuda, {3});
    plan.run(a, {ws.data(), ws.bytes()}, nullptr);
    EXPECT_NO_THROW(plan.read_stats({ws.data(), ws.bytes()}, nullptr));
  }
}

TEST(FusedBackend, WhyNotMessages) {
  QKV2CTX_REQUIRE_GPU();
  auto why = [](const AttentionDesc& d) {
    try {
      (void)make_plan(d, kFused);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unsupported);
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  AttentionDesc d = make_desc(DType::fp16, 2, 48, Layout::trt, MaskMode::none);
  std::string m = why(d);
  EXPECT_NE(m.find("head size 48"), std::string::npos) << m;
  EXPECT_NE(m.find("{32, 64, 80, 96, 128}"), std::string::npos) << m;
  d = make_desc(DType::fp32, 2, 64, Layout::hf, MaskMode::varlen);
  m = why(d);
  EXPECT_NE(m.find("fp32"), std::string::npos) << m;
  EXPECT_NE(m.find("cuda-unfused"), std::string::npos) << m;
}

TEST(FusedBackend, DescribeAndDispatch) {
  QKV2CTX_REQUIRE_GPU();
  const Plan plan = make_plan(make_desc(DType::bf16, 16, 128, Layout::hf, MaskMode::none), {Backend::automatic, 0});
  EXPECT_EQ(plan.backend(), Backend::cuda_fused) << plan.describe();
  const std::string s = plan.describe();
  EXPECT_NE(s.find("fused_sm80"), std::string::npos) << s;
  EXPECT_NE(s.find("BF16"), std::string::npos) << s;
  EXPECT_NE(s.find("BM=128"), std::string::npos) << s;
  EXPECT_NE(s.find("BM=64"), std::string::npos) << s;
  EXPECT_NE(s.find("one query tile per CTA"), std::string::npos) << s;  // D = 128
  const std::string s64 = make_plan(make_desc(DType::fp16, 12, 64, Layout::trt, MaskMode::varlen), kFused).describe();
  EXPECT_NE(s64.find("persistent"), std::string::npos) << s64;
  EXPECT_NE(s64.find("longest-first"), std::string::npos) << s64;
  ForcedTile bad("m256");
  EXPECT_THROW((void)make_plan(make_desc(DType::fp16, 1, 64, Layout::trt, MaskMode::none), kFused), Error);
}

TEST(FusedBackend, MisalignedTensorsAreRejected) {
  QKV2CTX_REQUIRE_GPU();
  const AttentionDesc d = make_desc(DType::fp16, 1, 64, Layout::hf, MaskMode::none);
  const Plan plan = make_plan(d, kFused);
  DeviceBuffer qkv(3 * 64 * 4 * 2 + 16), out(64 * 4 * 2 + 16), ws(4096);
  AttentionArgs a;
  a.qkv = TensorView(static_cast<char*>(qkv.data()) + 2, DType::fp16, MemSpace::cuda, {1, 4, 3 * 64});
  a.out = TensorView(out.data(), DType::fp16, MemSpace::cuda, {1, 4, 64});
  try {
    plan.run(a, {ws.data(), ws.bytes()}, nullptr);
    ADD_FAILURE() << "misaligned qkv accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("16-byte aligned"), std::string::npos) << e.what();
  }
}

// Small shapes for compute-sanitizer (memcheck + racecheck, bench/device.sh runs *Sanitizer*): both
// tile shapes, partial tiles of rows and keys, multi-tile K/V rings (S = 200: 4 tiles, both stages reused),
// the D = 80 / 96 copies with idle threads, every mask, and varlen with empty sequences.
TEST(FusedSanitizer, SmallShapes) {
  QKV2CTX_REQUIRE_GPU();
  for (const char* tile : {"m64", "m128", "wg128"}) {
    // wg128 (sm_90 only): D = 64, 128 and 32, where racecheck covers the K/V ring between the cp.async
    // writes and the wgmma reads (S = 200: 4 key tiles, both unrolled parities) and the epilogue staging.
    const bool hopper = std::string(tile) == "wg128";
    if (hopper && !fused_sm80::tile_runs_on(fused_sm80::TileShape::wg128, device_sm())) continue;
    ForcedTile forced(tile);
    for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
      expect_matches_reference(make_desc(DType::fp16, 2, 64, Layout::trt, mask), random_problem(mask, 3, 200, fresh_seed()),
                               kFused);
      expect_matches_reference(make_desc(DType::bf16, 1, hopper ? 128 : 80, Layout::hf, mask),
                               random_problem(mask, hopper ? 2 : 4, hopper ? 300 : 65, fresh_seed()), kFused);
      expect_matches_reference(make_desc(DType::fp16, 1, hopper ? 32 : 128, Layout::hf, mask),
                               random_problem(mask, hopper ? 3 : 1, hopper ? 150 : 1, fresh_seed()), kFused);
    }
  }
}

}  // namespace
