// CPU reference, INT8: against an emulator of SPEC 5.0 steps 1-8 written here independently (own
// addressing from SPEC 3, own scale arithmetic, rounding, exponential and guard), which must agree
// exactly (outputs and row counters), for the three bound modes. Plus SPEC 9 items 22, 23, 26, 42
// and the fixed bound's underflow / overflow cases of SPEC 5.0.1.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "common/test_util.hpp"
#include "core/backend.hpp"
#include "cpu/reference.hpp"

using namespace qkv2ctx;
using qkv2ctx::test::HostTensor;

namespace {

struct Problem {
  Layout layout = Layout::trt;
  MaskMode mask = MaskMode::varlen;
  BoundMode bound = BoundMode::row_max;
  int N = 2, H = 64, S = 16, B = 2;
  std::vector<std::int32_t> lens;  // lengths: seq_lens; varlen: per-sequence lengths
  int extra_rows = 0;              // varlen: rows after cu_seqlens[B], never written
  Int8Scales scales{};

  std::int64_t E() const { return std::int64_t{N} * H; }
  bool padded() const { return mask != MaskMode::varlen; }
  std::vector<std::int32_t> cu() const { return test::prefix_sums(lens); }
  std::int64_t rows() const { return padded() ? std::int64_t{S} * B : cu().back() + extra_rows; }
  std::string str() const {
    std::string s = std::string(to_string(layout)) + " " + std::string(to_string(mask)) + " " +
                    std::string(to_string(bound)) + " N=" + std::to_string(N) + " H=" + std::to_string(H) +
                    " S=" + std::to_string(S) + " B=" + std::to_string(B) + " s_qkv=" +
                    std::to_string(scales.qkv_scale) + " s_ctx=" + std::to_string(scales.ctx_scale) +
                    " dq_probs=" + std::to_string(scales.dq_probs) + " lens=";
    for (auto l : lens) s += std::to_string(l) + ",";
    return s;
  }
};

AttentionDesc desc_of(const Problem& pr) {
  AttentionDesc d;
  d.dtype = DType::int8;
  d.num_heads = pr.N;
  d.head_size = pr.H;
  d.layout = pr.layout;
  d.mask = pr.mask;
  d.bound = pr.bound;
  d.int8 = pr.scales;
  return d;
}

// ---- Addressing, written from SPEC 3.2 / 3.3 / 3.4 ----------------------------------------------

std::int64_t token_of(const Problem& pr, const std::vector<std::int32_t>& cu, int b, int s) {
  if (!pr.padded()) return cu[b] + s;
  return pr.layout == Layout::trt ? std::int64_t{s} * pr.B + b : std::int64_t{b} * pr.S + s;
}
std::int64_t chw32_address(std::int64_t c, std::int64_t t, std::int64_t T) {
  return (c / 32) * (T * 32) + t * 32 + (c % 32);
}
std::int64_t qkv_index(const Problem& pr, std::int64_t t, int which, int n, int d) {
  const std::int64_t E = pr.E(), H = pr.H;
  switch (pr.layout) {
    case Layout::trt: return t * 3 * E + n * 3 * H + which * H + d;
    case Layout::hf: return t * 3 * E + which * E + n * H + d;
    default: return chw32_address(which * E + n * H + d, t, pr.rows());
  }
}
std::int64_t out_index(const Problem& pr, std::int64_t t, int n, int d) {
  if (pr.layout == Layout::chw32) return chw32_address(std::int64_t{n} * pr.H + d, t, pr.rows());
  return t * pr.E() + std::int64_t{n} * pr.H + d;
}

struct Buffers {
  HostTensor qkv, out;
  std::vector<std::int32_t> seq_lens, cu_seqlens;
};

Buffers make_buffers(const Problem& pr) {
  Buffers b;
  const std::int64_t E = pr.E();
  if (pr.padded()) {
    const std::int64_t d0 = pr.layout == Layout::trt ? pr.S : pr.B, d1 = pr.layout == Layout::trt ? pr.B : pr.S;
    b.qkv = HostTensor(DType::int8, {d0, d1, 3 * E});
    b.out = HostTensor(DType::int8, {d0, d1, E});
    if (pr.mask == MaskMode::lengths) b.seq_lens = pr.lens;
  } else if (pr.layout == Layout::chw32) {
    b.qkv = HostTensor(DType::int8, {3 * E / 32, pr.rows(), 32});
    b.out = HostTensor(DType::int8, {E / 32, pr.rows(), 32});
    b.cu_seqlens = pr.cu();
  } else {
    b.qkv = HostTensor(DType::int8, {pr.rows(), 3 * E});
    b.out = HostTensor(DType::int8, {pr.rows(), E});
    b.cu_seqlens = pr.cu();
  }
  return b;
}

AttentionArgs args_of(const Problem& pr, const Buffers& b) {
  AttentionArgs a;
  a.qkv = b.qkv.view();
  a.out = b.out.view();
  if (!b.seq_lens.empty()) a.seq_lens = TensorView(b.seq_lens.data(), DType::int32, MemSpace::host, {pr.B});
  if (!b.cu_seqlens.empty()) {
    a.cu_seqlens = TensorView(b.cu_seqlens.data(), DType::int32, MemSpace::host, {pr.B + 1});
    a.max_seqlen = std::max(pr.S, 1);
  }
  return a;
}

RunStats run_cpu(const Problem& pr, Buffers& b, std::uint8_t poison = 0x5A) {
  const Plan plan = make_plan(desc_of(pr), {Backend::cpu});
  alignas(16) std::uint8_t ws[kStatsBytes];
  b.out.fill_byte(poison);
  plan.run(args_of(pr, b), {ws, sizeof(ws)});
  return plan.read_stats({ws, sizeof(ws)});
}

// ---- The emulator: SPEC 5.0 steps 1-8 in FP32, written independently of the library -------------

// cvt.rni.sat.s8.f32: NaN -> 0, saturate, then round to nearest even (lrint in the default mode).
int own_sat8(float x) {
  if (x != x) return 0;
  if (x >= 127.0f) return 127;
  if (x <= -128.0f) return -128;
  return static_cast<int>(std::lrint(x));
}
// __expf with flush-to-zero: 2^(x * log2 e) with the product rounded to FP32, 2^y rounded to FP32,
// 0 below the smallest normal float, +inf at and above 2^128.
float own_expf(float x) {
  const float y = x * 1.4426950408889634f;
  if (y >= 128.0f) return INFINITY;
  const float r = static_cast<float>(std::exp2(static_cast<double>(y)));
  return r < 0x1p-126f ? 0.0f : r;
}
constexpr float kGuard = 0x1p-100f;  // guarded repair threshold (documented in int8_math.hpp)

struct Emulated {
  std::vector<int> out;  // per output element; kUntouched where the run must not write
  std::int64_t underflow_rows = 0, overflow_rows = 0;  // rows the fixed bound fails on
  std::vector<std::pair<std::int64_t, int>> failed_rows;  // (token row, head) of those rows
  int min_prob = 127, max_prob = 0;
  static constexpr int kUntouched = 1000;
};

Emulated emulate(const Problem& pr, const HostTensor& qkv) {
  Emulated em;
  em.out.assign(static_cast<std::size_t>(pr.rows() * pr.E()), Emulated::kUntouched);
  const auto cu = pr.cu();
  const float s = pr.scales.qkv_scale, dq = pr.scales.dq_probs;
  const float scale_bmm1 = s * s * (1.0f / std::sqrt(static_cast<float>(pr.H)));
  const float scale_softmax = 1.0f / dq;
  const float scale_bmm2 = dq * s / pr.scales.ctx_scale;
  const float p_max = scale_bmm1 * 16129.0f;
  for (int b = 0; b < pr.B; ++b) {
    int rows = pr.S, keys = pr.S;
    if (pr.mask == MaskMode::lengths) keys = std::clamp(pr.lens[b], 0, pr.S);
    if (pr.mask == MaskMode::varlen) rows = keys = pr.lens[b];
    for (int n = 0; n < pr.N; ++n) {
      // This head's Q rows, K and V of the valid keys.
      auto gather = [&](int count, int which) {
        std::vector<std::vector<int>> m(count, std::vector<int>(pr.H));
        for (int s = 0; s < count; ++s)
          for (int d = 0; d < pr.H; ++d) m[s][d] = static_cast<int>(qkv.get(qkv_index(pr, token_of(pr, cu, b, s), which, n, d)));
        return m;
      };
      const auto q = gather(rows, 0), k = gather(keys, 1), v = gather(keys, 2);
      for (int i = 0; i < rows; ++i) {
        std::vector<float> x(keys), e(keys);
        for (int j = 0; j < keys; ++j) {
          int acc = 0;
          for (int d = 0; d < pr.H; ++d) acc += q[i][d] * k[j][d];
          x[j] = static_cast<float>(acc) * scale_bmm1;
        }
        auto exp_sum = [&](float shift) {
          float sum = 0;
          for (int j = 0; j < keys; ++j) sum += (e[j] = own_expf(x[j] - shift));
          return sum;
        };
        auto row_max = [&] { return *std::max_element(x.begin(), x.end()); };
        float sum = 0;
        if (keys > 0) {
          sum = exp_sum(p_max);
          const bool overflow = std::isinf(sum) || std::isnan(sum);
          const bool fails = overflow || sum < kGuard;
          if (fails) {
            ++(overflow ? em.overflow_rows : em.underflow_rows);
            em.failed_rows.emplace_back(token_of(pr, cu, b, i), n);
          }
          if (pr.bound == BoundMode::row_max || (pr.bound == BoundMode::guarded && fails)) sum = exp_sum(row_max());
        }
        const float inv = (sum == 0.0f || std::isnan(sum)) ? 1.0f : 1.0f / sum;
        std::vector<int> P(keys);
        for (int j = 0; j < keys; ++j) {
          P[j] = own_sat8(e[j] * inv * scale_softmax);
          em.min_prob = std::min(em.min_prob, P[j]);
          em.max_prob = std::max(em.max_prob, P[j]);
        }
        for (int d = 0; d < pr.H; ++d) {
          int acc = 0;
          for (int j = 0; j < keys; ++j) acc += P[j] * v[j][d];
          em.out[out_index(pr, token_of(pr, cu, b, i), n, d)] = keys == 0 ? 0 : own_sat8(static_cast<float>(acc) * scale_bmm2);
        }
      }
    }
  }
  return em;
}

// Exact agreement, and untouched elements still hold the poison.
void expect_equal(const Problem& pr, const HostTensor& out, const Emulated& em, std::uint8_t poison) {
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < out.numel(); ++i) {
    const int want = em.out[i] == Emulated::kUntouched ? static_cast<std::int8_t>(poison) : em.out[i];
    const int got = static_cast<int>(out.get(i));
    if (got != want && bad++ < 5) ADD_FAILURE() << pr.str() << ": element " << i << " got " << got << " want " << want;
  }
  EXPECT_EQ(bad, 0) << pr.str();
}

