// CPU reference (fp32 / fp16 / bf16) against a naive formula written here from SPEC 3 and 4.1: its
// own addressing (not core/indexing.hpp), plain loops in double, softmax without max shift. Plus the
// conformance items that are properties of the math: SPEC 9 items 13, 16, 17, 18, 20, 38, 39.
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

constexpr std::uint8_t kPoison = 0xFF;  // NaN in fp32, fp16 and bf16

struct Problem {
  DType dtype = DType::fp32;
  Layout layout = Layout::trt;
  MaskMode mask = MaskMode::none;
  int N = 2, H = 16, S = 8, B = 2;
  int scale_head_size = 0;         // 0 = H
  std::vector<std::int32_t> lens;  // lengths: seq_lens; varlen: per-sequence lengths
  int extra_rows = 0;              // varlen: qkv/out rows after cu_seqlens[B] (never written)

  int E() const { return N * H; }
  bool padded() const { return mask != MaskMode::varlen; }
  std::vector<std::int32_t> cu() const { return test::prefix_sums(lens); }
  std::int64_t rows() const { return padded() ? std::int64_t{S} * B : cu().back() + extra_rows; }
  std::string str() const {
    std::string s = std::string(to_string(dtype)) + " " + std::string(to_string(layout)) + " " +
                    std::string(to_string(mask)) + " N=" + std::to_string(N) + " H=" + std::to_string(H) +
                    " S=" + std::to_string(S) + " B=" + std::to_string(B) + " lens=";
    for (auto l : lens) s += std::to_string(l) + ",";
    return s;
  }
};

AttentionDesc desc_of(const Problem& pr) {
  AttentionDesc d;
  d.dtype = pr.dtype;
  d.num_heads = pr.N;
  d.head_size = pr.H;
  d.layout = pr.layout;
  d.mask = pr.mask;
  d.scale_head_size = pr.scale_head_size;
  return d;
}

struct Buffers {
  HostTensor qkv, out;
  std::vector<std::int32_t> seq_lens, cu_seqlens;
};

Buffers make_buffers(const Problem& pr, std::uint64_t seed) {
  Buffers b;
  const std::int64_t E = pr.E();
  if (pr.padded()) {
    const std::int64_t d0 = pr.layout == Layout::trt ? pr.S : pr.B, d1 = pr.layout == Layout::trt ? pr.B : pr.S;
    b.qkv = HostTensor(pr.dtype, {d0, d1, 3 * E});
    b.out = HostTensor(pr.dtype, {d0, d1, E});
    if (pr.mask == MaskMode::lengths) b.seq_lens = pr.lens;
  } else {
    b.qkv = HostTensor(pr.dtype, {pr.rows(), 3 * E});
    b.out = HostTensor(pr.dtype, {pr.rows(), E});
    b.cu_seqlens = pr.cu();
  }
  b.qkv.fill_random(seed);
  return b;
}

AttentionArgs args_of(const Problem& pr, const Buffers& b) {
  AttentionArgs a;
  a.qkv = b.qkv.view();
  a.out = b.out.view();
  if (!b.seq_lens.empty())
    a.seq_lens = TensorView(b.seq_lens.data(), DType::int32, MemSpace::host, {pr.B});
  if (!b.cu_seqlens.empty()) {
    a.cu_seqlens = TensorView(b.cu_seqlens.data(), DType::int32, MemSpace::host, {pr.B + 1});
    a.max_seqlen = pr.S;
  }
  return a;
}

// Poisons the output, runs the CPU backend, returns its counters.
RunStats run_cpu(const Problem& pr, Buffers& b) {
  const Plan plan = make_plan(desc_of(pr), {Backend::cpu});
  const AttentionArgs args = args_of(pr, b);
  alignas(16) static thread_local std::uint8_t ws[kStatsBytes];
  const Workspace workspace{ws, plan.workspace_bytes(plan.problem_size(args))};
  b.out.fill_byte(kPoison);
  plan.run(args, workspace);
  return plan.read_stats(workspace);
}

// ---- The naive formula --------------------------------------------------------------------------

