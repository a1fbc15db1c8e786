// Carves one caller-provided workspace into aligned regions. The same carve runs for
// BackendImpl::workspace_bytes (with a null base, to measure) and for run() (to place the buffers),
// so the size reported and the layout used can never disagree. All sizes are checked against
// 64-bit overflow (SPEC R8: B*N*S*S can exceed 2^31 elements, and absurd sizes must fail loudly).
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "core/backend.hpp"
#include "qkv2ctx/error.hpp"

namespace qkv2ctx::cuda {

// Product of non-negative factors; throws Error(invalid_argument) naming `what` on overflow.
inline std::size_t checked_product(std::initializer_list<std::uint64_t> factors, const char* what) {
  unsigned __int128 p = 1;
  for (std::uint64_t f : factors) {
    p *= f;
    if (p > std::numeric_limits<std::size_t>::max() / 2)
      throw Error(ErrorCode::invalid_argument,
                  std::string("problem too large: the size of ") + what + " overflows 64-bit arithmetic");
  }
  return static_cast<std::size_t>(p);
}

class WorkspaceCarver {
 public:
  static constexpr std::size_t kAlignment = 256;  // cuBLASLt and vector loads want >= 16; 256 is free

  // Plan::run guarantees this much alignment of the workspace base.
  static constexpr std::size_t kBaseAlignment = 16;

  // base == nullptr: measuring only. The StatsBlock always comes first (kStatsBytes, at the base);
  // the regions after it start at absolute 256-byte boundaries (cuBLASLt's heuristics assume
  // 256-byte aligned matrices), which costs at most kAlignment - kBaseAlignment bytes of padding:
  // measuring counts that worst case, so a measured size always covers the real carve.
  explicit WorkspaceCarver(void* base) : base_(static_cast<std::uint8_t*>(base)) {
    offset_ = kStatsBytes;
    const std::size_t misalignment =
        base_ ? (reinterpret_cast<std::uintptr_t>(base_) + offset_) % kAlignment : kBaseAlignment;
    offset_ += misalignment ? kAlignment - misalignment : 0;
  }

  // Reserves `bytes` (aligned) and returns where they start (nullptr when measuring or bytes == 0).
  void* take(std::size_t bytes) {
    const std::size_t begin = offset_;
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (rounded < bytes || offset_ > std::numeric_limits<std::size_t>::max() / 2 - rounded)
      throw Error(ErrorCode::invalid_argument, "problem too large: the workspace size overflows 64-bit arithmetic");
    offset_ += rounded;
    return (base_ != nullptr && bytes > 0) ? base_ + begin : nullptr;
  }
  template <typename T>
  T* take_array(std::size_t count, const char* what) {
    return static_cast<T*>(take(checked_product({count, sizeof(T)}, what)));
  }

  std::size_t total() const { return offset_; }
  StatsBlock* stats() const { return reinterpret_cast<StatsBlock*>(base_); }

 private:
  std::uint8_t* base_;
  std::size_t offset_ = 0;
};

}  // namespace qkv2ctx::cuda