void expect_counters(const Problem& pr, const RunStats& st, const Emulated& em) {
  const bool counts = pr.bound != BoundMode::row_max;
  EXPECT_EQ(st.fixed_bound_underflow_rows, counts ? em.underflow_rows : 0) << pr.str();
  EXPECT_EQ(st.fixed_bound_overflow_rows, counts ? em.overflow_rows : 0) << pr.str();
  EXPECT_EQ(st.repaired_rows, pr.bound == BoundMode::guarded ? em.underflow_rows + em.overflow_rows : 0) << pr.str();
}

// Runs with two poisons (every element that must be written is, the rest stays), checks the output
// and the counters against the emulator; returns the emulation.
Emulated check_against_emulator(const Problem& pr, Buffers& buf) {
  const Emulated em = emulate(pr, buf.qkv);
  for (std::uint8_t poison : {std::uint8_t{0x5A}, std::uint8_t{0xA5}}) {
    const RunStats st = run_cpu(pr, buf, poison);
    expect_equal(pr, buf.out, em, poison);
    expect_counters(pr, st, em);
  }
  EXPECT_GE(em.min_prob, 0) << pr.str();
  EXPECT_LE(em.max_prob, 127) << pr.str();
  return em;
}

}  // namespace

TEST(CpuReferenceInt8, RandomShapesMatchTheEmulatorExactly) {
  std::mt19937_64 rng(test::fresh_seed());
  struct Mode { Layout layout; MaskMode mask; };
  const Mode modes[] = {{Layout::trt, MaskMode::none},   {Layout::trt, MaskMode::lengths},
                        {Layout::trt, MaskMode::varlen}, {Layout::hf, MaskMode::none},
                        {Layout::hf, MaskMode::lengths}, {Layout::hf, MaskMode::varlen},
                        {Layout::chw32, MaskMode::varlen}};
  const int seqs[] = {1, 17, 64, 130, 300};
  const float qkv_scales[] = {0.01f, 0.03f, 0.08f, 0.25f, 0.5f};  // p_max from 0.2 to 504 (H = 64)
  const float ctx_factors[] = {0.5f, 1.0f, 2.0f};
  const float dq[] = {1.0f / 127, 1.0f / 200, 1.0f / 60};
  std::int64_t flagged = 0;
  for (BoundMode bound : {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded})
    for (const Mode& m : modes)
      for (int rep = 0; rep < 2; ++rep) {
        Problem pr;
        pr.layout = m.layout, pr.mask = m.mask, pr.bound = bound;
        pr.S = seqs[rng() % 5];
        pr.B = 1 + int(rng() % 3);
        pr.H = m.layout == Layout::chw32 ? (rng() % 2 ? 32 : 64) : (rng() % 2 ? 24 : 64);
        pr.N = 1 + int(rng() % 2);
        pr.scales.qkv_scale = qkv_scales[rng() % 5];
        pr.scales.ctx_scale = pr.scales.qkv_scale * ctx_factors[rng() % 3];
        pr.scales.dq_probs = dq[rng() % 3];
        if (m.mask != MaskMode::none) {
          pr.lens = test::random_lengths(rng(), pr.B, 0, m.mask == MaskMode::lengths ? pr.S + 2 : pr.S);
          if (pr.B > 1) pr.lens[rng() % pr.B] = 0;
        }
        if (m.mask == MaskMode::varlen) pr.extra_rows = int(rng() % 3);
        if (pr.rows() == 0) pr.extra_rows = 1;
        Buffers buf = make_buffers(pr);
        buf.qkv.fill_random(rng(), 1.0, rng() % 2 ? 127 : 40);
        const Emulated em = check_against_emulator(pr, buf);
        flagged += em.underflow_rows + em.overflow_rows;
      }
  EXPECT_GT(flagged, 0) << "the scale choices should make the fixed bound fail on some rows";
}