// SPEC 3.2 (trt padded), 3.3 (varlen), and the hf layout ([B, S] tokens, per token [3][N][H]).
std::int64_t token_of(const Problem& pr, const std::vector<std::int32_t>& cu, int b, int s) {
  if (!pr.padded()) return cu[b] + s;
  return pr.layout == Layout::trt ? std::int64_t{s} * pr.B + b : std::int64_t{b} * pr.S + s;
}
std::int64_t qkv_index(const Problem& pr, std::int64_t token, int which, int n, int d) {
  const std::int64_t E = pr.E(), H = pr.H;
  if (pr.layout == Layout::trt) return token * 3 * E + n * 3 * H + which * H + d;
  return token * 3 * E + which * E + n * H + d;
}
std::int64_t out_index(const Problem& pr, std::int64_t token, int n, int d) {
  return token * pr.E() + std::int64_t{n} * pr.H + d;
}

// Context as double; NaN where the output must stay untouched (varlen rows >= cu_seqlens[B]).
std::vector<double> naive_context(const Problem& pr, const HostTensor& qkv) {
  std::vector<double> ctx(static_cast<std::size_t>(pr.rows() * pr.E()), std::nan(""));
  const auto cu = pr.cu();
  const double scale = 1.0 / std::sqrt(double(pr.scale_head_size ? pr.scale_head_size : pr.H));
  for (int b = 0; b < pr.B; ++b) {
    int rows = pr.S, keys = pr.S;
    if (pr.mask == MaskMode::lengths) keys = std::clamp(pr.lens[b], 0, pr.S);
    if (pr.mask == MaskMode::varlen) rows = keys = pr.lens[b];
    for (int n = 0; n < pr.N; ++n) {
      // This head's vectors as double: q[i][d], k[j][d], v[j][d].
      auto gather = [&](int count, int which) {
        std::vector<std::vector<double>> m(count, std::vector<double>(pr.H));
        for (int s = 0; s < count; ++s)
          for (int d = 0; d < pr.H; ++d) m[s][d] = qkv.get(qkv_index(pr, token_of(pr, cu, b, s), which, n, d));
        return m;
      };
      const auto q = gather(rows, 0), k = gather(keys, 1), v = gather(keys, 2);
      for (int i = 0; i < rows; ++i) {
        std::vector<double> w(keys);
        double total = 0;
        for (int j = 0; j < keys; ++j) {
          double dot = 0;
          for (int d = 0; d < pr.H; ++d) dot += q[i][d] * k[j][d];
          w[j] = std::exp(dot * scale);  // |logit| <= sqrt(H) for unit inputs: no shift needed
          total += w[j];
        }
        for (int d = 0; d < pr.H; ++d) {
          double acc = 0;
          for (int j = 0; j < keys; ++j) acc += w[j] / total * v[j][d];
          ctx[out_index(pr, token_of(pr, cu, b, i), n, d)] = keys == 0 ? 0.0 : acc;
        }
      }
    }
  }
  return ctx;
}

// Distance in ulps between two finite 16-bit floats (fp16 or bf16), via sign-magnitude ordering.
int ulp_distance16(std::uint16_t a, std::uint16_t b) {
  auto ordered = [](std::uint16_t x) { return (x & 0x8000) ? -int(x & 0x7fff) : int(x); };
  return std::abs(ordered(a) - ordered(b));
}
std::uint16_t bits16(const HostTensor& t, std::int64_t i) {
  std::uint16_t v;
  std::memcpy(&v, t.bytes.data() + 2 * i, 2);
  return v;
}
// `want` rounded once to the nearest fp16 / bf16 (ties to even): HostTensor::set rounds through float,
// which can land on a midpoint and break the tie the wrong way, so its result and its two neighbours
// are compared in double.
std::uint16_t round16(DType dtype, double want) {
  HostTensor t(dtype, {1});
  t.set(0, want);
  const std::uint16_t first = bits16(t, 0);
  auto value = [&](std::uint16_t b) {
    std::memcpy(t.bytes.data(), &b, 2);
    return t.get(0);
  };
  std::uint16_t best = first;
  for (int step : {-1, 1}) {
    if ((first & 0x7fff) == 0 && step < 0) continue;
    const std::uint16_t cand = static_cast<std::uint16_t>(first + step);
    const double dc = std::fabs(value(cand) - want), db = std::fabs(value(best) - want);
    if (dc < db || (dc == db && (cand & 1) == 0)) best = cand;
  }
  return best;
}
bool is_poison(const HostTensor& t, std::int64_t i) {
  const std::size_t es = element_size(t.dtype);
  for (std::size_t k = 0; k < es; ++k)
    if (t.bytes[i * es + k] != kPoison) return false;
  return true;
}

