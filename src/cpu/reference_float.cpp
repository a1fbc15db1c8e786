// CPU reference for fp32 / fp16 / bf16 (SPEC 4.1): inputs widened exactly to double, logits, softmax
// and context in double, one RNE rounding to the output dtype.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/indexing.hpp"
#include "cpu/reference.hpp"
#include "util/half.hpp"

namespace qkv2ctx::cpu {
namespace {

// RNE of x to a binary format with `fraction_bits` stored mantissa bits, smallest normal exponent
// `min_exponent` (subnormals below it) and largest finite value `max_finite`. The quotient
// |x| / quantum is exact (power-of-two scaling that stays normal in double), so nearbyint (default
// rounding mode: ties to even) is the only rounding; the result is exactly representable in the
// target format (and in float).
double round_to_format(double x, int fraction_bits, int min_exponent, double max_finite) {
  if (!std::isfinite(x) || x == 0.0) return x;
  const double ax = std::fabs(x);
  int e = 0;
  std::frexp(ax, &e);  // ax in [2^(e-1), 2^e)
  const int exponent = std::max(e - 1, min_exponent);
  const double quantum = std::ldexp(1.0, exponent - fraction_bits);
  double r = std::nearbyint(ax / quantum) * quantum;
  if (r > max_finite) r = std::numeric_limits<double>::infinity();
  return std::copysign(r, x);
}

struct Fp32Elem {
  using Storage = float;
  static double load(Storage x) { return x; }
  static Storage store(double v) { return static_cast<float>(v); }  // IEEE conversion: RNE
};
struct Fp16Elem {
  using Storage = std::uint16_t;
  static double load(Storage x) { return util::half_to_float(x); }
  static Storage store(double v) { return double_to_half_rne(v); }
};
struct Bf16Elem {
  using Storage = std::uint16_t;
  static double load(Storage x) { return util::bf16_to_float(x); }
  static Storage store(double v) { return double_to_bf16_rne(v); }
};

template <class Elem>
void run_item(const RunParams& p, const WorkItem& item, FloatScratch& s) {
  using Storage = typename Elem::Storage;
  const AttentionDesc& d = *p.desc;
  const int N = d.num_heads, H = d.head_size, n = item.n;
  const SeqSpan span = seq_span(d.mask, d.layout, item.b, p.batch, p.max_seqlen, p.seq_lens, p.cu_seqlens);
  const int row_end = std::min(item.row_end, span.rows);
  if (item.row_begin >= row_end) return;

  const auto* qkv = static_cast<const Storage*>(p.qkv);
  auto* out = static_cast<Storage*>(p.out);
  const std::int64_t T = p.num_tokens;
  auto token = [&](int s_idx) { return span.row0 + s_idx * span.row_step; };
  auto load_vec = [&](std::int64_t t, int which, double* dst) {
    for (int c = 0; c < H; ++c) dst[c] = Elem::load(qkv[qkv_offset(d.layout, t, which, n, c, N, H, T)]);
  };
  auto store_row = [&](std::int64_t t, const double* ctx) {
    for (int c = 0; c < H; ++c) out[out_offset(d.layout, t, n, c, N, H, T)] = Elem::store(ctx[c]);
  };

  const int keys = span.keys;
  s.ctx.assign(H, 0.0);
  if (keys == 0) {  // no valid key: all-zero context (SPEC 4.4), never NaN
    for (int i = item.row_begin; i < row_end; ++i) store_row(token(i), s.ctx.data());
    return;
  }
  // K is kept transposed ([dim][key]) so the logits of all keys accumulate side by side: each
  // key's dot product still sums its H terms in order (same result), and the loop vectorizes.
  s.k.resize(static_cast<std::size_t>(keys) * H);
  s.v.resize(static_cast<std::size_t>(keys) * H);
  s.q.resize(H);
  s.p.resize(keys);
  for (int j = 0; j < keys; ++j) {
    load_vec(token(j), 1, s.q.data());
    for (int c = 0; c < H; ++c) s.k[static_cast<std::size_t>(c) * keys + j] = s.q[c];
    load_vec(token(j), 2, &s.v[static_cast<std::size_t>(j) * H]);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.effective_scale_head_size()));

  for (int i = item.row_begin; i < row_end; ++i) {
    const std::int64_t t = token(i);
    load_vec(t, 0, s.q.data());
    std::fill(s.p.begin(), s.p.end(), 0.0);
    for (int c = 0; c < H; ++c) {
      const double qc = s.q[c];
      const double* kc = &s.k[static_cast<std::size_t>(c) * keys];
      for (int j = 0; j < keys; ++j) s.p[j] += qc * kc[j];
    }
    double row_max = -std::numeric_limits<double>::infinity();
    for (int j = 0; j < keys; ++j) {
      s.p[j] *= scale;
      row_max = std::max(row_max, s.p[j]);
    }
    double sum = 0.0;
    for (int j = 0; j < keys; ++j) {
      s.p[j] = std::exp(s.p[j] - row_max);
      sum += s.p[j];
    }
    const double inv_sum = 1.0 / sum;  // sum >= 1: the maximum contributes exp(0)
    std::fill(s.ctx.begin(), s.ctx.end(), 0.0);
    for (int j = 0; j < keys; ++j) {
      const double pj = s.p[j] * inv_sum;
      const double* vj = &s.v[static_cast<std::size_t>(j) * H];
      for (int c = 0; c < H; ++c) s.ctx[c] += pj * vj[c];
    }
    store_row(t, s.ctx.data());
  }
}

}  // namespace

std::uint16_t double_to_half_rne(double x) {
  // FP16: 10 fraction bits, smallest normal 2^-14, largest finite 65504.
  return util::float_to_half(static_cast<float>(round_to_format(x, 10, -14, 65504.0)));
}

std::uint16_t double_to_bf16_rne(double x) {
  // BF16: 7 fraction bits, float's exponent range.
  const double max_bf16 = std::ldexp(255.0, 120);  // (2 - 2^-7) * 2^127
  return util::float_to_bf16(static_cast<float>(round_to_format(x, 7, -126, max_bf16)));
}

void run_float_item(const RunParams& params, const WorkItem& item, FloatScratch& scratch) {
  switch (params.desc->dtype) {
    case DType::fp32: return run_item<Fp32Elem>(params, item, scratch);
    case DType::fp16: return run_item<Fp16Elem>(params, item, scratch);
    case DType::bf16: return run_item<Bf16Elem>(params, item, scratch);
    default: break;  // int8 has its own path; validate() rejects the rest
  }
}

}  // namespace qkv2ctx::cpu