// SPEC 9 items 23 and 42: with one valid key p = 1 exactly, so Pi8 = sat8(RNE(1/dq_probs)) and every
// output element is sat8(RNE(float(Pi8 * V[0][d]) * scale_bmm2)), scale_bmm2 = dq_probs*s_qkv/s_ctx
// in FP32. In lengths mode every (padded) row of a length-1 sequence attends to that one key.
TEST(CpuReferenceInt8, SingleKeyFollowsTheClosedForm) {
  std::mt19937_64 rng(test::fresh_seed());
  const Int8Scales triples[] = {{0.02f, 0.03f, 1.0f / 127}, {0.1f, 0.05f, 1.0f / 200},
                                {0.5f, 0.25f, 1.0f / 50},   {0.03f, 0.5f, 0.013f},
                                {4.0f / 127, 4.0f / 127, 1.0f / 127}, {0.25f, 0.01f, 1.0f / 90}};
  for (const Int8Scales& sc : triples)
    for (BoundMode bound : {BoundMode::row_max, BoundMode::guarded})
      for (MaskMode mask : {MaskMode::varlen, MaskMode::lengths}) {
        Problem pr;
        pr.mask = mask, pr.bound = bound, pr.scales = sc;
        pr.N = 2, pr.H = 64, pr.B = 5, pr.S = mask == MaskMode::varlen ? 1 : 6;
        pr.lens.assign(pr.B, 1);
        Buffers buf = make_buffers(pr);
        buf.qkv.fill_random(rng());
        run_cpu(pr, buf);
        const int P = own_sat8(1.0f / sc.dq_probs);
        const float scale_bmm2 = sc.dq_probs * sc.qkv_scale / sc.ctx_scale;
        const auto cu = pr.cu();
        for (int b = 0; b < pr.B; ++b)
          for (int i = 0; i < (mask == MaskMode::varlen ? 1 : pr.S); ++i)
            for (int n = 0; n < pr.N; ++n)
              for (int d = 0; d < pr.H; ++d) {
                const int v = static_cast<int>(buf.qkv.get(qkv_index(pr, token_of(pr, cu, b, 0), 2, n, d)));
                const int want = own_sat8(static_cast<float>(P * v) * scale_bmm2);
                ASSERT_EQ(buf.out.get(out_index(pr, token_of(pr, cu, b, i), n, d)), want) << pr.str() << " b=" << b << " row " << i;
              }
      }
}