// Tolerances. The reference and the naive formula both work in double; their difference is a few
// hundred roundings of the context scale: (H + S) * 2^-53 * max|v| < 1e-13 for S <= 513, H <= 64
// and |v| <= 1, so 1e-12 * max|v| (max|v| = 1) bounds it. fp32: the output is RNE(ref), so it is
// within half an fp32 ulp of ref and thus within that plus 1e-12 of the naive value. fp16 / bf16:
// the naive value, rounded once here, may sit within 1e-12 of a rounding midpoint, so 1 ulp is
// allowed; such cases must stay rare.
void expect_matches_naive(const Problem& pr, const HostTensor& out, const std::vector<double>& naive) {
  std::int64_t one_ulp = 0, bad = 0;
  for (std::int64_t i = 0; i < out.numel(); ++i) {
    const double want = naive[i];
    if (std::isnan(want)) {
      if (!is_poison(out, i) && bad++ < 5) ADD_FAILURE() << pr.str() << ": element " << i << " written but must stay untouched";
      continue;
    }
    const double got = out.get(i);
    if (pr.dtype == DType::fp32) {
      const float wf = static_cast<float>(std::fabs(want));
      const double half_ulp = 0.5 * (std::nextafter(wf, INFINITY) - wf);
      if (!(std::fabs(got - want) <= half_ulp + 1e-12) && bad++ < 5)
        ADD_FAILURE() << pr.str() << ": element " << i << " got " << got << " want " << want;
    } else {
      const int dist = std::isfinite(got) ? ulp_distance16(bits16(out, i), round16(pr.dtype, want)) : 99;
      if (dist == 1) ++one_ulp;
      if (dist > 1 && bad++ < 5)
        ADD_FAILURE() << pr.str() << ": element " << i << " got " << got << " want " << want << " (" << dist << " ulp)";
    }
  }
  EXPECT_EQ(bad, 0) << pr.str();
  EXPECT_LE(one_ulp, out.numel() / 1000) << pr.str() << ": too many 1-ulp differences";
}

std::vector<std::int32_t> lengths_for(std::mt19937_64& rng, const Problem& pr) {
  // Ragged, with a 0 whenever B > 1, and (lengths mode) values above S that must clamp to S.
  const int hi = pr.mask == MaskMode::lengths ? pr.S + 3 : pr.S;
  std::vector<std::int32_t> lens = test::random_lengths(rng(), pr.B, 0, hi);
  if (pr.B > 1) lens[rng() % pr.B] = 0;
  if (pr.B > 2) lens[0] = pr.S;
  return lens;
}

}  // namespace

TEST(CpuReference, DescribesItselfAndNeedsOnlyTheStatsBlock) {
  AttentionDesc d;
  const Plan plan = make_plan(d, {Backend::cpu});
  EXPECT_EQ(plan.backend(), Backend::cpu);
  EXPECT_EQ(plan.memory_space(), MemSpace::host);
  EXPECT_NE(plan.describe().find("CPU reference (double precision"), std::string::npos) << plan.describe();
  EXPECT_EQ(plan.workspace_bytes({8, 4096, 8 * 4096}), kStatsBytes);
  d.dtype = DType::int8;
  d.bound = BoundMode::guarded;
  const Plan p8 = make_plan(d, {Backend::cpu});
  EXPECT_NE(p8.describe().find("CPU reference (exact INT8 emulation, bound=guarded"), std::string::npos) << p8.describe();
}

