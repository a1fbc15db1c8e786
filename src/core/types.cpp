#include "qkv2ctx/error.hpp"
#include "qkv2ctx/plan.hpp"
#include "qkv2ctx/types.hpp"

namespace qkv2ctx {
namespace {
template <class E, std::size_t N>
std::optional<E> parse_from(std::string_view s, const std::pair<std::string_view, E> (&table)[N]) {
  for (const auto& [name, value] : table)
    if (name == s) return value;
  return std::nullopt;
}
template <class E, std::size_t N>
std::string_view name_of(E v, const std::pair<std::string_view, E> (&table)[N]) {
  for (const auto& [name, value] : table)
    if (value == v) return name;
  return "?";
}
constexpr std::pair<std::string_view, DType> kDTypes[] = {
    {"fp32", DType::fp32}, {"fp16", DType::fp16}, {"bf16", DType::bf16},
    {"int8", DType::int8}, {"int32", DType::int32}};
constexpr std::pair<std::string_view, Layout> kLayouts[] = {
    {"trt", Layout::trt}, {"hf", Layout::hf}, {"chw32", Layout::chw32}};
constexpr std::pair<std::string_view, MaskMode> kMasks[] = {
    {"none", MaskMode::none}, {"lengths", MaskMode::lengths}, {"varlen", MaskMode::varlen}};
constexpr std::pair<std::string_view, BoundMode> kBounds[] = {
    {"row_max", BoundMode::row_max}, {"fixed_bound", BoundMode::fixed_bound},
    {"guarded", BoundMode::guarded}};
constexpr std::pair<std::string_view, ProbsMode> kProbs[] = {
    {"trt", ProbsMode::trt}, {"max_relative", ProbsMode::max_relative}};
constexpr std::pair<std::string_view, MemSpace> kSpaces[] = {
    {"host", MemSpace::host}, {"cuda", MemSpace::cuda}};
constexpr std::pair<std::string_view, Backend> kBackends[] = {
    {"auto", Backend::automatic}, {"cpu", Backend::cpu},
    {"cuda-unfused", Backend::cuda_unfused}, {"cuda-fused", Backend::cuda_fused}};
constexpr std::pair<std::string_view, ErrorCode> kErrors[] = {
    {"invalid_argument", ErrorCode::invalid_argument}, {"unsupported", ErrorCode::unsupported},
    {"cuda_error", ErrorCode::cuda_error}, {"io_error", ErrorCode::io_error},
    {"internal", ErrorCode::internal}};
}  // namespace

std::string_view to_string(DType v) { return name_of(v, kDTypes); }
std::string_view to_string(Layout v) { return name_of(v, kLayouts); }
std::string_view to_string(MaskMode v) { return name_of(v, kMasks); }
std::string_view to_string(BoundMode v) { return name_of(v, kBounds); }
std::string_view to_string(MemSpace v) { return name_of(v, kSpaces); }
std::string_view to_string(ProbsMode v) { return name_of(v, kProbs); }
std::string_view to_string(Backend v) { return name_of(v, kBackends); }
std::string_view to_string(ErrorCode v) { return name_of(v, kErrors); }

std::optional<DType> parse_dtype(std::string_view s) { return parse_from(s, kDTypes); }
std::optional<Layout> parse_layout(std::string_view s) { return parse_from(s, kLayouts); }
std::optional<MaskMode> parse_mask_mode(std::string_view s) { return parse_from(s, kMasks); }
std::optional<BoundMode> parse_bound_mode(std::string_view s) { return parse_from(s, kBounds); }
std::optional<ProbsMode> parse_probs_mode(std::string_view s) { return parse_from(s, kProbs); }
std::optional<Backend> parse_backend(std::string_view s) { return parse_from(s, kBackends); }

std::size_t element_size(DType v) {
  switch (v) {
    case DType::fp32: case DType::int32: return 4;
    case DType::fp16: case DType::bf16: return 2;
    case DType::int8: return 1;
  }
  return 0;
}

}  // namespace qkv2ctx