TEST(CpuReferenceInt8, ProbabilitySaturatesAt127) {
  // dq_probs = 1/200: a lone key has p = 1 and 200 * p saturates to 127, not 200.
  ASSERT_EQ(own_sat8(1.0f / (1.0f / 200)), 127);
  std::mt19937_64 rng(test::fresh_seed());
  Problem pr;
  pr.scales = {0.05f, 0.05f, 1.0f / 200};
  pr.N = 2, pr.H = 64, pr.B = 3, pr.S = 1;
  pr.lens = {1, 1, 1};
  Buffers buf = make_buffers(pr);
  buf.qkv.fill_random(rng());
  run_cpu(pr, buf);
  const float scale_bmm2 = pr.scales.dq_probs * pr.scales.qkv_scale / pr.scales.ctx_scale;
  for (std::int64_t t = 0; t < 3; ++t)
    for (int n = 0; n < pr.N; ++n)
      for (int d = 0; d < pr.H; ++d) {
        const int v = static_cast<int>(buf.qkv.get(qkv_index(pr, t, 2, n, d)));
        ASSERT_EQ(buf.out.get(out_index(pr, t, n, d)), own_sat8(static_cast<float>(127 * v) * scale_bmm2));
      }
}

// SPEC 9 item 26 / 5.0.1: s_qkv = 0.25, H = 64 gives p_max = 126 > 87.34, so a row whose logits are
// all <= 0 underflows entirely under the fixed bound: all-zero context, counted. Here q >= 0 and
// k <= 0 everywhere, so every row with a valid key fails; the length-0 sequence is never counted.
TEST(CpuReferenceInt8, FixedBoundUnderflowZeroesRowsAndGuardedRepairsThem) {
  std::mt19937_64 rng(test::fresh_seed());
  for (MaskMode mask : {MaskMode::varlen, MaskMode::lengths}) {
    Problem pr;
    pr.mask = mask;
    pr.scales = {0.25f, 0.25f, 1.0f / 127};
    pr.N = 2, pr.H = 64, pr.S = 40, pr.B = 2;
    pr.lens = {40, 0};
    Buffers buf = make_buffers(pr);
    buf.qkv.fill_random(rng());
    const auto cu = pr.cu();
    for (int s = 0; s < pr.S; ++s)
      for (int n = 0; n < pr.N; ++n)
        for (int d = 0; d < pr.H; ++d) {
          const std::int64_t t = token_of(pr, cu, 0, s);
          buf.qkv.set(qkv_index(pr, t, 0, n, d), std::abs(buf.qkv.get(qkv_index(pr, t, 0, n, d))));
          buf.qkv.set(qkv_index(pr, t, 1, n, d), -std::abs(buf.qkv.get(qkv_index(pr, t, 1, n, d))));
        }
    const std::int64_t rows_with_keys = std::int64_t{40} * pr.N;
    Buffers fixed = buf, rowmax = buf, guarded = buf;
    pr.bound = BoundMode::fixed_bound;
    const Emulated em = check_against_emulator(pr, fixed);
    RunStats st = run_cpu(pr, fixed);
    EXPECT_EQ(st.fixed_bound_underflow_rows, rows_with_keys);
    EXPECT_EQ(em.underflow_rows, rows_with_keys);
    EXPECT_EQ(st.fixed_bound_overflow_rows, 0);
    EXPECT_EQ(st.repaired_rows, 0);
    for (std::int64_t i = 0; i < fixed.out.numel(); ++i) ASSERT_EQ(fixed.out.get(i), 0) << "element " << i;

    pr.bound = BoundMode::row_max;
    check_against_emulator(pr, rowmax);
    std::int64_t nonzero = 0;
    for (int n = 0; n < pr.N; ++n)
      for (int d = 0; d < pr.H; ++d) nonzero += rowmax.out.get(out_index(pr, token_of(pr, cu, 0, 0), n, d)) != 0;
    EXPECT_GT(nonzero, 0) << "with the row maximum the same row has a non-zero context";

    pr.bound = BoundMode::guarded;
    check_against_emulator(pr, guarded);
    st = run_cpu(pr, guarded);
    EXPECT_EQ(st.repaired_rows, rows_with_keys);
    EXPECT_EQ(st.fixed_bound_underflow_rows, rows_with_keys);
    EXPECT_EQ(guarded.out.bytes, rowmax.out.bytes) << "every row repaired: guarded == row_max";
  }
}