TEST(CpuReference, RandomShapesMatchNaiveFormula) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int S : {1, 2, 63, 128, 384, 513})
    for (int B : {1, 3})
      for (Layout layout : {Layout::trt, Layout::hf})
        for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen})
          for (DType dtype : {DType::fp32, DType::fp16, DType::bf16}) {
            Problem pr;
            pr.dtype = dtype;
            pr.layout = layout;
            pr.mask = mask;
            pr.S = S;
            pr.B = B;
            // Small H / N for long S keep the whole test within seconds.
            const int small_h[] = {7, 24, 40, 64}, large_h[] = {8, 16};
            pr.H = S <= 128 ? small_h[rng() % 4] : large_h[rng() % 2];
            pr.N = S <= 128 ? 1 + int(rng() % 3) : 1 + int(rng() % 2);
            if (rng() % 4 == 0) pr.scale_head_size = 64;  // TensorRT's padded-size scale
            if (mask != MaskMode::none) pr.lens = lengths_for(rng, pr);
            if (mask == MaskMode::varlen) pr.extra_rows = int(rng() % 3);
            if (pr.rows() == 0) pr.extra_rows = 1;  // tensors need >= 1 row
            Buffers buf = make_buffers(pr, rng());
            const RunStats stats = run_cpu(pr, buf);
            EXPECT_EQ(stats.repaired_rows + stats.fixed_bound_underflow_rows + stats.fixed_bound_overflow_rows, 0);
            expect_matches_naive(pr, buf.out, naive_context(pr, buf.qkv));
          }
}

TEST(CpuReference, RoundsOnceToHalfAndBf16) {
  using cpu::double_to_bf16_rne;
  using cpu::double_to_half_rne;
  // 1 + 2^-11 + 2^-40 is above the fp16 midpoint 1 + 2^-11; through float it would become the tie and
  // round to even (1.0).
  EXPECT_EQ(double_to_half_rne(1.0 + 0x1p-11 + 0x1p-40), 0x3C01);
  EXPECT_EQ(double_to_half_rne(1.0 + 0x1p-11), 0x3C00);           // exact tie: even
  EXPECT_EQ(double_to_half_rne(1.0 + 3 * 0x1p-11), 0x3C02);       // exact tie: even (up)
  EXPECT_EQ(double_to_half_rne(-(1.0 + 0x1p-11 + 0x1p-40)), 0xBC01);
  EXPECT_EQ(double_to_half_rne(65519.99), 0x7BFF);                // largest finite 65504
  EXPECT_EQ(double_to_half_rne(65520.0), 0x7C00);                 // midpoint to 2^16: even -> inf
  EXPECT_EQ(double_to_half_rne(0x1p-25), 0x0000);                 // half the smallest subnormal: even
  EXPECT_EQ(double_to_half_rne(0x1p-25 + 0x1p-60), 0x0001);
  EXPECT_EQ(double_to_half_rne(3 * 0x1p-25), 0x0002);             // subnormal tie: even
  EXPECT_EQ(double_to_half_rne(0x1p-14 - 0x1p-26), 0x0400);        // rounds up into the normals
  EXPECT_EQ(double_to_half_rne(0.0), 0x0000);
  EXPECT_EQ(double_to_half_rne(-0.0), 0x8000);
  EXPECT_EQ(double_to_half_rne(INFINITY), 0x7C00);
  EXPECT_EQ(double_to_half_rne(NAN) & 0x7C00, 0x7C00);
  EXPECT_NE(double_to_half_rne(NAN) & 0x03FF, 0);
  EXPECT_EQ(double_to_bf16_rne(1.0 + 0x1p-8 + 0x1p-40), 0x3F81);
  EXPECT_EQ(double_to_bf16_rne(1.0 + 0x1p-8), 0x3F80);
  EXPECT_EQ(double_to_bf16_rne(std::ldexp(255.49, 120)), 0x7F7F);
  EXPECT_EQ(double_to_bf16_rne(std::ldexp(255.5, 120)), 0x7F80);  // midpoint to 2^128: even -> inf
  EXPECT_EQ(double_to_bf16_rne(0x1p-134), 0x0000);                // half the smallest subnormal
  EXPECT_EQ(double_to_bf16_rne(0x1p-134 + 0x1p-160), 0x0001);
  EXPECT_EQ(double_to_bf16_rne(-3.0), 0xC040);
}

