// The fused INT8 backend: picks the schedule per run, carves the workspace (StatsBlock + per-CTA row
// counters), launches, and reads the counters back.
#include "cuda/fused_sm80/int8_backend.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device_guard.hpp"
#include "cuda/common/run_checks.hpp"
#include "cuda/common/stats.hpp"
#include "cuda/common/workspace_carver.hpp"
#include "cuda/fused_sm80/int8_launch.hpp"
#include "qkv2ctx/error.hpp"
#include "qkv2ctx/int8.hpp"

namespace qkv2ctx {
namespace fused_int8 {

void launch_int8(const Int8Params& p, const Int8Launch& l, int head_size, cudaStream_t stream) {
  switch (head_size) {
    case 32: return launch_int8_d32(p, l, stream);
    case 64: return launch_int8_d64(p, l, stream);
    case 128: return launch_int8_d128(p, l, stream);
    default:
      throw Error(ErrorCode::unsupported,
                  "fused INT8 attention has no kernel for head size " + std::to_string(head_size));
  }
}

}  // namespace fused_int8

namespace {

using fused_int8::Int8CounterSlot;
using fused_int8::Int8Launch;
using fused_int8::Int8Options;

class FusedInt8Backend final : public BackendImpl {
 public:
  FusedInt8Backend(const AttentionDesc& desc, const cuda::DeviceCaps& caps, const Int8Options& options)
      : desc_(desc), caps_(caps), options_(options),
        scales_(derive_int8_scales(desc.int8, desc.effective_scale_head_size())) {}

  Backend kind() const override { return Backend::cuda_fused; }
  MemSpace memory_space() const override { return MemSpace::cuda; }

  std::string describe() const override {
    std::string s = "fused INT8 (D=" + std::to_string(desc_.head_size) +
                    ", bound=" + std::string(to_string(desc_.bound)) + "), schedule per run: ";
    if (caps_.sm == 90 && fused_int8::has_wgmma_int8_kernel(desc_.head_size))
      s += "sm_90a wgmma (m64nNk32 s8->s32, 2 warpgroups x 64 query rows per CTA, V transposed once per tile in "
           "shared memory; streaming passes over 64-key tiles" +
           std::string(desc_.head_size == 64 ? ", automatic for D = 64 at S > 256 with the fixed bound"
                                             : "; only when forced: the sm_80 schedules measured faster at D = 128") +
           "; S <= 128 whole rows in registers when forced), else ";
    s += "sm_80 mma.sync m16n8k32 s8->s32: buffered where its shared-memory row buffers leave >= " +
         std::to_string(fused_int8::kBufferedAutoMinWarpsPerSm) +
         " warps per SM (S <= 128; 16 query rows per warp, up to 4 warps per CTA, K/V streamed in 64- or 128-key "
         "tiles, each row's FP32 exponentials kept in shared memory so every exponential is computed once), longer "
         "sequences two-pass streaming (4 warps x 16 rows, exponentials recomputed); probabilities quantized after "
         "normalization (SPEC 5.0)";
    if (options_.force != Int8Options::Force::automatic)
      s += options_.force == Int8Options::Force::resident    ? " [forced: resident]"
           : options_.force == Int8Options::Force::buffered ? " [forced: buffered]"
           : options_.force == Int8Options::Force::wgmma    ? " [forced: wgmma]"
                                                             : " [forced: streaming]";
    if (scales_.fixed_bound_underflow_likely && desc_.bound != BoundMode::row_max)
      s += "\nwarning: p_max = " + std::to_string(scales_.fixed_bound) +
           " > 87.34: the fixed bound zeroes every row whose largest logit is <= 0 (SPEC 5.0.1)" +
           (desc_.bound == BoundMode::guarded ? "; guarded mode recomputes those rows" : "");
    return s;
  }

  std::size_t workspace_bytes(const ProblemSize& size) const override {
    cuda::WorkspaceCarver carver(nullptr);
    carve_counters(carver, choose(size.batch, size.max_seqlen, size.num_tokens));
    return carver.total();
  }

  void run(const RunParams& rp) const override {
    cuda::ScopedDevice device(caps_.device);
    cuda::check_alignment("qkv", rp.qkv);
    cuda::check_alignment("out", rp.out);
    const Int8Launch l = choose(rp.batch, rp.max_seqlen, rp.num_tokens);
    cuda::WorkspaceCarver carver(rp.workspace);
    fused_int8::Int8Params p;
    p.qkv = static_cast<const std::int8_t*>(rp.qkv);
    p.out = static_cast<std::int8_t*>(rp.out);
    p.seq_lens = rp.seq_lens;
    p.cu_seqlens = rp.cu_seqlens;
    p.stats = carver.stats();
    carve_counters(carver, l, &p);
    p.num_tokens = rp.num_tokens;
    p.tile_slots = l.tile_slots;
    p.batch = rp.batch;
    p.max_seqlen = rp.max_seqlen;
    p.num_heads = desc_.num_heads;
    p.block_m = l.block_m;
    p.key_groups = l.key_groups;
    p.keys_capacity = l.keys_capacity;
    p.scale_bmm1 = scales_.scale_bmm1;
    p.scale_softmax = scales_.scale_softmax;
    p.scale_bmm2 = scales_.scale_bmm2;
    p.fixed_bound = scales_.fixed_bound;
    p.layout = desc_.layout;
    p.mask = desc_.mask;
    p.bound = desc_.bound;
    fused_int8::launch_int8(p, l, desc_.head_size, static_cast<cudaStream_t>(rp.stream));
  }

