// The cuda-fused backend for FP16 / BF16 on sm_80 and newer: one flash-style kernel family
// (fused_kernel.cuh) for every S, layout and mask mode. The tile shape is picked per run from S and
// the batch (fused_tile_policy.hpp); the workspace is only the StatsBlock, which the kernel itself
// rewrites (and, in varlen mode, fills with the result of its cu_seqlens check).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "core/backend.hpp"
#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device.hpp"
#include "cuda/common/device_guard.hpp"
#include "cuda/common/run_checks.hpp"
#include "cuda/common/stats.hpp"
#include "cuda/fused_sm80/fused_params.hpp"
#include "cuda/fused_sm80/int8_backend.hpp"
#include "cuda/fused_sm80/fused_tile_policy.hpp"
#include "qkv2ctx/error.hpp"

namespace qkv2ctx {
namespace fused_sm80 {

FusedLaunch plan_fused_launch(const RunParams& run, int num_sms, int sm, std::optional<TileShape> forced,
                              bool allow_persistent, int max_ctas, int max_smem_optin) {
  const AttentionDesc& d = *run.desc;
  FusedLaunch l;
  l.dtype = d.dtype;
  l.head_size = d.head_size;
  // A forced shape runs as forced (m128n64 at D != 128, which has no kernel, runs m128: the same tile;
  // the backend refuses a forced wg128 where it has no kernel or cannot run).
  l.tile = forced ? (has_tile(*forced, d.head_size) ? *forced : TileShape::m128)
                  : choose_tile_for_device(run.max_seqlen, static_cast<std::int64_t>(run.batch) * d.num_heads,
                                           d.head_size, num_sms, sm);
  if (!forced && l.tile == TileShape::m128n64 && max_smem_optin > 0 &&
      smem_bytes(tile_config(l.tile, d.head_size), d.head_size, 2) > max_smem_optin)
    l.tile = TileShape::m128;
  const TileConfig cfg = tile_config(l.tile, d.head_size);
  FusedParams& p = l.params;
  p.qkv = run.qkv;
  p.out = run.out;
  p.seq_lens = run.seq_lens;
  p.cu_seqlens = run.cu_seqlens;
  p.stats = static_cast<StatsBlock*>(run.workspace);
  p.num_tokens = run.num_tokens;
  p.batch = run.batch;
  p.max_seqlen = run.max_seqlen;
  p.num_heads = d.num_heads;
  p.layout = d.layout;
  p.mask = d.mask;
  p.tile_slots = d.mask == MaskMode::varlen ? varlen_tile_slots(cfg.block_m, run.num_tokens, run.batch)
                                            : (run.max_seqlen + cfg.block_m - 1) / cfg.block_m;
  p.kv_stages = kv_stages_for(cfg, run.max_seqlen);
  p.num_sms = num_sms;
  p.max_ctas = max_ctas;
  p.persistent = allow_persistent && cfg.persistent && persistent_fits(cfg, d.head_size);
  if (p.persistent) {
    p.q_buffers = 2;
    p.kv_stages = 2;  // the K/V stream alternates stages across items
  }
  // exp(x * scale) = 2^(x * scale * log2(e)): one FFMA and one MUFU.EX2 per score.
  p.scale_log2 = static_cast<float>(std::log2(std::exp(1.0)) / std::sqrt(static_cast<double>(d.effective_scale_head_size())));
  return l;
}

void launch_fused(const FusedLaunch& l, cudaStream_t stream) {
  if (l.params.mask == MaskMode::varlen && l.params.batch == 0) {
    // No sequence, so no CTA to rewrite the StatsBlock: the common reset + check (cu_seqlens[0] only).
    cuda::reset_stats(l.params.stats, stream);
    cuda::resolve_cu_seqlens(l.params.cu_seqlens, 0, l.params.max_seqlen, l.params.num_tokens, nullptr,
                             l.params.stats, stream);
    return;
  }
  if (l.dtype == DType::bf16) launch_fused_bf16(l.params, l.head_size, l.tile, stream);
  else launch_fused_fp16(l.params, l.head_size, l.tile, stream);
}

}  // namespace fused_sm80

namespace cuda {
namespace {

constexpr int kMinSm = 80;  // cp.async, ldmatrix, bf16 mma.sync
constexpr int kPersistentMinSm = 90;  // must match kPersistentArch in fused_kernel.cuh

std::string supported_head_sizes() {
  std::string s;
  for (int h : fused_sm80::kSupportedHeadSizes) s += (s.empty() ? "" : ", ") + std::to_string(h);
  return "{" + s + "}";
}

std::string describe_tile(fused_sm80::TileShape shape, int head_size) {
  const fused_sm80::TileConfig c = fused_sm80::tile_config(shape, head_size);
  if (shape == fused_sm80::TileShape::wg128)
    return "fused_sm90 wgmma tile: BM=" + std::to_string(c.block_m) + " (2 warpgroups x 64 rows), BN=" +
           std::to_string(c.block_n) + ", Q·Kᵀ wgmma m64n" + std::to_string(c.block_n) +
           "k16 from shared memory, P·V wgmma m64n" + std::to_string(head_size) +
           "k16 with P in registers, 2 cp.async K/V stages, smem " +
           std::to_string(fused_sm80::smem_bytes(c, head_size, c.kv_stages) / 1024) + " KiB";
  return "fused_sm80 mma.sync m16n8k16 tile: BM=" + std::to_string(c.block_m) + " (" + std::to_string(c.warps) +
         " warps x " +
         std::to_string(16 * c.m_tiles_per_warp) + " rows), BN=" + std::to_string(c.block_n) + ", Q " +
         (c.q_in_registers ? "in registers" : "re-read from shared memory") + ", " +
         std::to_string(c.kv_stages) + " cp.async K/V stages, smem " +
         std::to_string(fused_sm80::smem_bytes(c, head_size, c.kv_stages) / 1024) + " KiB";
}

// QKV2CTX_FUSED_TILE=m64|m128|m128n64|wg128 forces one tile shape for every run of plans made while it is set (the
// tests cover both shapes of every kernel with small problems; benchmarks compare them). Read once,
// at plan creation.
std::optional<fused_sm80::TileShape> forced_tile_from_env() {
  const char* v = std::getenv("QKV2CTX_FUSED_TILE");
  if (v == nullptr || *v == '\0') return std::nullopt;
  const std::string s(v);
  if (s == "m64") return fused_sm80::TileShape::m64;
  if (s == "m128") return fused_sm80::TileShape::m128;
  if (s == "m128n64") return fused_sm80::TileShape::m128n64;
  if (s == "wg128") return fused_sm80::TileShape::wg128;
  throw Error(ErrorCode::invalid_argument,
              "QKV2CTX_FUSED_TILE = '" + s + "' is not allowed: use m64, m128, m128n64, wg128 or leave it unset");
}

// QKV2CTX_FUSED_PERSISTENT=0 turns the persistent schedule off (one query tile per CTA) for plans made
// while it is set; 1 or unset keeps the default (persistent where persistent_fits()).
bool persistent_from_env() {
  const char* v = std::getenv("QKV2CTX_FUSED_PERSISTENT");
  if (v == nullptr || *v == '\0') return true;
  const std::string s(v);
  if (s == "0") return false;
  if (s == "1") return true;
  throw Error(ErrorCode::invalid_argument,
              "QKV2CTX_FUSED_PERSISTENT = '" + s + "' is not allowed: use 0, 1 or leave it unset");
}

// QKV2CTX_FUSED_MAX_CTAS=N caps the persistent grid at N CTAs (tests: many items per CTA on problems
// small enough for compute-sanitizer). Unset or empty: no cap.
int max_ctas_from_env() {
  const char* v = std::getenv("QKV2CTX_FUSED_MAX_CTAS");
  if (v == nullptr || *v == '\0') return 0;
  const std::string s(v);
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 1 || n > 1000000)
    throw Error(ErrorCode::invalid_argument,
                "QKV2CTX_FUSED_MAX_CTAS = '" + s + "' is not allowed: a CTA count in [1, 1000000] or unset");
  return static_cast<int>(n);
}

std::string describe_schedule(fused_sm80::TileShape shape, int head_size, bool allow_persistent) {
  const fused_sm80::TileConfig c = fused_sm80::tile_config(shape, head_size);
  const bool on = allow_persistent && c.persistent && fused_sm80::persistent_fits(c, head_size);
  if (on && shape == fused_sm80::TileShape::wg128)
    return "persistent (resident CTAs walk the query tiles in snake order; the next tile's Q/K0 load under the "
           "current one's last P·V and epilogue; 2 Q buffers)";
  return on ? "persistent (resident CTAs walk the query tiles in snake order; the next tile's Q/K0/V0/K1 "
              "load under the current one's last K/V tile; 2 Q buffers)"
            : "one query tile per CTA";
}

class FusedBackend final : public BackendImpl {
 public:
  FusedBackend(const AttentionDesc& desc, const DeviceCaps& caps)
      : desc_(desc),
        caps_(caps),
        forced_tile_(forced_tile_from_env()),
        persistent_(persistent_from_env()),
        max_ctas_(max_ctas_from_env()) {
    using fused_sm80::TileShape;
    if (forced_tile_ == TileShape::wg128) {
      if (!fused_sm80::tile_runs_on(TileShape::wg128, caps_.sm))
        throw Error(ErrorCode::unsupported, "QKV2CTX_FUSED_TILE = 'wg128' needs an sm_90 device (wgmma, sm_90a code); "
                                            "device " + std::to_string(caps_.device) + " is sm_" +
                                                std::to_string(caps_.sm));
      if (!fused_sm80::has_tile(TileShape::wg128, desc_.head_size))
        throw Error(ErrorCode::unsupported, "QKV2CTX_FUSED_TILE = 'wg128' has no kernel for head size " +
                                                std::to_string(desc_.head_size) + "; it is compiled for 32, 64 and 128");
    }
  }

