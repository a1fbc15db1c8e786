// The swizzled shared-memory tile layouts the sm_90a kernels' wgmma descriptors address (FP16/BF16:
// fused_wgmma.cuh; INT8: int8_wgmma.cuh), and those descriptors.
#pragma once
#include <cstdint>

#include "cuda/common/ptx_wgmma.cuh"

namespace qkv2ctx::fused_sm90 {

// The swizzled tile layouts (the PTX ISA's SWIZZLE_128B / SWIZZLE_64B canonical layouts) for rows of
// kRowBytes = 128 or 64: columns in blocks of kRowBytes; block b of an R-row tile holds row r at
// b * R * kRowBytes + r * kRowBytes, with its 16-byte chunk c at position c ^ ((r * kRowBytes / 128) %
// (kRowBytes / 16)): the tensor core XORs address bits 4.. with bits 7.., so the tile base must be
// 1024-byte aligned. Byte offset of (row, chunk):
template <int kRows, int kRowBytes>
__device__ __forceinline__ int swizzled_offset(int row, int chunk) {
  constexpr int kChunks = kRowBytes / 16;  // chunks per swizzle row
  return (chunk / kChunks) * (kRows * kRowBytes) + row * kRowBytes +
         (((chunk % kChunks) ^ ((row * kRowBytes / 128) % kChunks)) * 16);
}

// Descriptor of a swizzled operand at shared address `addr` (1024-aligned atoms): SBO = 8 rows (the
// next row group); LBO = the next column block along MN for MN-major operands (unused for K-major
// ones, whose k16 steps stay within a row and are addressed by the start address). Layout type (bits
// 62-63): 1 = 128-byte swizzle, 2 = 64-byte.
template <int kRowBytes>
__device__ __forceinline__ std::uint64_t swizzled_desc(std::uint32_t addr, std::uint32_t lbo_bytes) {
  static_assert(kRowBytes == 128 || kRowBytes == 64, "SWIZZLE_128B or SWIZZLE_64B");
  return cuda::ptx::wgmma_desc(addr, lbo_bytes, 8 * kRowBytes) | ((kRowBytes == 128 ? 1ull : 2ull) << 62);
}

}  // namespace qkv2ctx::fused_sm90
