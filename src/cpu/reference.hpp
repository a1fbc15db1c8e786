// CPU reference (the oracle every GPU kernel is checked against): the per-work-item math.
// cpu_backend.cpp splits a run into work items and runs them on threads; the functions here compute
// one item. Addressing comes from core/indexing.hpp only.
#pragma once
#include <cstdint>
#include <vector>

#include "core/backend.hpp"
#include "qkv2ctx/int8.hpp"

namespace qkv2ctx::cpu {

// Query rows [row_begin, row_end) of head n of sequence b (rows past the sequence's end are skipped).
struct WorkItem {
  int b = 0;
  int n = 0;
  int row_begin = 0;
  int row_end = 0;
};

// ---- Floating types (fp32 / fp16 / bf16): double precision, one rounding at the end -------------

// Reusable per-thread buffers: the valid keys' K (transposed, [dim][key]) and V ([key][dim]) as
// double, one query, one row of logits / probabilities, one context row.
struct FloatScratch {
  std::vector<double> k, v, q, p, ctx;
};

// logits = (q . k) / sqrt(H_eff), softmax over the valid keys (max-shifted), context = sum p v, all
// in double, rounded once (RNE) to the output dtype. Rows with no valid key get zeros.
void run_float_item(const RunParams& params, const WorkItem& item, FloatScratch& scratch);

// Round a double once, to nearest even, to the nearest FP16 / BF16 value (overflow gives inf, NaN
// stays NaN). Rounding through float first would round twice and can be off by one ulp at ties.
std::uint16_t double_to_half_rne(double x);
std::uint16_t double_to_bf16_rne(double x);

// ---- INT8: SPEC 5.0 steps 1-8 emulated exactly in FP32 --------------------------------------------

// How the fixed bound (use_int8_scale_max) fared for one row: int8_math::guarded_row_needs_repair()
// on its exponential sum; underflow = sum below the guard threshold, overflow = sum +inf or NaN.
enum class FixedBoundOutcome : std::uint8_t { ok, underflow, overflow };

// Row counters of one thread, merged into the StatsBlock after the run.
struct Int8RowCounters {
  std::int64_t underflow = 0;
  std::int64_t overflow = 0;
  std::int64_t repaired = 0;
  void count(FixedBoundOutcome outcome, BoundMode bound);
  Int8RowCounters& operator+=(const Int8RowCounters& o);
};

// What one row's softmax decided: the fixed bound's outcome (always ok for row_max) and the scale
// of step 8 for this row (scale_bmm2 for probs=trt; max_relative_scale / row sum for max_relative).
struct Int8RowResult {
  FixedBoundOutcome outcome = FixedBoundOutcome::ok;
  float out_scale = 0;
};

// SPEC 5.0 steps 2-6 for one query row with keys >= 1 valid keys: BMM1 accumulators -> INT8
// probabilities Pi8 in [0, 127]. `exps` is scratch of `keys` floats. row_max shifts by the row
// maximum; fixed_bound by p_max (failures kept); guarded by p_max, recomputing failed rows with
// their row maximum. probs=max_relative (bound row_max): Pi8 = RNE(127 e) with e = exp(x - max),
// the row sum moves into out_scale.
Int8RowResult int8_softmax_row(const std::int32_t* acc1, int keys, const Int8Derived& k, BoundMode bound,
                               ProbsMode probs_mode, float* exps, std::int32_t* probs);

// Per-thread buffers: K transposed ([dim][key]), V ([key][dim]), one query, one row of accumulators,
// exponentials and probabilities, one BMM2 accumulator row.
struct Int8Scratch {
  std::vector<std::int32_t> k, v, q, acc1, probs;
  std::vector<std::int64_t> acc2;
  std::vector<float> exps;
};

void run_int8_item(const RunParams& params, const Int8Derived& k, const WorkItem& item,
                   Int8Scratch& scratch, Int8RowCounters& counters);

}  // namespace qkv2ctx::cpu
