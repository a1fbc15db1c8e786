// Benchmark shapes (bench/shapes.csv) and the work each one does: the counts the roofline uses.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "problem.hpp"

namespace qkv2ctx::cli {

struct BenchShape {
  std::string name;
  DType dtype = DType::fp16;
  int heads = 0, head_size = 0, seqlen = 0, batch = 0;
  MaskMode mask = MaskMode::none;
};

// Columns name,dtype,heads,head_size,seqlen,batch,mask; '#' starts a comment; blank lines skipped.
// Errors name the file, the line and the field.
std::vector<BenchShape> read_shapes_csv(const std::string& path);

struct BenchConfig {
  std::uint64_t seed = 1234;
  Layout layout = Layout::trt;
  double int8_qkv_amax = 4.0;  // qkv_scale = ctx_scale = amax / 127
};

// The problem of a shape: lengths from SplitMix64(seed ^ fnv1a64(name)) (lengths mode in [S/2, S],
// varlen in [S/4, S]; bench/torch_baselines.py draws the same ones), inputs random (left empty
// without `with_inputs`).
Problem make_bench_problem(const BenchShape& shape, const BenchConfig& config, BoundMode bound,
                           bool with_inputs = true);

// "name tokens=T lengths=l0,l1,..." (or lengths=none): `bench --list`, and the same line as
// `bench/torch_baselines.py --list` prints, so the two can be compared.
std::string list_line(const Problem& p, const std::string& name);

// What one run of a shape must do, at least.
struct Work {
  double flops_padded = 0;  // 4 * B * N * S^2 * D (two GEMMs over the padded square)
  double flops_true = 0;    // 4 * N * D * sum_b len_b^2 (valid queries x valid keys)
  double exps = 0;          // N * sum_b len_b^2
  double bytes = 0;         // compulsory traffic: the QKV tensor read once + the context written once
};
Work work_of(const Problem& p);

}  // namespace qkv2ctx::cli
