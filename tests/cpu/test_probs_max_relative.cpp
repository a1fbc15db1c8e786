// INT8 probs=max_relative (ProbsMode, SPEC 5.0.3): the CPU reference against an independent
// emulation written here, and the accuracy property it exists for (flat rows at long S).
#include <cmath>
#include <cstring>
#include <vector>

#include "common/test_util.hpp"
#include "qkv2ctx/detail/int8_math.hpp"

using namespace qkv2ctx;
using namespace qkv2ctx::test;

namespace {

// Layout hf, mask varlen: token t, head n, component which (0 Q, 1 K, 2 V), dim d of [T, 3, N, H].
std::int8_t at(const HostTensor& qkv, std::int64_t t, int which, int n, int d, int N, int H) {
  return static_cast<std::int8_t>(qkv.get(((t * 3 + which) * N + n) * H + d));
}

// The max_relative step list, written out independently of src/cpu: FP32 logits, true row max,
// e = flush-to-zero exp, Pi8 = RNE(127 e), exact integer P.V, O = RNE(acc2 * (s_qkv/s_ctx/127) / sum).
std::vector<std::int8_t> emulate(const HostTensor& qkv, const std::vector<std::int32_t>& cu, int N, int H,
                                 const Int8Derived& k) {
  const std::int64_t T = cu.back();
  std::vector<std::int8_t> out(static_cast<std::size_t>(T) * N * H, 0);
  for (std::size_t b = 0; b + 1 < cu.size(); ++b)
    for (int n = 0; n < N; ++n)
      for (std::int64_t i = cu[b]; i < cu[b + 1]; ++i) {
        std::vector<float> x;
        for (std::int64_t j = cu[b]; j < cu[b + 1]; ++j) {
          std::int32_t acc = 0;
          for (int d = 0; d < H; ++d) acc += at(qkv, i, 0, n, d, N, H) * at(qkv, j, 1, n, d, N, H);
          x.push_back(static_cast<float>(acc) * k.scale_bmm1);
        }
        float m = x[0];
        for (float v : x) m = std::max(m, v);
        float sum = 0.0f;
        std::vector<std::int32_t> P;
        for (float v : x) {
          const float e = int8_math::fast_exp_ftz_host(v - m);
          sum += e;
          P.push_back(int8_math::sat8_rne(e * 127.0f));
        }
        const float row_scale = k.max_relative_scale * (sum == 0.0f ? 1.0f : 1.0f / sum);
        for (int d = 0; d < H; ++d) {
          std::int64_t acc2 = 0;
          for (std::size_t j = 0; j < P.size(); ++j) acc2 += P[j] * at(qkv, cu[b] + static_cast<std::int64_t>(j), 2, n, d, N, H);
          out[(static_cast<std::size_t>(i) * N + n) * H + d] =
              static_cast<std::int8_t>(int8_math::sat8_rne(static_cast<float>(acc2) * row_scale));
        }
      }
  return out;
}

AttentionDesc max_relative_desc(int N, int H, float qkv_scale, float ctx_scale) {
  AttentionDesc d;
  d.dtype = DType::int8;
  d.num_heads = N;
  d.head_size = H;
  d.layout = Layout::hf;
  d.mask = MaskMode::varlen;
  d.probs = ProbsMode::max_relative;
  d.int8 = {qkv_scale, ctx_scale, 1.0f / 127};
  return d;
}

// Runs `desc` on the CPU backend over packed hf tokens and returns the output bytes.
HostTensor run_cpu(const AttentionDesc& desc, const HostTensor& qkv, const std::vector<std::int32_t>& cu,
                   int max_seqlen) {
  const int E = desc.hidden_size();
  const std::int64_t T = cu.back();
  HostTensor out(desc.dtype, {T, E});
  out.fill_byte(0x7f);
  HostTensor cu_t(DType::int32, {static_cast<std::int64_t>(cu.size())});
  std::memcpy(cu_t.data(), cu.data(), cu.size() * 4);
  const Plan plan = make_plan(desc, {Backend::cpu});
  AttentionArgs a;
  a.qkv = qkv.view();
  a.out = out.view();
  a.cu_seqlens = cu_t.view();
  a.max_seqlen = max_seqlen;
  alignas(16) static unsigned char ws[4096];
  plan.run(a, {ws, sizeof(ws)});
  return out;
}

// FP32 attention on the dequantized inputs of an INT8 problem.
HostTensor fp32_reference(const AttentionDesc& int8_desc, const HostTensor& qkv, const std::vector<std::int32_t>& cu,
                          int S) {
  AttentionDesc fd = int8_desc;
  fd.dtype = DType::fp32;
  fd.probs = ProbsMode::trt;
  HostTensor qf(DType::fp32, qkv.shape);
  for (std::int64_t i = 0; i < qkv.numel(); ++i) qf.set(i, qkv.get(i) * int8_desc.int8.qkv_scale);
  return run_cpu(fd, qf, cu, S);
}

// Cosine between the reference and value(i) over all elements (0 when value is all zeros).
template <class Value>
double cosine(const HostTensor& ref, Value value) {
  double dot = 0, nr = 0, ng = 0;
  for (std::int64_t i = 0; i < ref.numel(); ++i) {
    const double r = ref.get(i), g = value(i);
    dot += r * g;
    nr += r * r;
    ng += g * g;
  }
  return ng == 0 ? 0.0 : dot / std::sqrt(nr * ng);
}

// FP32 attention against that same context rounded to INT8 with ctx_scale: the best any INT8 output can
// reach, whatever its probabilities.
double output_rounding_cosine(const AttentionDesc& int8_desc, const HostTensor& qkv, const std::vector<std::int32_t>& cu,
                              int S) {
  const HostTensor ref = fp32_reference(int8_desc, qkv, cu, S);
  const double cs = int8_desc.int8.ctx_scale;
  return cosine(ref, [&](std::int64_t i) { return std::clamp(std::nearbyint(ref.get(i) / cs), -128.0, 127.0) * cs; });
}

// FP32 attention against the INT8 run's dequantized context.
double cosine_vs_fp32(const AttentionDesc& int8_desc, const HostTensor& qkv, const std::vector<std::int32_t>& cu,
                      int S) {
  const HostTensor ref = fp32_reference(int8_desc, qkv, cu, S);
  const HostTensor got = run_cpu(int8_desc, qkv, cu, S);
  return cosine(ref, [&](std::int64_t i) { return got.get(i) * int8_desc.int8.ctx_scale; });
}

}  // namespace

