// CPU reference for INT8: SPEC 5.0 steps 1-8 emulated exactly in FP32, with the constants of
// derive_int8_scales() and the rounding helpers of qkv2ctx/detail/int8_math.hpp (the ones the GPU
// kernels use). Every FP32 operation is its own statement, in the kernels' order, so the result does
// not depend on the compiler's contraction or reassociation choices (no fast-math here).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/indexing.hpp"
#include "cpu/reference.hpp"
#include "qkv2ctx/detail/int8_math.hpp"

namespace qkv2ctx::cpu {
namespace {

// Step 2: x = float(acc1) * scale_bmm1. |acc1| <= 256 * 128^2 = 2^22, so the conversion is exact.
float logit(std::int32_t acc1, float scale_bmm1) {
  const float acc = static_cast<float>(acc1);
  return acc * scale_bmm1;
}

float row_maximum(const std::int32_t* acc1, int keys, float scale_bmm1) {
  float m = logit(acc1[0], scale_bmm1);
  for (int j = 1; j < keys; ++j) m = std::max(m, logit(acc1[j], scale_bmm1));
  return m;
}

// Steps 4-5 (first half): e_j = __expf(x_j - shift) with flush-to-zero, summed in key order.
float exponentials(const std::int32_t* acc1, int keys, float scale_bmm1, float shift, float* exps) {
  float sum = 0.0f;
  for (int j = 0; j < keys; ++j) {
    const float x = logit(acc1[j], scale_bmm1);
    const float shifted = x - shift;
    exps[j] = int8_math::fast_exp_ftz_host(shifted);
    sum += exps[j];
  }
  return sum;
}

}  // namespace

void Int8RowCounters::count(FixedBoundOutcome outcome, BoundMode bound) {
  if (outcome == FixedBoundOutcome::ok || bound == BoundMode::row_max) return;
  if (outcome == FixedBoundOutcome::underflow) ++underflow;
  else ++overflow;
  if (bound == BoundMode::guarded) ++repaired;
}

Int8RowCounters& Int8RowCounters::operator+=(const Int8RowCounters& o) {
  underflow += o.underflow;
  overflow += o.overflow;
  repaired += o.repaired;
  return *this;
}

Int8RowResult int8_softmax_row(const std::int32_t* acc1, int keys, const Int8Derived& k, BoundMode bound,
                               ProbsMode probs_mode, float* exps, std::int32_t* probs) {
  FixedBoundOutcome outcome = FixedBoundOutcome::ok;
  float sum;
  if (bound == BoundMode::row_max) {
    sum = exponentials(acc1, keys, k.scale_bmm1, row_maximum(acc1, keys, k.scale_bmm1), exps);
  } else {
    sum = exponentials(acc1, keys, k.scale_bmm1, k.fixed_bound, exps);
    if (int8_math::guarded_row_needs_repair(sum)) {
      const bool overflowed = std::isnan(sum) || sum == std::numeric_limits<float>::infinity();
      outcome = overflowed ? FixedBoundOutcome::overflow : FixedBoundOutcome::underflow;
      if (bound == BoundMode::guarded)
        sum = exponentials(acc1, keys, k.scale_bmm1, row_maximum(acc1, keys, k.scale_bmm1), exps);
    }
  }
  // Step 5: inv = (sum == 0 || NaN) ? 1 : 1/sum; p = e * inv.  Step 6: Pi8 = sat8(RNE(p * scale_softmax)).
  const float inv = int8_math::inverse_row_sum(sum);
  if (probs_mode == ProbsMode::max_relative) {  // e in (0, 1]: quantized before normalization
    for (int j = 0; j < keys; ++j) {
      const float scaled = exps[j] * int8_math::kMaxRelativeLevels;
      probs[j] = int8_math::sat8_rne(scaled);
    }
    const float out_scale = k.max_relative_scale * inv;
    return {outcome, out_scale};
  }
  for (int j = 0; j < keys; ++j) {
    const float p = exps[j] * inv;
    const float scaled = p * k.scale_softmax;
    probs[j] = int8_math::sat8_rne(scaled);
  }
  return {outcome, k.scale_bmm2};
}

void run_int8_item(const RunParams& p, const Int8Derived& k, const WorkItem& item, Int8Scratch& s,
                   Int8RowCounters& counters) {
  const AttentionDesc& d = *p.desc;
  const int N = d.num_heads, H = d.head_size, n = item.n;
  const SeqSpan span = seq_span(d.mask, d.layout, item.b, p.batch, p.max_seqlen, p.seq_lens, p.cu_seqlens);
  const int row_end = std::min(item.row_end, span.rows);
  if (item.row_begin >= row_end) return;

  const auto* qkv = static_cast<const std::int8_t*>(p.qkv);
  auto* out = static_cast<std::int8_t*>(p.out);
  const std::int64_t T = p.num_tokens;
  auto token = [&](int s_idx) { return span.row0 + s_idx * span.row_step; };
  auto load_vec = [&](std::int64_t t, int which, std::int32_t* dst) {
    for (int c = 0; c < H; ++c) dst[c] = qkv[qkv_offset(d.layout, t, which, n, c, N, H, T)];
  };
  auto store = [&](std::int64_t t, int c, std::int32_t v) {
    out[out_offset(d.layout, t, n, c, N, H, T)] = static_cast<std::int8_t>(v);
  };

  const int keys = span.keys;
  if (keys == 0) {  // no valid key: all-zero context, never counted as a bound failure
    for (int i = item.row_begin; i < row_end; ++i)
      for (int c = 0; c < H; ++c) store(token(i), c, 0);
    return;
  }
  s.k.resize(static_cast<std::size_t>(keys) * H);
  s.v.resize(static_cast<std::size_t>(keys) * H);
  s.q.resize(H);
  s.acc1.resize(keys);
  s.exps.resize(keys);
  s.probs.resize(keys);
  s.acc2.resize(H);
  // K transposed ([dim][key]): the BMM1 accumulators of all keys build up side by side (exact int32
  // arithmetic, so the order does not matter; the loop vectorizes).
  for (int j = 0; j < keys; ++j) {
    load_vec(token(j), 1, s.q.data());
    for (int c = 0; c < H; ++c) s.k[static_cast<std::size_t>(c) * keys + j] = s.q[c];
    load_vec(token(j), 2, &s.v[static_cast<std::size_t>(j) * H]);
  }

  for (int i = item.row_begin; i < row_end; ++i) {
    const std::int64_t t = token(i);
    load_vec(t, 0, s.q.data());
    // Step 1: BMM1, exact int32 (|acc1| <= H * 128^2).
    std::fill(s.acc1.begin(), s.acc1.end(), 0);
    for (int c = 0; c < H; ++c) {
      const std::int32_t qc = s.q[c];
      const std::int32_t* kc = &s.k[static_cast<std::size_t>(c) * keys];
      for (int j = 0; j < keys; ++j) s.acc1[j] += qc * kc[j];
    }
    // Steps 2-6.
    const Int8RowResult row =
        int8_softmax_row(s.acc1.data(), keys, k, d.bound, d.probs, s.exps.data(), s.probs.data());
    counters.count(row.outcome, d.bound);
    // Step 7: BMM2, exact. The kernels accumulate in int32 (exact while keys < 2^31 / (127 * 128));
    // int64 here keeps the emulation free of overflow UB beyond that.
    std::fill(s.acc2.begin(), s.acc2.end(), 0);
    for (int j = 0; j < keys; ++j) {
      const std::int32_t pj = s.probs[j];
      if (pj == 0) continue;
      const std::int32_t* vj = &s.v[static_cast<std::size_t>(j) * H];
      for (int c = 0; c < H; ++c) s.acc2[c] += static_cast<std::int64_t>(pj) * vj[c];
    }
    // Step 8: O = sat8(RNE(float(acc2) * scale_bmm2)), exact int -> float conversion (the i2f trick
    // gives the same result whenever it is enabled, SPEC 5.0); max_relative uses its row's scale.
    for (int c = 0; c < H; ++c) {
      const float acc = static_cast<float>(s.acc2[c]);
      const float scaled = acc * row.out_scale;
      store(t, c, int8_math::sat8_rne(scaled));
    }
  }
}

}  // namespace qkv2ctx::cpu