  Backend kind() const override { return Backend::cuda_fused; }
  MemSpace memory_space() const override { return MemSpace::cuda; }

  std::string describe() const override {
    using fused_sm80::TileShape;
    const TileShape large = fused_sm80::large_tile_for_device(desc_.head_size, caps_.sm, fused_sm80::kWgmmaMinSeqlen);
    const TileShape large_short = fused_sm80::large_tile_for_device(desc_.head_size, caps_.sm, 1);
    if (forced_tile_)
      return std::string("fused flash attention, ") + (desc_.dtype == DType::bf16 ? "BF16" : "FP16") +
             ", D=" + std::to_string(desc_.head_size) + ", tile forced by QKV2CTX_FUSED_TILE: " +
             describe_tile(*forced_tile_, desc_.head_size) + ", " +
             describe_schedule(*forced_tile_, desc_.head_size, persistent_on());
    return std::string("fused flash attention, ") + (desc_.dtype == DType::bf16 ? "BF16" : "FP16") +
           " tensor cores with FP32 accumulation, online softmax (exp2), P rounded to " +
           (desc_.dtype == DType::bf16 ? "BF16" : "FP16") + " in registers, D=" +
           std::to_string(desc_.head_size) + "; per run: S <= 64 or fewer than " +
           "4 CTAs per SM at BM=128 -> " + describe_tile(TileShape::m64, desc_.head_size) + ", " +
           describe_schedule(TileShape::m64, desc_.head_size, persistent_on()) + "; otherwise " +
           (large == large_short
                ? std::string()
                : "S <= " + std::to_string(fused_sm80::kWgmmaMinSeqlen - 1) + " -> " +
                      describe_tile(large_short, desc_.head_size) + ", " +
                      describe_schedule(large_short, desc_.head_size, persistent_on()) + "; longer -> ") +
           describe_tile(large, desc_.head_size) + ", " + describe_schedule(large, desc_.head_size, persistent_on()) +
           (desc_.mask == MaskMode::varlen
                ? "; varlen tile order: longest-first (sequences by query-tile count, slot-major over the "
                  "heads) for B <= " + std::to_string(fused_sm80::kLongestFirstMaxBatch) + ", else sequence order"
                : std::string()) +
           "; device " + std::to_string(caps_.device) +
           " " + caps_.name + " sm_" + std::to_string(caps_.sm) + ", " + std::to_string(caps_.num_sms) + " SMs";
  }