TEST(ProbsMaxRelative, CpuReferenceMatchesIndependentEmulationExactly) {
  const int N = 2, H = 32;
  for (int trial = 0; trial < 4; ++trial) {
    const std::uint64_t seed = fresh_seed();
    const std::vector<std::int32_t> cu = prefix_sums(random_lengths(seed, 3, 0, 70));
    HostTensor qkv(DType::int8, {cu.back(), 3 * N * H});
    qkv.fill_random(seed + 1, 1.0, 127);
    const AttentionDesc d = max_relative_desc(N, H, 0.05f, 0.02f);
    const HostTensor got = run_cpu(d, qkv, cu, 70);
    const std::vector<std::int8_t> want = emulate(qkv, cu, N, H, derive_int8_scales(d.int8, H));
    for (std::size_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(static_cast<std::int8_t>(got.get(static_cast<std::int64_t>(i))), want[i]) << "element " << i << " seed " << seed;
  }
}

// Flat rows at long S: every p ~ 1/S < dq_probs/2 = 1/254, so TensorRT's contract quantizes every
// probability to 0 and the context collapses; max_relative keeps the row's mass (SPEC R10, LESSONS 8).
TEST(ProbsMaxRelative, KeepsFlatRowsThatTrtQuantizationZeroes) {
  const int N = 1, H = 64, S = 1024;
  const std::vector<std::int32_t> cu = {0, S};
  HostTensor qkv(DType::int8, {S, 3 * N * H});
  qkv.fill_random(fresh_seed(), 1.0, 127);
  // s_qkv = 0.002: logits |x| <= 64 * 127^2 * 0.002^2 / 8 = 0.52, so rows are nearly uniform.
  const AttentionDesc rel = max_relative_desc(N, H, 0.002f, 0.002f);
  AttentionDesc trt = rel;
  trt.probs = ProbsMode::trt;
  const double cos_rel = cosine_vs_fp32(rel, qkv, cu, S), cos_trt = cosine_vs_fp32(trt, qkv, cu, S);
  // The bar is relative to what INT8 output rounding alone leaves (the flat rows' context is a few LSB
  // of ctx_scale, so that floor moves with the seed: 0.989 .. 0.995 seen; a fixed 0.99 failed on one
  // seed at 0.98923): within 0.001 of it. Measured gaps are below 1e-5: the probabilities themselves
  // cost almost nothing.
  const double floor = output_rounding_cosine(rel, qkv, cu, S);
  std::cout << "flat rows, S = " << S << ": cosine vs FP32 attention: probs=trt " << cos_trt
            << ", probs=max_relative " << cos_rel << ", output rounding alone " << floor << "\n";
  EXPECT_GT(cos_rel, floor - 0.001);
  EXPECT_LT(cos_trt, 0.5);
}