// SPEC 5.0.1 overflow: s_qkv = 0.05 and q = k = 127 in all 64 lanes give a logit of
// 64 * 16129 * 0.05^2 / 8 = 322.6 > p_max + 88.72 = 93.8: exp overflows, the row sum is +inf, the
// fixed bound's row collapses to 0. Every other logit is at most 64 * 127 * 20 * 0.05^2 / 8 = 50.8,
// so exactly one row fails.
TEST(CpuReferenceInt8, FixedBoundOverflowZeroesTheRowAndGuardedRepairsIt) {
  std::mt19937_64 rng(test::fresh_seed());
  Problem pr;
  pr.scales = {0.05f, 0.05f, 1.0f / 127};
  pr.N = 1, pr.H = 64, pr.S = 16, pr.B = 1;
  pr.lens = {16};
  Buffers buf = make_buffers(pr);
  buf.qkv.fill_random(rng(), 1.0, 20);
  for (int d = 0; d < pr.H; ++d) {
    buf.qkv.set(qkv_index(pr, 3, 0, 0, d), 127);  // q of row 3
    buf.qkv.set(qkv_index(pr, 0, 1, 0, d), 127);  // k of key 0
    buf.qkv.set(qkv_index(pr, 0, 2, 0, d), 100 - d);  // v of key 0: non-zero
  }
  Buffers fixed = buf, rowmax = buf, guarded = buf;
  pr.bound = BoundMode::fixed_bound;
  const Emulated em = check_against_emulator(pr, fixed);
  EXPECT_EQ(em.overflow_rows, 1);
  EXPECT_EQ(em.underflow_rows, 0);
  RunStats st = run_cpu(pr, fixed);
  EXPECT_EQ(st.fixed_bound_overflow_rows, 1);
  EXPECT_EQ(st.fixed_bound_underflow_rows, 0);
  for (int d = 0; d < pr.H; ++d) ASSERT_EQ(fixed.out.get(out_index(pr, 3, 0, d)), 0);

  pr.bound = BoundMode::row_max;
  check_against_emulator(pr, rowmax);
  pr.bound = BoundMode::guarded;
  check_against_emulator(pr, guarded);
  st = run_cpu(pr, guarded);
  EXPECT_EQ(st.fixed_bound_overflow_rows, 1);
  EXPECT_EQ(st.repaired_rows, 1);
  for (int d = 0; d < pr.H; ++d) {
    EXPECT_EQ(guarded.out.get(out_index(pr, 3, 0, d)), rowmax.out.get(out_index(pr, 3, 0, d)));
    EXPECT_NE(rowmax.out.get(out_index(pr, 3, 0, d)), 0);  // p = 1 on key 0, v = 100 - d
  }
}

