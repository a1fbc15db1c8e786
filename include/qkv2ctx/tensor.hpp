// Non-owning tensor views: pointer, shape, strides (in elements), dtype, memory space.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>

#include "qkv2ctx/types.hpp"

namespace qkv2ctx {

struct TensorView {
  static constexpr int kMaxRank = 5;
  void* data = nullptr;
  DType dtype = DType::fp32;
  MemSpace space = MemSpace::host;
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::array<std::int64_t, kMaxRank> strides{};  // elements; dense row-major by default

  TensorView() = default;
  // Dense row-major view.
  TensorView(const void* ptr, DType dt, MemSpace sp, std::initializer_list<std::int64_t> dims);

  bool empty() const { return data == nullptr && rank == 0; }
  std::int64_t numel() const;
  bool is_contiguous() const;
};

}  // namespace qkv2ctx
