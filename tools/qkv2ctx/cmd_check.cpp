// `qkv2ctx check`: one problem on two backends, same inputs; prints the differences and exits 1
// when they are over the tolerance (docs/cli.md, "Tolerances").
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>
#include <memory>
#include <tuple>

#include "commands.hpp"
#include "compare.hpp"
#include "problem.hpp"

namespace qkv2ctx::cli {
namespace {

struct CheckOptions {
  ProblemOptions problem;
  std::string backend = "auto";
  std::string against = "cpu";
  int repeat = 1;
};

int run_check(const CheckOptions& o) {
  const Problem p = make_problem(o.problem);
  const Plan plan_a = make_plan(p.desc, {parse_backend_flag(o.backend)});
  const Plan plan_b = make_plan(p.desc, {parse_backend_flag(o.against)});
  fmt::print("A: {}\nB: {}\n", plan_a.describe(), plan_b.describe());
  const RunResult a = execute(plan_a, p, o.repeat);
  const RunResult b = execute(plan_b, p, o.repeat);
  fmt::print("time: A {:.4f} ms ({}), B {:.4f} ms ({}), median of {}\n", a.median_ms, a.clock, b.median_ms,
             b.clock, o.repeat);

  const std::vector<double> va = output_values(p, a.out, true), vb = output_values(p, b.out, true);
  const FloatDiff f = compare_float(va, vb);
  fmt::print("{} outputs: max abs error {:.4g}, max rel error {:.4g} (elements >= 1% of max|B|), cosine {:.8f}{}\n",
             f.count, f.max_abs, f.max_rel, f.cosine,
             f.non_finite ? fmt::format(", {} non-finite", f.non_finite) : std::string());

  bool pass = true;
  if (p.desc.dtype == DType::int8) {
    const Int8Diff d = compare_int8(a.out, b.out);
    const double n = static_cast<double>(std::max<std::int64_t>(d.count, 1));
    fmt::print("int8 |A - B| in LSB: 0: {} ({:.4f}%), 1: {} ({:.4f}%), 2: {} ({:.4f}%), >2: {} ({:.4f}%); max {}\n",
               d.histogram[0], 100 * d.histogram[0] / n, d.histogram[1], 100 * d.histogram[1] / n, d.histogram[2],
               100 * d.histogram[2] / n, d.histogram[3], 100 * d.histogram[3] / n, d.max_lsb);
    fmt::print("int8 rows A: {}; B: {}{}\n", format_stats(a.stats), format_stats(b.stats),
               (a.stats.fixed_bound_underflow_rows != b.stats.fixed_bound_underflow_rows ||
                a.stats.fixed_bound_overflow_rows != b.stats.fixed_bound_overflow_rows ||
                a.stats.repaired_rows != b.stats.repaired_rows)
                   ? " (the counters differ)"
                   : "");
    pass = int8_within_tolerance(d);
    fmt::print("> 1 LSB: {} elements ({:.4f}%); exactly 1 LSB: {:.4f}%\n", d.histogram[2] + d.histogram[3],
               100 * d.rate_over_1(), 100 * d.rate_equal_1());
    fmt::print("tolerance: no element > {} LSB off and at most {:.1f}% > 1 LSB off: {}\n", kInt8MaxLsb,
               100 * kInt8MaxRateOver1Lsb, pass ? "PASS" : "FAIL");
  } else {
    const double scale = input_abs_max(p);
    const double tol = float_tolerance(p.desc.dtype) * scale;
    pass = f.non_finite == 0 && f.max_abs <= tol;
    fmt::print("tolerance: max abs error <= {:g} x max|input| = {:.4g}, no NaN/inf: {}\n",
               float_tolerance(p.desc.dtype), tol, pass ? "PASS" : "FAIL");
  }
  return pass ? 0 : 1;
}

}  // namespace

Command add_check_command(CLI::App& root) {
  auto o = std::make_shared<CheckOptions>();
  CLI::App* cmd = root.add_subcommand(
      "check", "run one problem on two backends with the same inputs and compare (exit 1 over tolerance)");
  add_problem_flags(*cmd, o->problem);
  for (auto [flag, var, what] : {std::tuple{"--backend", &o->backend, "backend under test"},
                                 std::tuple{"--against", &o->against, "reference backend"}})
    cmd->add_option(flag, *var, std::string(what) + ": auto | cpu | cuda-unfused | cuda-fused")
        ->check(CLI::IsMember({"auto", "cpu", "cuda-unfused", "cuda-fused"}))
        ->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "timed runs per backend; the median is printed")->capture_default_str();
  return {cmd, [o, cmd] {
            check_flag_combinations(*cmd, o->problem);
            return run_check(*o);
          }};
}

}  // namespace qkv2ctx::cli