// QKV amax 32 and 64 (qkv_scale = 32/127, 64/127; p_max = 128, 512 at H = 64) with random INT8 (full
// range: logit std ~ 340 / 1370, nearly every row overflows the fixed bound; |x| <= 40: a mix of
// underflowing and fine rows). guarded repairs exactly the rows the emulator flags, and those rows
// equal row_max exactly (same computation). The other rows keep the fixed-bound shift, which is
// mathematically the same softmax (SPEC 5.0.1) but rounds differently: an RNE of p * 127 can flip,
// so they are held to 1 LSB, and flips must stay rare (measured: ~3 elements per million).
TEST(CpuReferenceInt8, GuardedEqualsRowMaxAtLargeQkvRanges) {
  std::mt19937_64 rng(test::fresh_seed());
  for (float amax : {32.0f, 64.0f})
    for (int rep = 0; rep < 2; ++rep) {
      Problem pr;
      pr.scales = {amax / 127, amax / 127, 1.0f / 127};
      pr.N = 2, pr.H = 64, pr.S = 200, pr.B = 4;
      pr.lens = test::random_lengths(rng(), pr.B, 0, pr.S);
      Buffers buf = make_buffers(pr);
      buf.qkv.fill_random(rng(), 1.0, rep == 0 ? 127 : 40);
      Buffers rowmax = buf;
      pr.bound = BoundMode::guarded;
      const Emulated em = check_against_emulator(pr, buf);
      const RunStats st = run_cpu(pr, buf);
      pr.bound = BoundMode::row_max;
      check_against_emulator(pr, rowmax);
      EXPECT_EQ(st.repaired_rows, em.underflow_rows + em.overflow_rows);
      EXPECT_EQ(st.repaired_rows, static_cast<std::int64_t>(em.failed_rows.size()));
      if (rep == 0) { EXPECT_GT(st.repaired_rows, 0); }  // full range: nearly every row overflows
      for (const auto& [t, n] : em.failed_rows)
        for (int d = 0; d < pr.H; ++d)
          ASSERT_EQ(buf.out.get(out_index(pr, t, n, d)), rowmax.out.get(out_index(pr, t, n, d)))
              << pr.str() << ": repaired row " << t << " head " << n;
      std::int64_t differing = 0;
      for (std::int64_t i = 0; i < buf.out.numel(); ++i) {
        const double diff = std::fabs(buf.out.get(i) - rowmax.out.get(i));
        ASSERT_LE(diff, 1.0) << pr.str() << ": element " << i;
        differing += diff > 0;
      }
      EXPECT_LE(differing, buf.out.numel() / 1000) << pr.str();
      std::cout << "[qkv2ctx] amax " << amax << ": " << st.repaired_rows << " of " << (pr.cu().back() * pr.N)
                << " rows repaired (" << st.fixed_bound_underflow_rows << " underflow, "
                << st.fixed_bound_overflow_rows << " overflow); guarded vs row_max: " << differing
                << " elements differ by 1 LSB\n";
    }
}

