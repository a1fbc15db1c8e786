#include "save.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "util/npy.hpp"

namespace qkv2ctx::cli {
namespace {

// JSON number that reads back to the same FP32 value.
std::string json_float(float v) { return fmt::format("{:.9g}", v); }

std::string json_shape(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::string npy_descr(DType dtype) {
  switch (dtype) {
    case DType::fp32: return "<f4";
    case DType::fp16: return "<f2";
    case DType::bf16: return "<u2";  // numpy has no bfloat16: the raw bits, problem.json says so
    case DType::int8: return "|i1";
    case DType::int32: return "<i4";
  }
  return "?";
}

void save_run(const std::string& dir, const Problem& p, const Plan& plan, const RunResult& result) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw Error(ErrorCode::io_error, "--save " + dir + ": cannot create the directory (" + ec.message() + ")");
  const AttentionDesc& d = p.desc;
  const std::string descr = npy_descr(d.dtype);
  util::write_npy(dir + "/qkv.npy", descr, p.qkv_shape(), p.qkv.data(), p.qkv.size());
  util::write_npy(dir + "/out.npy", descr, p.out_shape(), result.out.data(), result.out.size());
  // Only the lengths file of this mask mode: a stale one from an earlier run would mislead.
  for (const char* name : {"seq_lens.npy", "cu_seqlens.npy"}) fs::remove(dir + "/" + name, ec);
  if (d.mask == MaskMode::lengths)
    util::write_npy(dir + "/seq_lens.npy", "<i4", {static_cast<std::int64_t>(p.seq_lens.size())},
                    p.seq_lens.data(), p.seq_lens.size() * sizeof(std::int32_t));
  if (d.mask == MaskMode::varlen)
    util::write_npy(dir + "/cu_seqlens.npy", "<i4", {static_cast<std::int64_t>(p.cu_seqlens.size())},
                    p.cu_seqlens.data(), p.cu_seqlens.size() * sizeof(std::int32_t));

  std::string j = "{\n";
  auto field = [&j](const std::string& key, const std::string& value) {
    j += fmt::format("  \"{}\": {},\n", key, value);
  };
  auto str = [](std::string_view s) { return fmt::format("\"{}\"", s); };
  field("format", str("qkv2ctx-run-1"));
  field("dtype", str(to_string(d.dtype)));
  field("npy_dtype", str(d.dtype == DType::bf16 ? "uint16 holding bfloat16 bit patterns" : descr));
  field("heads", std::to_string(d.num_heads));
  field("head_size", std::to_string(d.head_size));
  field("scale_head_size", std::to_string(d.effective_scale_head_size()));
  field("layout", str(to_string(d.layout)));
  field("mask", str(to_string(d.mask)));
  field("bound", str(to_string(d.bound)));
  field("probs", str(to_string(d.probs)));
  field("batch", std::to_string(p.batch));
  field(d.mask == MaskMode::varlen ? "max_seqlen" : "seqlen", std::to_string(p.seqlen));
  field("num_tokens", std::to_string(p.num_tokens));
  if (d.mask != MaskMode::none) field("min_len", std::to_string(p.min_len));
  field("qkv_shape", json_shape(p.qkv_shape()));
  field("out_shape", json_shape(p.out_shape()));
  if (d.dtype == DType::int8) {
    const Int8Derived k = derive_int8_scales(d.int8, d.effective_scale_head_size());
    field("qkv_amax", fmt::format("{:.9g}", p.qkv_amax));
    field("qkv_scale", json_float(d.int8.qkv_scale));
    field("ctx_scale", json_float(d.int8.ctx_scale));
    field("dq_probs", json_float(d.int8.dq_probs));
    field("scale_bmm1", json_float(k.scale_bmm1));
    field("scale_softmax", json_float(k.scale_softmax));
    field("scale_bmm2", json_float(k.scale_bmm2));
    field("fixed_bound", json_float(k.fixed_bound));
    field("max_relative_scale", json_float(k.max_relative_scale));
    field("stats", fmt::format("{{\"fixed_bound_underflow_rows\": {}, \"fixed_bound_overflow_rows\": {}, "
                               "\"repaired_rows\": {}}}",
                               result.stats.fixed_bound_underflow_rows, result.stats.fixed_bound_overflow_rows,
                               result.stats.repaired_rows));
  }
  field("backend", str(to_string(plan.backend())));
  field("seed", std::to_string(p.seed));
  j += fmt::format("  \"out_fnv1a64\": \"{:016x}\"\n}}\n", fnv1a64(result.out.data(), result.out.size()));

  std::ofstream f(dir + "/problem.json");
  if (!f || !(f << j)) throw Error(ErrorCode::io_error, "--save " + dir + ": cannot write problem.json");
}

}  // namespace qkv2ctx::cli
