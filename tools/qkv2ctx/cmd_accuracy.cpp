// `qkv2ctx accuracy`: INT8 accuracy against FP32 attention by sequence length, for flat, typical and
// peaked attention rows, in both probability modes (SPEC R10; LESSONS 7-8): cosine similarity and
// max abs error, because a high cosine can hide a large worst-case error.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <memory>
#include <vector>

#include "commands.hpp"
#include "compare.hpp"
#include "problem.hpp"
#include "table.hpp"

namespace qkv2ctx::cli {
namespace {

struct AccuracyOptions {
  std::vector<int> seqlens = {128, 256, 512, 1024, 2048, 4096};
  int heads = 2;
  int head_size = 64;
  int batch = 1;
  std::uint64_t seed = 1;
  std::string backend = "auto";
  std::string reference = "cpu";
};

// Row shapes by the QKV range (uniform random int8 inputs): amax 1 keeps logits within about ±1
// (nearly uniform rows, where every p ~ 1/S), amax 3 is a calibrated BERT-like range, amax 8 makes
// a few keys dominate each row.
struct RowKind {
  const char* name;
  double qkv_amax;
};
constexpr RowKind kRowKinds[] = {{"flat", 1.0}, {"typical", 3.0}, {"peaked", 8.0}};

int run_accuracy(const AccuracyOptions& o) {
  const Backend backend = parse_backend_flag(o.backend), reference = parse_backend_flag(o.reference);
  Table table({"S", "rows", "qkv amax", "probs", "backend", "cos vs fp32", "max|err| vs fp32", "mean|err|"},
              "rlrllrrr");
  for (int S : o.seqlens) {
    for (const RowKind& kind : kRowKinds) {
      ProblemOptions po;
      po.dtype = "int8";
      po.heads = o.heads;
      po.head_size = o.head_size;
      po.seqlen = S;
      po.batch = o.batch;
      po.seed = o.seed;
      po.qkv_amax = kind.qkv_amax;
      const Problem base = make_problem(po);
      const Problem fp32 = dequantized_fp32(base);
      const Plan ref_plan = make_plan(fp32.desc, {reference});
      const std::vector<double> ref = output_values(fp32, execute(ref_plan, fp32, 1).out, true);
      for (ProbsMode probs : {ProbsMode::trt, ProbsMode::max_relative}) {
        Problem p = base;
        p.desc.probs = probs;
        const Plan plan = make_plan(p.desc, {backend});
        const std::vector<double> got = output_values(p, execute(plan, p, 1).out, true);
        const FloatDiff d = compare_float(got, ref);
        double mean = 0;
        for (std::size_t i = 0; i < got.size(); ++i) mean += std::abs(got[i] - ref[i]);
        mean /= static_cast<double>(std::max<std::size_t>(got.size(), 1));
        table.add({std::to_string(S), kind.name, fmt::format("{:g}", kind.qkv_amax), std::string(to_string(probs)),
                   std::string(to_string(plan.backend())), fmt::format("{:.6f}", d.cosine),
                   fmt::format("{:.4g}", d.max_abs), fmt::format("{:.3g}", mean)});
      }
    }
  }
  fmt::print("INT8 attention vs FP32 attention on the dequantized inputs (reference backend {}); "
             "N={} H={} B={}, uniform random int8 QKV, ctx_scale = qkv_scale, dq_probs = 1/127, bound row_max.\n"
             "Errors in real units (int8 output x ctx_scale); the outputs lie in [-amax, amax].\n\n{}",
             o.reference, o.heads, o.head_size, o.batch, table.str());
  return 0;
}

}  // namespace

Command add_accuracy_command(CLI::App& root) {
  auto o = std::make_shared<AccuracyOptions>();
  CLI::App* cmd = root.add_subcommand(
      "accuracy", "INT8 accuracy vs FP32 attention by S for flat / typical / peaked rows, probs trt and max_relative");
  cmd->add_option("--seqlens", o->seqlens, "sequence lengths")->delimiter(',')->capture_default_str();
  cmd->add_option("--heads", o->heads, "heads N")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--head-size", o->head_size, "head size H")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--batch", o->batch, "sequences B")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of the random inputs")->capture_default_str();
  cmd->add_option("--backend", o->backend, "backend of the INT8 runs: " + backend_names())->capture_default_str();
  cmd->add_option("--reference", o->reference, "backend of the FP32 reference: " + backend_names())
      ->capture_default_str();
  return {cmd, [o] { return run_accuracy(*o); }};
}

}  // namespace qkv2ctx::cli
