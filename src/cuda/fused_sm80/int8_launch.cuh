// Host side of one INT8 kernel instance: dynamic shared memory opt-in (once per device), grid, launch,
// launch check. Included by the per-head-size instantiation files only.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "cuda/common/cuda_check.hpp"
#include "cuda/fused_sm80/int8_buffered.cuh"
#include "cuda/fused_sm80/int8_launch.hpp"
#include "cuda/fused_sm80/int8_resident.cuh"
#include "cuda/fused_sm80/int8_streaming.cuh"
#include "cuda/fused_sm90/int8_wgmma.cuh"
#include "qkv2ctx/error.hpp"

namespace qkv2ctx::fused_int8 {

using Int8Kernel = void (*)(Int8Params);

// Above 48 KB a kernel must opt in to its dynamic shared memory, per device. The resident schedule's
// size depends on the run, so each kernel opts in to the device's limit once; the launch then asks for
// what the run needs (occupancy follows the launch's size, not the attribute).
inline void opt_in_shared_memory(Int8Kernel kernel, std::atomic<std::uint64_t>& opted_in) {
  int device = 0;
  QKV2CTX_CUDA_CHECK(cudaGetDevice(&device));
  const std::uint64_t bit = device < 64 ? (1ull << device) : 0;
  if (bit != 0 && (opted_in.load(std::memory_order_relaxed) & bit) != 0) return;
  int limit = 0;
  QKV2CTX_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes attr{};
  QKV2CTX_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  // The opt-in limit covers static + dynamic shared memory (the kernels have ~100 bytes of static).
  const int dynamic_limit = limit - static_cast<int>(attr.sharedSizeBytes);
  QKV2CTX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic_limit));
  opted_in.fetch_or(bit, std::memory_order_relaxed);
}

template <int D>
void launch_int8_instance(const Int8Params& p, const Int8Launch& l, cudaStream_t stream) {
  const std::int64_t ctas = l.ctas > 0 ? l.ctas : 1;
  if (ctas > 0x7fffffffLL)
    throw Error(ErrorCode::unsupported, "fused INT8 attention: " + std::to_string(ctas) +
                                            " CTAs exceed the grid limit of 2^31 - 1");
  // One opt-in flag per kernel instance; each schedule picks its instance, then one launch path.
  static std::atomic<std::uint64_t> resident_opted{0}, streaming_opted{0}, streaming128_opted{0}, buffered_opted{0},
      buffered128_opted{0}, wgmma_opted{0}, wgmma_row_opted{0};
  Int8Kernel kernel = nullptr;
  std::atomic<std::uint64_t>* opted = nullptr;
  unsigned threads = 0;
  const char* name = nullptr;
  const bool long_tiles = l.tile_keys == 128;
  if (l.schedule == Int8Schedule::buffered) {
    kernel = long_tiles ? int8_buffered_kernel<D, 128> : int8_buffered_kernel<D, 64>;
    opted = long_tiles ? &buffered128_opted : &buffered_opted;
    threads = static_cast<unsigned>(l.block_m / 16 * 32);
    name = "launch int8_buffered_kernel";
  } else if (l.schedule == Int8Schedule::wgmma) {
    if constexpr (has_wgmma_int8_kernel(D)) {
      const bool whole_row = l.tile_keys == kWgmmaInt8WholeRowKeys;
      kernel = whole_row ? int8_wgmma_kernel<D, kWgmmaInt8WholeRowKeys> : int8_wgmma_kernel<D, kWgmmaInt8TileKeys>;
      opted = whole_row ? &wgmma_row_opted : &wgmma_opted;
      threads = kWgmmaInt8Threads;
      name = "launch int8_wgmma_kernel";
    } else {
      throw Error(ErrorCode::unsupported, "fused INT8: no wgmma kernel for head size " + std::to_string(D) +
                                              " (it has 64 and 128)");
    }
  } else if (l.schedule == Int8Schedule::resident) {
    kernel = int8_resident_kernel<D>;
    opted = &resident_opted;
    threads = kResidentThreads;
    name = "launch int8_resident_kernel";
  } else {
    kernel = long_tiles ? int8_streaming_kernel<D, 128> : int8_streaming_kernel<D, 64>;
    opted = long_tiles ? &streaming128_opted : &streaming_opted;
    threads = kStreamThreads;
    name = "launch int8_streaming_kernel";
  }
  opt_in_shared_memory(kernel, *opted);
  kernel<<<static_cast<unsigned>(ctas), threads, l.smem_bytes, stream>>>(p);
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess)  // QKV2CTX_CHECK_LAUNCH for a run-time name
    cuda::throw_cuda_error(err, name, __FILE__, __LINE__);
}

}  // namespace qkv2ctx::fused_int8
