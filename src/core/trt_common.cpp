// Shared pieces of the TensorRT compatibility layer: identity, error messages, value rules, byte
// access and the runner-state encoding.
#include <charconv>
#include <cmath>

#include "core/trt_internal.hpp"

namespace qkv2ctx::trt {

std::string_view version_string(int version) {
  static constexpr std::string_view kStrings[] = {"1", "2", "3", "4", "5", "6"};
  detail::check_version(version);
  return kStrings[version - 1];
}

int parse_version(std::string_view version) {
  if (version.size() == 1 && version[0] >= '1' && version[0] <= '6') return version[0] - '0';
  throw Error(ErrorCode::invalid_argument,
              std::string(kPluginName) + ": plugin version \"" + std::string(version) +
                  "\" is not allowed: \"1\", \"2\" or \"3\" (IPluginV2DynamicExt) or \"4\", \"5\" "
                  "or \"6\" (IPluginV3 ports)");
}

int legacy_version(int version) {
  detail::check_version(version);
  return version > 3 ? version - 3 : version;
}

std::string to_string(PluginFieldType type) {
  static constexpr const char* kNames[] = {"kFLOAT16", "kFLOAT32", "kFLOAT64", "kINT8",    "kINT16",
                                           "kINT32",   "kCHAR",    "kDIMS",    "kUNKNOWN", "kBF16",
                                           "kINT64",   "kFP8",     "kINT4",    "kFP4"};
  const auto v = static_cast<std::int32_t>(type);
  if (v >= 0 && v < static_cast<std::int32_t>(std::size(kNames))) return kNames[v];
  return "PluginFieldType(" + std::to_string(v) + ")";
}

namespace detail {

std::string plugin_prefix(int version) {
  return std::string(kPluginName) + " v" + std::to_string(version);
}

void reject(int version, std::string_view what, std::string_view value, std::string_view allowed) {
  throw Error(ErrorCode::invalid_argument, plugin_prefix(version) + ": " + std::string(what) +
                                               " = " + std::string(value) +
                                               " is not allowed: " + std::string(allowed));
}

void fail(int version, std::string_view message) {
  throw Error(ErrorCode::invalid_argument, plugin_prefix(version) + ": " + std::string(message));
}

std::string format_float(float v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

void check_version(int version) {
  if (version < kMinVersion || version > kMaxVersion)
    throw Error(
        ErrorCode::invalid_argument,
        std::string(kPluginName) + ": version " + std::to_string(version) +
            " is not allowed: 1, 2 or 3 (IPluginV2DynamicExt) or 4, 5 or 6 (IPluginV3 ports "
            "of 1, 2, 3)");
}

void check_type_id(int version, std::string_view what, std::int32_t v) {
  if (v < 0 || v > 2) reject(version, what, std::to_string(v), "0 (FP32), 1 (FP16) or 2 (INT8)");
}

void check_positive(int version, std::string_view what, std::int32_t v) {
  if (v <= 0) reject(version, what, std::to_string(v), "> 0");
}

void check_non_negative(int version, std::string_view what, std::int32_t v) {
  if (v < 0) reject(version, what, std::to_string(v), ">= 0");
}

void check_flag(int version, std::string_view what, std::int32_t v) {
  if (v != 0 && v != 1) reject(version, what, std::to_string(v), "0 or 1");
}

// Compute capabilities are 10*major+minor; the bound only catches garbage.
void check_sm(int version, std::string_view what, std::int32_t v) {
  if (v < 1 || v > 1000)
    reject(version, what, std::to_string(v),
           "the device's compute capability 10*major+minor (e.g. 80, 90), 1 to 1000");
}

void check_scale(int version, std::string_view what, float v, std::string_view meaning) {
  if (!std::isfinite(v) || !(v > 0.0f))
    reject(version, what, format_float(v), "finite and > 0 (" + std::string(meaning) + ")");
}

void check_dq_probs(int version, std::string_view what, float v, int type_id) {
  if (type_id != 2 && v == -1.0f) return;  // not given, unused for FP32/FP16
  check_scale(version, what, v, kDqProbsMeaning);
}

bool ByteReader::boolean(std::string_view field) {
  need(1, field);
  const std::uint8_t b = bytes_[offset_];
  ++offset_;
  if (b > 1) reject(version_, where(field, 1), std::to_string(b), "0 or 1 (a bool byte)");
  return b == 1;
}

std::string ByteReader::where(std::string_view field, std::size_t width) const {
  const std::size_t first = offset_ - width;
  std::string s = std::string(source_) + " " + std::string(field) + " (byte";
  if (width == 1) return s + " " + std::to_string(first) + ")";
  return s + "s " + std::to_string(first) + "-" + std::to_string(offset_ - 1) + ")";
}

void ByteReader::need(std::size_t n, std::string_view field) const {
  if (bytes_.size() - offset_ < n)
    fail(version_, std::string(source_) + ": buffer too small: " + std::string(field) +
                       " needs bytes " + std::to_string(offset_) + "-" +
                       std::to_string(offset_ + n - 1) + " but the buffer has " +
                       std::to_string(bytes_.size()) + " bytes");
}

void write_runner(ByteWriter& w, const RunnerState& r) {
  if (r.kind == RunnerKind::unfused) {
    w.i32(r.algo1);
    w.i32(r.algo2);
  }
  w.i32(r.S);
  w.i32(r.B);
  w.i32(r.head_size);
}

RunnerState read_runner(ByteReader& r, RunnerKind kind) {
  RunnerState s;
  s.kind = kind;
  if (kind == RunnerKind::unfused) {
    s.algo1 = r.i32("runner algo1");
    s.algo2 = r.i32("runner algo2");
  }
  s.S = r.i32("runner S");
  s.B = r.i32("runner B");
  s.head_size = r.i32("runner head_size");
  return s;
}

void check_runner(int version, const RunnerState& r, int head_size, std::string_view where) {
  const std::string w(where);
  check_non_negative(version, w + " S", r.S);
  check_non_negative(version, w + " B", r.B);
  if (r.kind == RunnerKind::unfused && r.head_size != head_size)
    reject(version, w + " head_size", std::to_string(r.head_size),
           "the plugin's head size hidden_size / num_heads = " + std::to_string(head_size));
  // The fused var-seqlen runner is set up with the head size padded to 32 or 64 at each TensorRT
  // enqueue (SPEC §5.3), so a blob may hold either.
  const bool padded = (r.head_size == 32 || r.head_size == 64) && r.head_size >= head_size;
  if (r.kind == RunnerKind::fused && r.head_size != head_size && !padded)
    reject(version, w + " head_size", std::to_string(r.head_size),
           "the head size " + std::to_string(head_size) + " or a padded head size 32/64 >= it");
}

}  // namespace detail
}  // namespace qkv2ctx::trt
