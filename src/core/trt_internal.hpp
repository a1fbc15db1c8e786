// Helpers shared by the TensorRT compatibility sources (trt_fields.cpp, trt_serialize.cpp,
// trt_plugin.cpp, trt_mask.cpp): error messages, value checks, little-endian byte access.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qkv2ctx/error.hpp"
#include "qkv2ctx/trt_plugin.hpp"

namespace qkv2ctx::trt::detail {

// "CustomQKVToContextPluginDynamic v2"
std::string plugin_prefix(int version);

// Throws Error(invalid_argument): "<prefix>: <what> = <value> is not allowed: <allowed>".
[[noreturn]] void reject(int version, std::string_view what, std::string_view value,
                         std::string_view allowed);
// Throws Error(invalid_argument): "<prefix>: <message>".
[[noreturn]] void fail(int version, std::string_view message);

// Shortest round-trip text of a float ("0.007874016", "-1", "nan", "inf").
std::string format_float(float v);

// Throws for versions outside 1..6.
void check_version(int version);

// Value rules shared by fields, blobs and validate_state; `what` names the source ("field
// 'type_id'", "type_id (bytes 0-3)", "type_id").
void check_type_id(int version, std::string_view what, std::int32_t v);
void check_positive(int version, std::string_view what, std::int32_t v);
void check_non_negative(int version, std::string_view what, std::int32_t v);
void check_flag(int version, std::string_view what, std::int32_t v);  // 0 or 1
void check_sm(int version, std::string_view what, std::int32_t v);
// finite and > 0; `meaning` is appended to the allowed text.
void check_scale(int version, std::string_view what, float v, std::string_view meaning);
// dq_probs: finite and > 0, or exactly -1 (unused) when `type_id` is not INT8.
void check_dq_probs(int version, std::string_view what, float v, int type_id);

inline constexpr std::string_view kDqProbsMeaning =
    "probability dequantization scale amax_probs / 127, default 1/127";

// Little-endian packed writer / bounds-checked reader (TensorRT serialize.hpp layout).
class ByteWriter {
 public:
  void i32(std::int32_t v) {
    const auto u = static_cast<std::uint32_t>(v);
    for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<std::uint8_t>(u >> (8 * i)));
  }
  void f32(float v) { i32(std::bit_cast<std::int32_t>(v)); }
  void boolean(bool v) { bytes_.push_back(v ? 1 : 0); }
  void zeros(std::size_t n) { bytes_.insert(bytes_.end(), n, 0); }
  std::vector<std::uint8_t> take() { return std::move(bytes_); }
  std::size_t size() const { return bytes_.size(); }

 private:
  std::vector<std::uint8_t> bytes_;
};

class ByteReader {
 public:
  ByteReader(int version, std::span<const std::uint8_t> bytes, std::string_view source)
      : version_(version), bytes_(bytes), source_(source) {}
  std::size_t offset() const { return offset_; }
  std::int32_t i32(std::string_view field) {
    need(4, field);
    std::uint32_t u = 0;
    for (int i = 0; i < 4; ++i) u |= static_cast<std::uint32_t>(bytes_[offset_ + i]) << (8 * i);
    offset_ += 4;
    return static_cast<std::int32_t>(u);
  }
  float f32(std::string_view field) { return std::bit_cast<float>(i32(field)); }
  // A C++ bool byte: anything but 0 or 1 is corrupt (reading it as bool would be undefined).
  bool boolean(std::string_view field);
  void skip(std::size_t n, std::string_view field) {
    need(n, field);
    offset_ += n;
  }
  // "type_id (bytes 0-3)" for the field just read, `width` bytes wide.
  std::string where(std::string_view field, std::size_t width) const;

 private:
  void need(std::size_t n, std::string_view field) const;
  int version_;
  std::span<const std::uint8_t> bytes_;
  std::string_view source_;
  std::size_t offset_ = 0;
};

// Runner-state encodings shared by the v1/v2 blobs and the v4/v5 runnerStateBuffer field.
inline constexpr std::size_t kUnfusedRunnerBytes = 20;
inline constexpr std::size_t kFusedRunnerBytes = 12;
void write_runner(ByteWriter& w, const RunnerState& r);  // kind must be unfused or fused
RunnerState read_runner(ByteReader& r, RunnerKind kind);
// Runner S, B >= 0; unfused head_size == H; fused head_size == H or a padded size 32/64 >= H.
void check_runner(int version, const RunnerState& r, int head_size, std::string_view where);

}  // namespace qkv2ctx::trt::detail
