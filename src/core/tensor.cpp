#include "qkv2ctx/error.hpp"
#include "qkv2ctx/tensor.hpp"

namespace qkv2ctx {

TensorView::TensorView(const void* ptr, DType dt, MemSpace sp,
                       std::initializer_list<std::int64_t> dims)
    : data(const_cast<void*>(ptr)), dtype(dt), space(sp), rank(static_cast<int>(dims.size())) {
  if (rank > kMaxRank)
    throw Error(ErrorCode::invalid_argument,
                "TensorView: rank " + std::to_string(rank) + " is not allowed (at most 5)");
  int i = 0;
  for (auto d : dims) shape[i++] = d;
  std::int64_t stride = 1;
  for (int k = rank - 1; k >= 0; --k) {
    strides[k] = stride;
    stride *= shape[k];
  }
}

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (int k = 0; k < rank; ++k) n *= shape[k];
  return n;
}

bool TensorView::is_contiguous() const {
  std::int64_t stride = 1;
  for (int k = rank - 1; k >= 0; --k) {
    if (shape[k] != 1 && strides[k] != stride) return false;
    stride *= shape[k];
  }
  return true;
}

}  // namespace qkv2ctx