  RunStats read_stats(const Workspace& ws, void* stream) const override {
    cuda::ScopedDevice device(caps_.device);
    const auto s = static_cast<cudaStream_t>(stream);
    RunStats r = cuda::read_stats(ws.data, s);  // synchronizes; throws on bad device cu_seqlens
    if (!counts_rows()) return r;
    // Same carve as run(): the header region, then the slots.
    cuda::WorkspaceCarver carver(ws.data);
    const auto* header = static_cast<const std::uint32_t*>(carver.take(sizeof(std::uint32_t)));
    const auto* first_slot = static_cast<const std::uint8_t*>(carver.take(sizeof(Int8CounterSlot)));
    std::uint32_t count = 0;
    QKV2CTX_CUDA_CHECK(cudaMemcpyAsync(&count, header, sizeof(count), cudaMemcpyDeviceToHost, s));
    QKV2CTX_CUDA_CHECK(cudaStreamSynchronize(s));
    const std::size_t used = static_cast<std::size_t>(first_slot - static_cast<const std::uint8_t*>(ws.data));
    const std::size_t room = ws.bytes > used ? (ws.bytes - used) / sizeof(Int8CounterSlot) : 0;
    if (count > room)
      throw Error(ErrorCode::internal, "fused INT8: the workspace's counter header says " + std::to_string(count) +
                                           " CTAs, more than the workspace holds (" + std::to_string(room) +
                                           "); was it overwritten since the run?");
    std::vector<Int8CounterSlot> slots(count);
    if (count > 0) {
      QKV2CTX_CUDA_CHECK(cudaMemcpyAsync(slots.data(), first_slot, count * sizeof(Int8CounterSlot),
                                         cudaMemcpyDeviceToHost, s));
      QKV2CTX_CUDA_CHECK(cudaStreamSynchronize(s));
    }
    for (const auto& c : slots) {
      r.fixed_bound_underflow_rows += c.underflow_rows;
      r.fixed_bound_overflow_rows += c.overflow_rows;
      r.repaired_rows += c.repaired_rows;
    }
    return r;
  }

 private:
  bool counts_rows() const { return desc_.bound != BoundMode::row_max; }

  Int8Launch choose(int batch, int max_seqlen, std::int64_t tokens) const {
    Int8Launch l = fused_int8::plan_int8_launch(desc_.head_size, desc_.mask, batch, max_seqlen, tokens,
                                                desc_.num_heads, caps_.max_smem_optin, options_, caps_.num_sms,
                                                caps_.sm, desc_.bound);
    if (l.schedule == fused_int8::Int8Schedule::resident &&
        (max_seqlen > fused_int8::kResidentMaxKeys ||
         l.smem_bytes + fused_int8::kStaticSmemReserve > caps_.max_smem_optin))
      throw Error(ErrorCode::unsupported,
                  "fused INT8: the resident schedule was forced but max_seqlen = " + std::to_string(max_seqlen) +
                      " needs " + std::to_string(l.smem_bytes) + " bytes of shared memory (device limit " +
                      std::to_string(caps_.max_smem_optin) + ") and at most " +
                      std::to_string(fused_int8::kResidentMaxKeys) + " keys");
    if (l.schedule == fused_int8::Int8Schedule::buffered &&
        l.smem_bytes + fused_int8::kStaticSmemReserve > caps_.max_smem_optin)
      throw Error(ErrorCode::unsupported,
                  "fused INT8: the buffered schedule was forced but max_seqlen = " + std::to_string(max_seqlen) +
                      " with " + std::to_string(l.block_m) + " rows per CTA needs " + std::to_string(l.smem_bytes) +
                      " bytes of shared memory (device limit " + std::to_string(caps_.max_smem_optin) + ")");
    return l;
  }

  // Counting modes: a 256-byte region holding the CTA count (written by CTA 0), then one slot per CTA.
  void carve_counters(cuda::WorkspaceCarver& carver, const Int8Launch& l, fused_int8::Int8Params* p = nullptr) const {
    if (!counts_rows()) return;
    const std::int64_t ctas = l.ctas > 0 ? l.ctas : 1;
    auto* header = static_cast<std::uint32_t*>(carver.take(sizeof(std::uint32_t)));
    auto* slots = carver.take_array<Int8CounterSlot>(static_cast<std::size_t>(ctas), "fused INT8 row counters");
    if (p != nullptr) {
      p->slot_count = header;
      p->slots = slots;
    }
  }