// SPEC 9 item 22: chw32 channel c = which*E + n*H + d of token t lives at (c/32)*T*32 + t*32 + c%32
// (planar Q|K|V), output channel n*H + d likewise. (a) chw32 gives exactly the trt result of the same
// logical values; (b) perturbing one input channel changes only head n, and acts as Q (row t only),
// K (rows of t's sequence) or V (channel n*H + d only).
TEST(CpuReferenceInt8, Chw32AddressingIsPlanarInterleaved) {
  std::mt19937_64 rng(test::fresh_seed());
  for (BoundMode bound : {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded}) {
    Problem chw;
    chw.layout = Layout::chw32, chw.bound = bound;
    chw.N = 3, chw.H = 32, chw.S = 23, chw.B = 3;
    chw.lens = {23, 9, 14};
    chw.extra_rows = 1;
    chw.scales = {0.03f, 0.03f, 1.0f / 127};  // p_max = 2.6, largest logit 82: no bound failure
    Buffers cbuf = make_buffers(chw);
    cbuf.qkv.fill_random(rng());
    Problem trt = chw;
    trt.layout = Layout::trt;
    Buffers tbuf = make_buffers(trt);
    for (std::int64_t t = 0; t < chw.rows(); ++t)
      for (int n = 0; n < chw.N; ++n)
        for (int which = 0; which < 3; ++which)
          for (int d = 0; d < chw.H; ++d)
            tbuf.qkv.set(qkv_index(trt, t, which, n, d), cbuf.qkv.get(qkv_index(chw, t, which, n, d)));
    check_against_emulator(chw, cbuf);
    run_cpu(chw, cbuf);
    run_cpu(trt, tbuf);
    const std::int64_t written = chw.cu().back();
    for (std::int64_t t = 0; t < written; ++t)
      for (int n = 0; n < chw.N; ++n)
        for (int d = 0; d < chw.H; ++d)
          ASSERT_EQ(cbuf.out.get(out_index(chw, t, n, d)), tbuf.out.get(out_index(trt, t, n, d)));

    const auto cu = chw.cu();
    // A one-lane change may leave every rounded output as it was: try a few (token, lane) pairs; each
    // must respect the allowed set, and at least one must change something.
    for (int which = 0; which < 3; ++which) {
      int count = 0;
      for (int trial = 0; trial < 6; ++trial) {
        const int b = int(rng() % chw.B), n = int(rng() % chw.N), d = int(rng() % chw.H);
        const int s = int(rng() % chw.lens[b]);
        const std::int64_t t = cu[b] + s, E = chw.E(), c = which * E + std::int64_t{n} * chw.H + d;
        Buffers changed = cbuf;
        const std::int64_t addr = c / 32 * (chw.rows() * 32) + t * 32 + c % 32;
        changed.qkv.set(addr, cbuf.qkv.get(addr) > 0 ? -127 : 127);
        run_cpu(chw, changed);
        for (int b2 = 0; b2 < chw.B; ++b2)
          for (int s2 = 0; s2 < chw.lens[b2]; ++s2)
            for (int n2 = 0; n2 < chw.N; ++n2)
              for (int d2 = 0; d2 < chw.H; ++d2) {
                const std::int64_t t2 = cu[b2] + s2, c2 = std::int64_t{n2} * chw.H + d2;
                const std::int64_t o = c2 / 32 * (chw.rows() * 32) + t2 * 32 + c2 % 32;
                const bool differs = changed.out.get(o) != cbuf.out.get(o);
                const bool allowed = b2 == b && n2 == n && (which != 0 || s2 == s) && (which != 2 || d2 == d);
                count += differs;
                EXPECT_FALSE(differs && !allowed) << "which=" << which << " channel " << c << " of token " << t
                                                  << " changed (b=" << b2 << ", s=" << s2 << ", n=" << n2 << ", d=" << d2 << ")";
              }
      }
      EXPECT_GT(count, 0) << "which=" << which;
    }
  }
}

