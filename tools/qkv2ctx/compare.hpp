// Output analysis shared by `run` and `check`: checksums, float and INT8 comparisons, tolerances.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "problem.hpp"

namespace qkv2ctx::cli {

struct Checksum {
  double sum = 0;          // sum of the output elements as double (INT8: the integer values)
  std::uint64_t fnv = 0;   // FNV-1a 64 of the output bytes
};
Checksum checksum(const std::vector<std::uint8_t>& bytes, DType dtype);

// Output values in a layout-independent order [token row][head][dim], as double. INT8 values are
// dequantized with ctx_scale when `dequantize` is set, else kept as integers.
std::vector<double> output_values(const Problem& p, const std::vector<std::uint8_t>& out, bool dequantize);

// Largest |x| of the inputs (as real values): every output is a convex combination of V rows, so
// this bounds |out| and is the scale the float tolerances are relative to.
double input_abs_max(const Problem& p);

struct FloatDiff {
  std::int64_t count = 0;
  std::int64_t non_finite = 0;  // NaN / inf in either operand
  double max_abs = 0;
  double max_rel = 0;           // over elements with |ref| >= 1% of max|ref| (the rest: max_abs)
  double cosine = 1;
};
FloatDiff compare_float(const std::vector<double>& got, const std::vector<double>& ref);

struct Int8Diff {
  std::int64_t count = 0;
  std::array<std::int64_t, 4> histogram{};  // |diff| = 0, 1, 2, > 2 (in LSB)
  int max_lsb = 0;
  double rate_over_1() const;               // fraction with |diff| > 1 LSB
  double rate_equal_1() const;              // fraction with |diff| == 1 LSB
};
Int8Diff compare_int8(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& ref);

// Tolerances (see docs/cli.md for the derivation). Float: max |got - ref| <= tol * max|input|.
double float_tolerance(DType dtype);
// INT8: no element more than 2 LSB off and at most 0.1 % more than 1 LSB off.
inline constexpr double kInt8MaxRateOver1Lsb = 1e-3;
inline constexpr int kInt8MaxLsb = 2;
bool int8_within_tolerance(const Int8Diff& d);

std::string format_stats(const RunStats& s);  // "underflow 0, overflow 0, repaired 0"

}  // namespace qkv2ctx::cli
