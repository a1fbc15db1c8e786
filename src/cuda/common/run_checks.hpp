// Cheap per-run checks shared by the CUDA backends (host only, no device access).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

#include "qkv2ctx/error.hpp"

namespace qkv2ctx::cuda {

// Vectorized kernels and cuBLASLt read qkv and write out in 16-byte units.
inline constexpr std::size_t kTensorAlignment = 16;

inline void check_alignment(const char* name, const void* ptr, std::size_t alignment = kTensorAlignment) {
  if (reinterpret_cast<std::uintptr_t>(ptr) % alignment != 0) {
    char addr[32];
    std::snprintf(addr, sizeof addr, "%p", ptr);
    throw Error(ErrorCode::invalid_argument,
                std::string(name) + ".data = " + addr + " is not " + std::to_string(alignment) +
                    "-byte aligned; the CUDA backends need " + std::to_string(alignment) +
                    "-byte aligned tensors (cudaMalloc gives 256)");
  }
}

}  // namespace qkv2ctx::cuda