// Steps 2-6 on their own: Pi8 stays in [0, 127] for extreme accumulators and scales, in every mode.
TEST(CpuReferenceInt8, ProbabilitiesNeverNegativeNorAbove127) {
  std::mt19937_64 rng(test::fresh_seed());
  const float dqs[] = {1.0f / 127, 1.0f / 1000, 0.5f, 1.0f / 200};
  const float scales[] = {0.001f, 0.05f, 0.3f, 2.0f};
  for (float s : scales)
    for (float dq : dqs)
      for (BoundMode bound : {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded}) {
        const Int8Derived k = derive_int8_scales({s, 1.0f, dq}, 256);
        const int keys = 1 + int(rng() % 300);
        std::vector<std::int32_t> acc(keys), probs(keys, -1);
        std::vector<float> exps(keys);
        std::uniform_int_distribution<std::int32_t> dist(-(1 << 22), 1 << 22);  // |acc1| <= 256 * 128^2
        for (auto& a : acc) a = dist(rng);
        if (rng() % 2) acc[rng() % keys] = 1 << 22;
        cpu::int8_softmax_row(acc.data(), keys, k, bound, ProbsMode::trt, exps.data(), probs.data());
        for (int j = 0; j < keys; ++j) {
          ASSERT_GE(probs[j], 0) << "s=" << s << " dq=" << dq;
          ASSERT_LE(probs[j], 127) << "s=" << s << " dq=" << dq;
        }
      }
}