// SPEC 9 item 13: one QKV element at ((s*B + b)*3E) + n*3H + which*H + d (trt) changes only head n of
// token (s, b) as Q, all rows of sequence b as K, and only dim d of those rows as V. hf: the same
// with ((b*S + s)*3E) + which*E + n*H + d.
TEST(CpuReference, OneElementActsOnlyAsItsHeadAndComponent) {
  std::mt19937_64 rng(test::fresh_seed());
  for (Layout layout : {Layout::trt, Layout::hf})
    for (int which = 0; which < 3; ++which) {
      Problem pr;
      pr.layout = layout;
      pr.N = 3, pr.H = 8, pr.S = 5, pr.B = 3;
      Buffers base = make_buffers(pr, rng());
      run_cpu(pr, base);
      const int s = int(rng() % pr.S), b = int(rng() % pr.B), n = int(rng() % pr.N), d = int(rng() % pr.H);
      const std::int64_t E = pr.E(), H = pr.H;
      const std::int64_t elem = layout == Layout::trt ? (std::int64_t{s} * pr.B + b) * 3 * E + n * 3 * H + which * H + d
                                                      : (std::int64_t{b} * pr.S + s) * 3 * E + which * E + n * H + d;
      Buffers changed = base;
      changed.qkv.set(elem, base.qkv.get(elem) + 0.75);
      run_cpu(pr, changed);
      int changed_count = 0;
      for (int s2 = 0; s2 < pr.S; ++s2)
        for (int b2 = 0; b2 < pr.B; ++b2)
          for (int n2 = 0; n2 < pr.N; ++n2)
            for (int d2 = 0; d2 < pr.H; ++d2) {
              const std::int64_t t = layout == Layout::trt ? std::int64_t{s2} * pr.B + b2 : std::int64_t{b2} * pr.S + s2;
              const std::int64_t o = t * E + n2 * H + d2;
              const bool differs = base.out.get(o) != changed.out.get(o);
              const bool allowed = b2 == b && n2 == n && (which != 0 || s2 == s) && (which != 2 || d2 == d);
              if (differs) ++changed_count;
              EXPECT_FALSE(differs && !allowed) << to_string(layout) << " which=" << which << " changed out (s=" << s2
                                                << ", b=" << b2 << ", n=" << n2 << ", d=" << d2 << ")";
            }
      // Q changes its own row (H values); V changes dim d of every row (all p > 0); K moves every row.
      if (which == 0) { EXPECT_GT(changed_count, 0); }
      if (which == 1) { EXPECT_GT(changed_count, pr.H); }
      if (which == 2) { EXPECT_EQ(changed_count, pr.S); }
    }
}

// SPEC 9 item 16: changing K and V at key positions >= len_b changes no output row (padded rows
// included) of any sequence.
TEST(CpuReference, KeysAtOrBeyondLengthHaveNoInfluence) {
  std::mt19937_64 rng(test::fresh_seed());
  for (Layout layout : {Layout::trt, Layout::hf})
    for (DType dtype : {DType::fp32, DType::fp16, DType::bf16}) {
      Problem pr;
      pr.dtype = dtype, pr.layout = layout, pr.mask = MaskMode::lengths;
      pr.N = 2, pr.H = 24, pr.S = 37, pr.B = 4;
      pr.lens = {5, 0, 36, 1};
      Buffers base = make_buffers(pr, rng());
      run_cpu(pr, base);
      Buffers changed = base;
      for (int b = 0; b < pr.B; ++b)
        for (int s = pr.lens[b]; s < pr.S; ++s)
          for (int n = 0; n < pr.N; ++n)
            for (int which = 1; which < 3; ++which)
              for (int d = 0; d < pr.H; ++d) {
                const std::int64_t i = qkv_index(pr, token_of(pr, {}, b, s), which, n, d);
                changed.qkv.set(i, -3.0 * base.qkv.get(i) + 0.5);
              }
      run_cpu(pr, changed);
      EXPECT_EQ(base.out.bytes, changed.out.bytes) << pr.str();
    }
}

