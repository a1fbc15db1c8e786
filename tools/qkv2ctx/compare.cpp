#include "compare.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "core/indexing.hpp"
#include "util/half.hpp"

namespace qkv2ctx::cli {
namespace {

double element(const std::uint8_t* base, std::int64_t i, DType dtype) {
  switch (dtype) {
    case DType::fp32: {
      float f;
      std::memcpy(&f, base + 4 * i, 4);
      return f;
    }
    case DType::fp16:
    case DType::bf16: {
      std::uint16_t h;
      std::memcpy(&h, base + 2 * i, 2);
      return dtype == DType::fp16 ? util::half_to_float(h) : util::bf16_to_float(h);
    }
    case DType::int8: return static_cast<std::int8_t>(base[i]);
    default: return 0;
  }
}

}  // namespace

Checksum checksum(const std::vector<std::uint8_t>& bytes, DType dtype) {
  Checksum c;
  const std::int64_t n = static_cast<std::int64_t>(bytes.size() / element_size(dtype));
  for (std::int64_t i = 0; i < n; ++i) c.sum += element(bytes.data(), i, dtype);
  c.fnv = fnv1a64(bytes.data(), bytes.size());
  return c;
}

std::vector<double> output_values(const Problem& p, const std::vector<std::uint8_t>& out, bool dequantize) {
  const int N = p.desc.num_heads, H = p.desc.head_size;
  const double scale = (p.desc.dtype == DType::int8 && dequantize) ? p.desc.int8.ctx_scale : 1.0;
  std::vector<double> v(static_cast<std::size_t>(p.out_elements()));
  std::size_t k = 0;
  for (std::int64_t t = 0; t < p.num_tokens; ++t)
    for (int n = 0; n < N; ++n)
      for (int d = 0; d < H; ++d)
        v[k++] = scale * element(out.data(), out_offset(p.desc.layout, t, n, d, N, H, p.num_tokens), p.desc.dtype);
  return v;
}

double input_abs_max(const Problem& p) {
  double m = 0;
  for (std::int64_t i = 0; i < p.qkv_elements(); ++i) m = std::max(m, std::fabs(element(p.qkv.data(), i, p.desc.dtype)));
  return p.desc.dtype == DType::int8 ? m * p.desc.int8.qkv_scale : m;
}

FloatDiff compare_float(const std::vector<double>& got, const std::vector<double>& ref) {
  FloatDiff d;
  d.count = static_cast<std::int64_t>(std::min(got.size(), ref.size()));
  double ref_max = 0;
  for (double r : ref)
    if (std::isfinite(r)) ref_max = std::max(ref_max, std::fabs(r));
  const double rel_floor = 0.01 * ref_max;
  double dot = 0, gg = 0, rr = 0;
  for (std::int64_t i = 0; i < d.count; ++i) {
    const double a = got[i], b = ref[i];
    if (!std::isfinite(a) || !std::isfinite(b)) {
      ++d.non_finite;
      continue;
    }
    const double e = std::fabs(a - b);
    d.max_abs = std::max(d.max_abs, e);
    if (std::fabs(b) >= rel_floor && b != 0) d.max_rel = std::max(d.max_rel, e / std::fabs(b));
    dot += a * b;
    gg += a * a;
    rr += b * b;
  }
  if (d.non_finite > 0) d.cosine = std::nan("");
  else if (gg == 0 && rr == 0) d.cosine = 1;
  else if (gg == 0 || rr == 0) d.cosine = 0;
  else d.cosine = dot / std::sqrt(gg * rr);
  return d;
}

double Int8Diff::rate_over_1() const {
  return count ? static_cast<double>(histogram[2] + histogram[3]) / count : 0;
}
double Int8Diff::rate_equal_1() const { return count ? static_cast<double>(histogram[1]) / count : 0; }

Int8Diff compare_int8(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& ref) {
  Int8Diff d;
  d.count = static_cast<std::int64_t>(std::min(got.size(), ref.size()));
  for (std::int64_t i = 0; i < d.count; ++i) {
    const int diff = std::abs(static_cast<std::int8_t>(got[i]) - static_cast<std::int8_t>(ref[i]));
    d.max_lsb = std::max(d.max_lsb, diff);
    ++d.histogram[std::min(diff, 3)];
  }
  return d;
}

double float_tolerance(DType dtype) {
  // Relative to max|input| (which bounds |out|). Derivation in docs/cli.md ("Tolerances"):
  //  fp32: FP32 accumulation and exp: 1e-5.
  //  fp16: probabilities rounded to fp16 before P.V (2^-11 of |out| at most) + the two compared
  //        outputs each rounded to fp16 (2^-12 each) = 9.8e-4; x2 margin.
  //  bf16: the same with 8 significand bits: 2^-8 + 2 * 2^-9 = 7.8e-3; x2 margin.
  switch (dtype) {
    case DType::fp32: return 1e-5;
    case DType::fp16: return 2e-3;
    case DType::bf16: return 1.6e-2;
    default: return 0;
  }
}

bool int8_within_tolerance(const Int8Diff& d) {
  return d.max_lsb <= kInt8MaxLsb && d.rate_over_1() <= kInt8MaxRateOver1Lsb;
}

std::string format_stats(const RunStats& s) {
  return fmt::format("underflow {}, overflow {}, repaired {}", s.fixed_bound_underflow_rows,
                     s.fixed_bound_overflow_rows, s.repaired_rows);
}

}  // namespace qkv2ctx::cli