  AttentionDesc desc_;
  cuda::DeviceCaps caps_;
  Int8Options options_;
  Int8Derived scales_;
};

// QKV2CTX_INT8_SCHEDULE=buffered|resident|streaming|wgmma, QKV2CTX_INT8_BLOCK_M=<rows> and QKV2CTX_INT8_TILE_KEYS=64|128
// (buffered) override the per-run choice
// for plans made while they are set (tests cover both schedules through make_plan; measurements compare
// them). Read once, at plan creation; explicit options win.
fused_int8::Int8Options options_from_env(fused_int8::Int8Options o) {
  if (o.force == Int8Options::Force::automatic) {
    if (const char* v = std::getenv("QKV2CTX_INT8_SCHEDULE"); v != nullptr && *v != '\0') {
      const std::string s(v);
      if (s == "resident") o.force = Int8Options::Force::resident;
      else if (s == "streaming") o.force = Int8Options::Force::streaming;
      else if (s == "buffered") o.force = Int8Options::Force::buffered;
      else if (s == "wgmma") o.force = Int8Options::Force::wgmma;
      else if (s != "auto")
        throw Error(ErrorCode::invalid_argument,
                    "QKV2CTX_INT8_SCHEDULE = '" + s +
                        "' is not allowed: use buffered, resident, streaming, wgmma, auto or leave it unset");
    }
  }
  if (o.block_m == 0) {
    if (const char* v = std::getenv("QKV2CTX_INT8_BLOCK_M"); v != nullptr && *v != '\0') {
      const int m = std::atoi(v);
      if (m < 16 || m > 1024 || m % 16 != 0)
        throw Error(ErrorCode::invalid_argument, "QKV2CTX_INT8_BLOCK_M = '" + std::string(v) +
                                                     "' is not allowed: a multiple of 16 from 16 to 1024");
      o.block_m = m;
    }
  }
  if (o.tile_keys == 0) {
    if (const char* v = std::getenv("QKV2CTX_INT8_TILE_KEYS"); v != nullptr && *v != '\0') {
      const std::string s(v);
      if (s != "64" && s != "128")
        throw Error(ErrorCode::invalid_argument,
                    "QKV2CTX_INT8_TILE_KEYS = '" + s + "' is not allowed: 64 or 128 (buffered and streaming schedules)");
      o.tile_keys = std::atoi(v);
    }
  }
  return o;
}

}  // namespace

std::unique_ptr<BackendImpl> make_fused_int8_backend(const AttentionDesc& desc, const cuda::DeviceCaps& caps,
                                                     std::string* why_not, const fused_int8::Int8Options& options_in) {
  const fused_int8::Int8Options options = options_from_env(options_in);
  auto decline = [&](const std::string& why) -> std::unique_ptr<BackendImpl> {
    if (why_not != nullptr) *why_not = why;
    return nullptr;
  };
  if (desc.dtype != DType::int8)
    return decline("the fused INT8 family runs dtype int8 only, got " + std::string(to_string(desc.dtype)));
  if (!fused_int8::is_supported_head_size(desc.head_size))
    return decline("no fused INT8 kernel for head size " + std::to_string(desc.head_size) +
                   " (compiled: 32, 64, 128)");
  if (caps.sm < 80)
    return decline("the fused INT8 kernels need SM 8.0 or newer (mma.sync m16n8k32, cp.async); device " +
                   std::to_string(caps.device) + " is SM " + std::to_string(caps.sm / 10) + "." +
                   std::to_string(caps.sm % 10));
  if (options.force == Int8Options::Force::wgmma) {
    // A forced schedule that cannot run is an error, not a silent fallback (the plan says what runs).
    if (caps.sm != 90)
      throw Error(ErrorCode::unsupported, "fused INT8: the wgmma schedule was forced but needs an SM 9.0 device "
                                          "(sm_90a); device " + std::to_string(caps.device) + " is SM " +
                                              std::to_string(caps.sm / 10) + "." + std::to_string(caps.sm % 10));
    if (!fused_int8::has_wgmma_int8_kernel(desc.head_size))
      throw Error(ErrorCode::unsupported, "fused INT8: the wgmma schedule was forced but has no kernel for head size " +
                                              std::to_string(desc.head_size) + " (it has 64 and 128)");
    if (fused_int8::int8_wgmma_smem(desc.head_size) + fused_int8::kStaticSmemReserve > caps.max_smem_optin)
      throw Error(ErrorCode::unsupported, "fused INT8: the wgmma schedule needs " +
                                              std::to_string(fused_int8::int8_wgmma_smem(desc.head_size)) +
                                              " bytes of shared memory per block; the device allows " +
                                              std::to_string(caps.max_smem_optin));
  }
  if (fused_int8::streaming_smem(desc.head_size) > caps.max_smem_optin)
    return decline("the device's shared memory per block (" + std::to_string(caps.max_smem_optin) +
                   " bytes) is below the " + std::to_string(fused_int8::streaming_smem(desc.head_size)) +
                   " the INT8 kernels need");
  return std::make_unique<FusedInt8Backend>(desc, caps, options);
}

}  // namespace qkv2ctx