// SPEC 9 item 17: a padded row i >= len_b equals the attention of q_i over keys < len_b. Oracle: the
// same backend in mask mode none on the len_b valid tokens with q_0 replaced by q_i (same keys, same
// order, same arithmetic: bit-identical).
TEST(CpuReference, PaddedRowsAttendOverTheValidKeys) {
  std::mt19937_64 rng(test::fresh_seed());
  for (Layout layout : {Layout::trt, Layout::hf}) {
    Problem pr;
    pr.layout = layout, pr.mask = MaskMode::lengths;
    pr.N = 2, pr.H = 16, pr.S = 29, pr.B = 3;
    pr.lens = {7, 28, 1};
    Buffers buf = make_buffers(pr, rng());
    run_cpu(pr, buf);
    for (int b = 0; b < pr.B; ++b)
      for (int i = pr.lens[b]; i < pr.S; ++i) {
        Problem one;
        one.N = pr.N, one.H = pr.H, one.S = pr.lens[b], one.B = 1;  // trt, mask none
        Buffers ob = make_buffers(one, 1);
        for (int s = 0; s < one.S; ++s)
          for (int n = 0; n < pr.N; ++n)
            for (int which = 0; which < 3; ++which)
              for (int d = 0; d < pr.H; ++d) {
                const int src_row = (s == 0 && which == 0) ? i : s;
                ob.qkv.set(qkv_index(one, s, which, n, d), buf.qkv.get(qkv_index(pr, token_of(pr, {}, b, src_row), which, n, d)));
              }
        run_cpu(one, ob);
        for (int n = 0; n < pr.N; ++n)
          for (int d = 0; d < pr.H; ++d)
            ASSERT_EQ(buf.out.get(out_index(pr, token_of(pr, {}, b, i), n, d)), ob.out.get(out_index(one, 0, n, d)))
                << to_string(layout) << " b=" << b << " padded row " << i << " n=" << n << " d=" << d;
      }
  }
}

// SPEC 9 item 18: len_b >= S behaves as S (bit-identical to mask none); len_b <= 0 gives zeros.
TEST(CpuReference, LengthAtLeastSIsSAndLengthZeroIsZeros) {
  std::mt19937_64 rng(test::fresh_seed());
  for (Layout layout : {Layout::trt, Layout::hf}) {
    Problem pr;
    pr.layout = layout, pr.mask = MaskMode::lengths, pr.dtype = DType::fp16;
    pr.N = 2, pr.H = 16, pr.S = 19, pr.B = 5;
    pr.lens = {19, 20, std::numeric_limits<std::int32_t>::max(), 0, -4};
    Buffers masked = make_buffers(pr, rng());
    run_cpu(pr, masked);
    Problem none = pr;
    none.mask = MaskMode::none;
    Buffers unmasked = masked;
    unmasked.seq_lens.clear();
    run_cpu(none, unmasked);
    for (int b = 0; b < pr.B; ++b)
      for (int s = 0; s < pr.S; ++s)
        for (int n = 0; n < pr.N; ++n)
          for (int d = 0; d < pr.H; ++d) {
            const std::int64_t o = out_index(pr, token_of(pr, {}, b, s), n, d);
            if (b < 3) ASSERT_EQ(bits16(masked.out, o), bits16(unmasked.out, o)) << "b=" << b;
            else ASSERT_EQ(bits16(masked.out, o), 0) << "b=" << b << " (length " << pr.lens[b] << ")";
          }
  }
}

