// Arguments of one fused sm_80 launch, and the per-dtype entry points the backend calls. Host-only
// header (no device code), included by fused_backend.cpp, the kernels and the benchmark probe.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>

#include "core/backend.hpp"
#include "cuda/fused_sm80/fused_tile_policy.hpp"
#include "qkv2ctx/types.hpp"

namespace qkv2ctx::fused_sm80 {

// Passed by value to the kernel. Layout and mask mode are run-time values: they only change the row
// pointers and lengths each CTA computes once, not the inner loop.
struct FusedParams {
  const void* qkv = nullptr;
  void* out = nullptr;
  const std::int32_t* seq_lens = nullptr;    // mask lengths: [batch]
  const std::int32_t* cu_seqlens = nullptr;  // mask varlen: [batch + 1]
  StatsBlock* stats = nullptr;               // start of the workspace; CTA 0 rewrites it every run
  std::int64_t num_tokens = 0;               // rows of qkv / out (T)
  // Query-tile slots: per (sequence, head) = ceil(S / BM) when padded; per head =
  // varlen_tile_slots(BM, T, B) in varlen mode. The grid is slots x heads (x batch when padded).
  std::int64_t tile_slots = 0;
  int batch = 0;
  int max_seqlen = 0;  // S (padded) or the host upper bound of the lengths (varlen; longer ones are cut)
  int num_heads = 0;
  int kv_stages = 2;   // K/V stages the dynamic shared memory holds (kv_stages_for())
  // Persistent launch (fused_tile_policy.hpp, persistent_fits): at most as many CTAs as fit on the
  // device, each walking its items (ItemIter) with the next item's loads issued under the current
  // one's last tile; q_buffers = 2 then (the next item's Q lands beside the current one). Else one
  // item per CTA and q_buffers = 1.
  bool persistent = false;
  int q_buffers = 1;
  int num_sms = 0;  // host only: the persistent grid is num_sms x the measured occupancy
  int max_ctas = 0;  // host only: a smaller persistent grid (0: none; QKV2CTX_FUSED_MAX_CTAS, tests)
  float scale_log2 = 0.0f;  // softmax scale * log2(e): scores go through exp2
  Layout layout = Layout::trt;
  MaskMode mask = MaskMode::none;
};

// Everything one run launches.
struct FusedLaunch {
  FusedParams params;
  DType dtype = DType::fp16;
  int head_size = 0;
  TileShape tile = TileShape::m128;
};

// The launch for a validated run on a device with `num_sms` SMs of version `sm` (90 for sm_90): the tile
// shape from choose_tile_for_device()
// unless `forced` (benchmarks compare both), grid slots and K/V stages from fused_tile_policy.hpp.
// allow_persistent = false keeps one item per CTA (QKV2CTX_FUSED_PERSISTENT=0, for comparisons).
// max_smem_optin (bytes a block may opt into; 0: not checked): a default shape that needs more (m128n64
// on 99 KiB sm_86/sm_89 parts) gives way to m128.
FusedLaunch plan_fused_launch(const RunParams& run, int num_sms, int sm, std::optional<TileShape> forced = {},
                              bool allow_persistent = true, int max_ctas = 0, int max_smem_optin = 0);

// Launches it (no allocation, no host synchronization). A varlen run with no sequence (B = 0) has
// no CTA: the StatsBlock is then reset and cu_seqlens checked by the common kernel instead.
void launch_fused(const FusedLaunch& launch, cudaStream_t stream);

// Launch the kernel for (dtype, head_size, tile) on `stream`. head_size must be supported and the
// pointers 16-byte aligned (the backend checks both). Throws Error(cuda_error) on a launch error.
void launch_fused_fp16(const FusedParams& params, int head_size, TileShape tile, cudaStream_t stream);
void launch_fused_bf16(const FusedParams& params, int head_size, TileShape tile, cudaStream_t stream);

}  // namespace qkv2ctx::fused_sm80
