// Host side of one kernel instance: grid, dynamic shared memory (opted in once per device), launch,
// launch check. Included by the per-dtype instantiation files only.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/common/cuda_check.hpp"
#include "cuda/fused_sm80/fused_kernel.cuh"
#include "cuda/fused_sm90/fused_wgmma.cuh"
#include "qkv2ctx/error.hpp"

namespace qkv2ctx::fused_sm80 {

// Grid items of a launch (query-tile slots x heads, x batch when padded); throws past the grid limit.
inline std::int64_t grid_items(const FusedParams& p) {
  const std::int64_t heads_grid = p.mask == MaskMode::varlen
                                      ? static_cast<std::int64_t>(p.num_heads)
                                      : static_cast<std::int64_t>(p.num_heads) * p.batch;
  const std::int64_t items = p.tile_slots * heads_grid;
  if (items > 0x7fffffffLL)  // also the one-item-per-CTA grid
    throw Error(ErrorCode::unsupported, "fused attention: " + std::to_string(items) +
                                            " CTAs exceed the grid limit of 2^31 - 1");
  return items;
}

// Above 48 KB a kernel must opt in to its dynamic shared memory, once per device (the attribute is
// per device context): `max_smem` is the largest size any run of the instance can ask for. One
// `opted_in_devices` per kernel instance (a function-local static of the caller's template).
template <class Kernel>
void opt_in_smem(Kernel kernel, int max_smem, std::atomic<std::uint64_t>& opted_in_devices) {
  int device = 0;
  QKV2CTX_CUDA_CHECK(cudaGetDevice(&device));
  const std::uint64_t bit = device < 64 ? (1ull << device) : 0;
  if (bit == 0 || (opted_in_devices.load(std::memory_order_relaxed) & bit) == 0) {
    QKV2CTX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem));
    opted_in_devices.fetch_or(bit, std::memory_order_relaxed);
  }
}

// CTAs of a launch: one per item, or for a persistent launch as many as are resident at once (never
// more than the items; p.max_ctas caps it further).
template <class Kernel>
std::int64_t launch_ctas(Kernel kernel, int threads, int smem, std::int64_t items, const FusedParams& p) {
  if (!p.persistent) return items;
  int per_sm = 0;
  QKV2CTX_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  std::int64_t ctas = static_cast<std::int64_t>(per_sm > 0 ? per_sm : 1) * (p.num_sms > 0 ? p.num_sms : 1);
  if (items < ctas) ctas = items;
  if (p.max_ctas > 0 && p.max_ctas < ctas) ctas = p.max_ctas;
  return ctas;
}

template <class Tr>
void launch_fused_instance(const FusedParams& p, cudaStream_t stream) {
  const std::int64_t items = grid_items(p);
  if (items == 0) return;
  const int smem = smem_bytes(Tr::kConfig, Tr::kHeadDim, p.kv_stages, p.q_buffers);
  static std::atomic<std::uint64_t> opted_in_devices{0};
  opt_in_smem(fused_attention_kernel<Tr>,
              smem_bytes(Tr::kConfig, Tr::kHeadDim, Tr::kConfig.kv_stages,
                         Tr::kConfig.persistent && persistent_fits(Tr::kConfig, Tr::kHeadDim) ? 2 : 1),
              opted_in_devices);
  const std::int64_t ctas = launch_ctas(fused_attention_kernel<Tr>, Tr::kThreads, smem, items, p);
  // A launch error is only visible through cudaGetLastError(), which also returns an unrelated earlier
  // failure nobody collected: clear that first so the check below reports this launch.
  (void)cudaGetLastError();
  fused_attention_kernel<Tr><<<static_cast<unsigned>(ctas), Tr::kThreads, smem, stream>>>(p);
  QKV2CTX_CHECK_LAUNCH("fused_attention_kernel");
}

// The Hopper tile (sm_90a).
template <class Tr>
void launch_wgmma_instance(const FusedParams& p, cudaStream_t stream) {
  const std::int64_t items = grid_items(p);
  if (items == 0) return;
  const int smem = smem_bytes(Tr::kConfig, Tr::kHeadDim, p.kv_stages, p.q_buffers);
  static std::atomic<std::uint64_t> opted_in_devices{0};
  opt_in_smem(fused_sm90::fused_wgmma_kernel<Tr>,
              smem_bytes(Tr::kConfig, Tr::kHeadDim, Tr::kConfig.kv_stages,
                         Tr::kConfig.persistent && persistent_fits(Tr::kConfig, Tr::kHeadDim) ? 2 : 1),
              opted_in_devices);
  const std::int64_t ctas = launch_ctas(fused_sm90::fused_wgmma_kernel<Tr>, Tr::kThreads, smem, items, p);
  (void)cudaGetLastError();  // as above
  fused_sm90::fused_wgmma_kernel<Tr><<<static_cast<unsigned>(ctas), Tr::kThreads, smem, stream>>>(p);
  QKV2CTX_CHECK_LAUNCH("fused_wgmma_kernel");
}

// Run-time (head size, tile shape) -> compile-time instance, for one element type: every head size of
// kSupportedHeadSizes x {m64, m128} is instantiated here, plus m128n64 at D = 128 and wg128 at D = 32,
// 64, 128 (14 kernels per dtype).
template <class Elem>
void launch_fused_typed(const FusedParams& p, int head_size, TileShape tile, cudaStream_t stream) {
  auto by_tile = [&](auto head_dim) {
    constexpr int kD = decltype(head_dim)::value;
    switch (tile) {
      case TileShape::m64: return launch_fused_instance<FusedTraits<Elem, kD, TileShape::m64>>(p, stream);
      case TileShape::m128: return launch_fused_instance<FusedTraits<Elem, kD, TileShape::m128>>(p, stream);
      case TileShape::m128n64:
        if constexpr (has_tile(TileShape::m128n64, kD))
          return launch_fused_instance<FusedTraits<Elem, kD, TileShape::m128n64>>(p, stream);
        break;  // plan_fused_launch never asks for it (tile_for_head_size)
      case TileShape::wg128:
        if constexpr (has_tile(TileShape::wg128, kD))
          return launch_wgmma_instance<fused_sm90::WgmmaTraits<Elem, kD>>(p, stream);
        break;  // plan_fused_launch never asks for it (has_tile)
    }
    throw Error(ErrorCode::internal, "fused attention: unknown tile shape");
  };
  switch (head_size) {
    case 32: return by_tile(std::integral_constant<int, 32>{});
    case 64: return by_tile(std::integral_constant<int, 64>{});
    case 80: return by_tile(std::integral_constant<int, 80>{});
    case 96: return by_tile(std::integral_constant<int, 96>{});
    case 128: return by_tile(std::integral_constant<int, 128>{});
    default:
      throw Error(ErrorCode::internal, "fused attention: no kernel for head size " + std::to_string(head_size));
  }
}

}  // namespace qkv2ctx::fused_sm80
