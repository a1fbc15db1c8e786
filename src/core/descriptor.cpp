// The one place that validates an AttentionDesc. Every message names the field, the value and what
// is allowed.
#include <sstream>
#include <string>

#include "qkv2ctx/descriptor.hpp"
#include "qkv2ctx/error.hpp"
#include "qkv2ctx/int8.hpp"

namespace qkv2ctx {
namespace {
[[noreturn]] void reject(const std::string& field, const std::string& value,
                         const std::string& allowed) {
  throw Error(ErrorCode::invalid_argument,
              "AttentionDesc." + field + " = " + value + " is not allowed: " + allowed);
}
}  // namespace

// Limits keep every size computation inside 64-bit arithmetic with a wide margin.
inline constexpr int kMaxHeads = 4096;
inline constexpr int kMaxHeadSize = 256;

void validate(const AttentionDesc& d) {
  switch (d.dtype) {
    case DType::fp32: case DType::fp16: case DType::bf16: case DType::int8: break;
    default: reject("dtype", std::string(to_string(d.dtype)), "one of fp32, fp16, bf16, int8");
  }
  if (d.num_heads < 1 || d.num_heads > kMaxHeads)
    reject("num_heads", std::to_string(d.num_heads), "1 to 4096");
  if (d.head_size < 1 || d.head_size > kMaxHeadSize)
    reject("head_size", std::to_string(d.head_size), "1 to 256");
  switch (d.layout) {
    case Layout::trt: case Layout::hf: break;
    case Layout::chw32:
      if (d.dtype != DType::int8)
        reject("layout", "chw32", "chw32 (TensorRT plugin v3) requires dtype int8, got " +
                                      std::string(to_string(d.dtype)));
      if (d.mask != MaskMode::varlen)
        reject("layout", "chw32", "chw32 (TensorRT plugin v3) requires mask varlen, got " +
                                      std::string(to_string(d.mask)));
      if (d.hidden_size() % 32 != 0)
        reject("layout", "chw32", "chw32 requires num_heads * head_size to be a multiple of 32, got " +
                                      std::to_string(d.hidden_size()));
      break;
    default: reject("layout", std::to_string(static_cast<int>(d.layout)), "trt, hf or chw32");
  }
  switch (d.mask) {
    case MaskMode::none: case MaskMode::lengths: case MaskMode::varlen: break;
    default: reject("mask", std::to_string(static_cast<int>(d.mask)), "none, lengths or varlen");
  }
  switch (d.bound) {
    case BoundMode::row_max: break;
    case BoundMode::fixed_bound: case BoundMode::guarded:
      if (d.dtype != DType::int8)
        reject("bound", std::string(to_string(d.bound)),
               "fixed_bound and guarded are INT8 softmax modes; dtype " +
                   std::string(to_string(d.dtype)) + " takes row_max");
      break;
    default: reject("bound", std::to_string(static_cast<int>(d.bound)),
                    "row_max, fixed_bound or guarded");
  }
  switch (d.probs) {
    case ProbsMode::trt: break;
    case ProbsMode::max_relative:
      if (d.dtype != DType::int8)
        reject("probs", "max_relative", "an INT8 probability mode; dtype " +
                                            std::string(to_string(d.dtype)) + " takes trt");
      if (d.bound != BoundMode::row_max)
        reject("probs", "max_relative",
               "probabilities relative to the row maximum need bound row_max, got " +
                   std::string(to_string(d.bound)));
      break;
    default: reject("probs", std::to_string(static_cast<int>(d.probs)), "trt or max_relative");
  }
  if (d.scale_head_size < 0 || d.scale_head_size > 4 * kMaxHeadSize)
    reject("scale_head_size", std::to_string(d.scale_head_size),
           "0 (use head_size) or 1 to 1024");
  if (d.dtype == DType::int8) (void)derive_int8_scales(d.int8, d.effective_scale_head_size());
}

std::string describe(const AttentionDesc& d) {
  std::ostringstream os;
  os << to_string(d.dtype) << " N=" << d.num_heads << " H=" << d.head_size
     << " layout=" << to_string(d.layout) << " mask=" << to_string(d.mask);
  if (d.scale_head_size > 0) os << " scale=1/sqrt(" << d.scale_head_size << ")";
  if (d.dtype == DType::int8)
    os << " bound=" << to_string(d.bound) << (d.probs == ProbsMode::trt ? "" : " probs=max_relative")
       << " qkv_scale=" << d.int8.qkv_scale
       << " ctx_scale=" << d.int8.ctx_scale << " dq_probs=" << d.int8.dq_probs;
  return os.str();
}

}  // namespace qkv2ctx