  std::size_t workspace_bytes(const ProblemSize&) const override { return kStatsBytes; }

  void run(const RunParams& p) const override {
    ScopedDevice on(caps_.device);
    check_alignment("qkv", p.qkv);
    check_alignment("out", p.out);
    const fused_sm80::FusedLaunch launch = fused_sm80::plan_fused_launch(p, caps_.num_sms, caps_.sm, forced_tile_, persistent_on(),
                                                                            max_ctas_, caps_.max_smem_optin);
    fused_sm80::launch_fused(launch, static_cast<cudaStream_t>(p.stream));
  }

  RunStats read_stats(const Workspace& ws, void* stream) const override {
    ScopedDevice on(caps_.device);
    return cuda::read_stats(ws.data, static_cast<cudaStream_t>(stream));
  }

 private:
  AttentionDesc desc_;
  DeviceCaps caps_;
  // The persistent schedule is compiled for sm_90+ only (fused_kernel.cuh, kPersistentArch).
  bool persistent_on() const { return persistent_ && caps_.sm >= kPersistentMinSm; }

  std::optional<fused_sm80::TileShape> forced_tile_;
  bool persistent_;
  int max_ctas_;
};

}  // namespace
}  // namespace cuda

std::unique_ptr<BackendImpl> make_cuda_fused_backend(const AttentionDesc& desc, int device, std::string* why_not) {
  if (!cuda::device_exists(device, why_not)) return nullptr;
  switch (desc.dtype) {
    case DType::fp16:
    case DType::bf16:
      break;
    case DType::int8:
      if (desc.probs == ProbsMode::max_relative) {
        *why_not = "probs max_relative has no fused kernel yet (its one-pass streaming form is a later "
                   "step); backends cuda-unfused and cpu run it";
        return nullptr;
      }
      return make_fused_int8_backend(desc, cuda::query_device(device), why_not);
    case DType::fp32:
      *why_not = "dtype fp32 has no fused kernel (the fused family is FP16/BF16 on tensor cores); backend "
                 "cuda-unfused runs it";
      return nullptr;
    default:
      *why_not = "dtype " + std::string(to_string(desc.dtype)) + " is not an attention dtype";
      return nullptr;
  }
  if (!fused_sm80::is_supported_head_size(desc.head_size)) {
    *why_not = "head size " + std::to_string(desc.head_size) + " has no fused kernel; the fused " +
               "FP16/BF16 kernels support head sizes " + cuda::supported_head_sizes();
    return nullptr;
  }
  if (desc.layout == Layout::chw32) {
    *why_not = "layout chw32 is INT8-only; the fused FP16/BF16 kernels read layouts trt and hf";
    return nullptr;
  }
  const cuda::DeviceCaps caps = cuda::query_device(device);
  if (caps.sm < cuda::kMinSm) {
    *why_not = "device " + std::to_string(device) + " (" + caps.name + ") is sm_" + std::to_string(caps.sm) +
               "; the fused FP16/BF16 kernels need sm_80 or newer (mma.sync bf16, cp.async, ldmatrix)";
    return nullptr;
  }
  return std::make_unique<cuda::FusedBackend>(desc, caps);
}

}  // namespace qkv2ctx