// SPEC 9 items 20 and 38: a sequence's output depends only on its own tokens, in every mask mode;
// every row that must be written is written (poisoned output), varlen rows >= cu_seqlens[B] are not.
TEST(CpuReference, SequencesAreIndependentOfTheRestOfTheBatch) {
  std::mt19937_64 rng(test::fresh_seed());
  for (Layout layout : {Layout::trt, Layout::hf})
    for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
      Problem pr;
      pr.layout = layout, pr.mask = mask;
      pr.N = 2, pr.H = 8, pr.S = 21, pr.B = 4;
      if (mask != MaskMode::none) pr.lens = {21, 0, 9, 1};
      pr.extra_rows = mask == MaskMode::varlen ? 3 : 0;
      Buffers base = make_buffers(pr, rng());
      run_cpu(pr, base);
      expect_matches_naive(pr, base.out, naive_context(pr, base.qkv));
      const auto cu = pr.cu();
      for (int keep = 0; keep < pr.B; ++keep) {
        Buffers other = base;
        HostTensor noise(pr.dtype, other.qkv.shape);
        noise.fill_random(rng());
        for (int b = 0; b < pr.B; ++b) {
          if (b == keep) continue;
          const int rows = pr.padded() ? pr.S : pr.lens[b];
          for (int s = 0; s < rows; ++s)
            for (int n = 0; n < pr.N; ++n)
              for (int which = 0; which < 3; ++which)
                for (int d = 0; d < pr.H; ++d) {
                  const std::int64_t i = qkv_index(pr, token_of(pr, cu, b, s), which, n, d);
                  other.qkv.set(i, noise.get(i));
                }
        }
        run_cpu(pr, other);
        const int rows = pr.padded() ? pr.S : pr.lens[keep];
        for (int s = 0; s < rows; ++s)
          for (int n = 0; n < pr.N; ++n)
            for (int d = 0; d < pr.H; ++d) {
              const std::int64_t o = out_index(pr, token_of(pr, cu, keep, s), n, d);
              ASSERT_EQ(base.out.get(o), other.out.get(o)) << pr.str() << " sequence " << keep;
            }
      }
    }
}

// SPEC 9 item 39: bit-identical outputs from two runs (threads and schedule do not matter), and the
// output does not depend on what the buffer held before.
TEST(CpuReference, DeterministicAndIndependentOfPriorOutputContents) {
  std::mt19937_64 rng(test::fresh_seed());
  for (DType dtype : {DType::fp32, DType::fp16, DType::bf16}) {
    Problem pr;
    pr.dtype = dtype, pr.mask = MaskMode::varlen;
    pr.N = 3, pr.H = 32, pr.S = 200, pr.B = 3;
    pr.lens = {200, 77, 0};
    Buffers buf = make_buffers(pr, rng());
    run_cpu(pr, buf);
    const auto first = buf.out.bytes;
    run_cpu(pr, buf);
    EXPECT_EQ(first, buf.out.bytes) << pr.str();
    const Plan plan = make_plan(desc_of(pr), {Backend::cpu});
    alignas(16) std::uint8_t ws[kStatsBytes];
    buf.out.fill_byte(0x00);
    plan.run(args_of(pr, buf), {ws, sizeof(ws)});
    // Rows after cu_seqlens[B] (none here) aside, every byte comes from the run.
    EXPECT_EQ(first, buf.out.bytes) << pr.str();
  }
}

// LESSONS 3: zero-length sequences anywhere, more sequences than tokens, max_seqlen = 1.
TEST(CpuReference, VarlenEdgeCases) {
  std::mt19937_64 rng(test::fresh_seed());
  const std::vector<std::vector<std::int32_t>> cases = {{0, 0, 0}, {1, 0, 1, 0, 0}, {0, 1}, {1}};
  for (const auto& lens : cases) {
    Problem pr;
    pr.mask = MaskMode::varlen;
    pr.N = 2, pr.H = 8, pr.S = 1, pr.B = int(lens.size());
    pr.lens = lens;
    pr.extra_rows = 2;
    Buffers buf = make_buffers(pr, rng());
    run_cpu(pr, buf);
    expect_matches_naive(pr, buf.out, naive_context(pr, buf.qkv));
  }
}

// The counters belong to INT8; a float run leaves them zero even on a workspace full of garbage.
TEST(CpuReference, FloatRunZeroesTheStatsBlock) {
  Problem pr;
  Buffers buf = make_buffers(pr, test::fresh_seed());
  const Plan plan = make_plan(desc_of(pr), {Backend::cpu});
  alignas(16) std::uint8_t ws[kStatsBytes];
  std::memset(ws, 0x5A, sizeof(ws));
  plan.run(args_of(pr, buf), {ws, sizeof(ws)});
  const RunStats s = plan.read_stats({ws, sizeof(ws)});
  EXPECT_EQ(s.fixed_bound_underflow_rows, 0);
  EXPECT_EQ(s.fixed_bound_overflow_rows, 0);
  EXPECT_EQ(s.repaired_rows, 0);
}
