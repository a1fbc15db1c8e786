// The cuBLASLt unfused backend (TensorRT's fallback design, SPEC 4.2 / 5.5, done for every dtype,
// layout and mask mode): gather Q/K/V into padded per-head buffers, QK^T as one strided-batched
// GEMM, scale + mask + softmax kernel, PV as a second strided-batched GEMM, scatter to the output
// layout. No allocation and no host synchronization in run(); everything lives in the workspace.
#include <cuda_runtime.h>

#include <cmath>
#include <memory>
#include <string>

#include "core/backend.hpp"
#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device.hpp"
#include "cuda/common/device_guard.hpp"
#include "cuda/common/layout_kernels.hpp"
#include "cuda/common/run_checks.hpp"
#include "cuda/common/stats.hpp"
#include "cuda/unfused/lt_gemm.hpp"
#include "cuda/unfused/softmax.hpp"
#include "cuda/unfused/unfused_workspace.hpp"
#include "qkv2ctx/int8.hpp"

namespace qkv2ctx {
namespace cuda {
namespace {

// The SM every CUDA backend requires (SPEC R7).
constexpr int kMinSm = 80;

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::fp32: return CUDA_R_32F;
    case DType::fp16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    default: return CUDA_R_8I;
  }
}

class UnfusedBackend final : public BackendImpl {
 public:
  UnfusedBackend(const AttentionDesc& desc, const DeviceCaps& caps)
      : desc_(desc), caps_(caps), int8_(desc.dtype == DType::int8) {
    if (int8_) int8_scales_ = derive_int8_scales(desc.int8, desc.effective_scale_head_size());
    // TensorRT's host arithmetic: rsqrt(H_eff) as 1 / sqrtf in FP32.
    scale_ = 1.0f / std::sqrt(static_cast<float>(desc.effective_scale_head_size()));
    ScopedDevice on(caps_.device);
    gemm_ = std::make_unique<LtGemmRunner>(kLtWorkspaceBytes);
  }

  Backend kind() const override { return Backend::cuda_unfused; }
  MemSpace memory_space() const override { return MemSpace::cuda; }

  std::string describe() const override {
    std::string what;
    switch (desc_.dtype) {
      case DType::fp32: what = "FP32 GEMMs with CUBLAS_COMPUTE_32F (no TF32)"; break;
      case DType::fp16: what = "FP16 GEMMs with FP32 accumulation, probabilities rounded to FP16"; break;
      case DType::bf16: what = "BF16 GEMMs with FP32 accumulation, probabilities rounded to BF16"; break;
      default:
        what = std::string("s8 x s8 -> s32 GEMMs, SPEC 5.0 INT8 softmax with bound ") +
               std::string(to_string(desc_.bound)) + ", probs " + std::string(to_string(desc_.probs));
    }
    return "cuBLASLt unfused: GEMM + softmax kernel (" + what +
           "; FP32 softmax math, warp per row up to S = 1024, block per row beyond; workspace holds "
           "B*N*S*S scores; device " + std::to_string(caps_.device) + " " + caps_.name + " sm_" +
           std::to_string(caps_.sm) + ")";
  }

  std::size_t workspace_bytes(const ProblemSize& size) const override {
    return carve_unfused_workspace(desc_, size.batch, size.max_seqlen, nullptr).total_bytes;
  }

  // Whether cuBLASLt has algorithms for both GEMMs of this dtype on the device (INT8 in particular).
  bool probe(std::string* why_not) const {
    ScopedDevice on(caps_.device);
    const int Sp = 128, Hp = round_up_to_pad(desc_.head_size);
    for (const GemmShape& g : {scores_gemm(Sp, Hp, 1), context_gemm(Sp, Hp, 1)}) {
      if (!gemm_->supported(g)) {
        *why_not = "cuBLASLt offers no algorithm for the GEMM " + g.describe() + " on device " +
                   std::to_string(caps_.device) + " (" + caps_.name + ", sm_" + std::to_string(caps_.sm) + ")";
        return false;
      }
    }
    return true;
  }

  void run(const RunParams& p) const override {
    ScopedDevice on(caps_.device);
    check_alignment("qkv", p.qkv);
    check_alignment("out", p.out);
    const auto stream = static_cast<cudaStream_t>(p.stream);
    const UnfusedBuffers buf = carve_unfused_workspace(desc_, p.batch, p.max_seqlen, p.workspace);
    reset_stats(buf.stats, stream);

    SeqTable seqs;
    seqs.mask = desc_.mask;
    seqs.layout = desc_.layout;
    seqs.batch = p.batch;
    seqs.S = p.max_seqlen;
    seqs.seq_lens = p.seq_lens;
    seqs.ranges = buf.ranges;
    if (desc_.mask == MaskMode::varlen)
      resolve_cu_seqlens(p.cu_seqlens, p.batch, p.max_seqlen, p.num_tokens, buf.ranges, buf.stats, stream);
    if (buf.heads == 0) return;

    HeadGeometry g;
    g.dtype = desc_.dtype;
    g.layout = desc_.layout;
    g.num_heads = desc_.num_heads;
    g.head_size = desc_.head_size;
    g.num_tokens = p.num_tokens;
    g.Sp = buf.Sp;
    g.Hp = buf.Hp;
    // INT8's second GEMM needs V transposed (cuBLASLt's s8 kernels take only the TN form).
    gather_qkv(g, seqs, p.qkv, buf.q, buf.k, buf.v, /*v_transposed=*/int8_, stream);

    gemm_->run(scores_gemm(buf.Sp, buf.Hp, buf.heads), buf.k, buf.q, buf.scores, buf.lt_workspace, stream);

    SoftmaxArgs sm;
    sm.dtype = desc_.dtype;
    sm.seqs = seqs;
    sm.num_heads = desc_.num_heads;
    sm.Sp = buf.Sp;
    sm.scores = buf.scores;
    sm.probs = buf.probs;
    sm.scale = scale_;
    sm.int8 = int8_scales_;
    sm.bound = desc_.bound;
    sm.probs_mode = desc_.probs;
    sm.row_scales = buf.row_scales;
    sm.stats = buf.stats;
    softmax_rows(sm, stream);

    gemm_->run(context_gemm(buf.Sp, buf.Hp, buf.heads), buf.v, buf.probs, buf.ctx, buf.lt_workspace, stream);
    scatter_context(g, seqs, buf.ctx, p.out, int8_scales_.scale_bmm2, buf.row_scales, stream);
  }

  RunStats read_stats(const Workspace& ws, void* stream) const override {
    ScopedDevice on(caps_.device);
    return cuda::read_stats(ws.data, static_cast<cudaStream_t>(stream));
  }

 private:
  // Scores (column-major keys x queries = row-major [query][key]) = K^T Q per head:
  // A = K [Sp][Hp] (column-major Hp x Sp, transposed), B = Q likewise (not transposed), k = Hp.
  GemmShape scores_gemm(int Sp, int Hp, std::int64_t heads) const {
    GemmShape s;
    s.a_type = s.b_type = cuda_type(desc_.dtype);
    s.d_type = int8_ ? CUDA_R_32I : CUDA_R_32F;
    s.compute = int8_ ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F;
    s.op_a = CUBLAS_OP_T;
    s.op_b = CUBLAS_OP_N;
    s.m = Sp; s.n = Sp; s.k = Hp;
    s.lda = Hp; s.ldb = Hp; s.ldd = Sp;
    s.stride_a = s.stride_b = static_cast<std::int64_t>(Sp) * Hp;
    s.stride_d = static_cast<std::int64_t>(Sp) * Sp;
    s.batch = heads;
    return s;
  }

  // Context (column-major Hp x queries = row-major [query][d]) = V P per head. Float types:
  // A = V [Sp][Hp] as column-major Hp x Sp (N); INT8: A = V^T [Hp][Sp] as column-major Sp x Hp (T).
  // B = P [query][key] as column-major keys x queries (N), k = Sp.
  GemmShape context_gemm(int Sp, int Hp, std::int64_t heads) const {
    GemmShape s;
    s.a_type = s.b_type = cuda_type(desc_.dtype);
    s.d_type = int8_ ? CUDA_R_32I : CUDA_R_32F;
    s.compute = int8_ ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F;
    s.op_a = int8_ ? CUBLAS_OP_T : CUBLAS_OP_N;
    s.op_b = CUBLAS_OP_N;
    s.m = Hp; s.n = Sp; s.k = Sp;
    s.lda = int8_ ? Sp : Hp; s.ldb = Sp; s.ldd = Hp;
    s.stride_a = static_cast<std::int64_t>(Sp) * Hp;
    s.stride_b = static_cast<std::int64_t>(Sp) * Sp;
    s.stride_d = static_cast<std::int64_t>(Sp) * Hp;
    s.batch = heads;
    return s;
  }

  AttentionDesc desc_;
  DeviceCaps caps_;
  bool int8_;
  Int8Derived int8_scales_{};
  float scale_ = 1.0f;
  std::unique_ptr<LtGemmRunner> gemm_;  // thread-safe; its cache is internal state, not plan state
};

}  // namespace
}  // namespace cuda

std::unique_ptr<BackendImpl> make_cuda_unfused_backend(const AttentionDesc& desc, int device,
                                                       std::string* why_not) {
  if (!cuda::device_exists(device, why_not)) return nullptr;
  const cuda::DeviceCaps caps = cuda::query_device(device);
  if (caps.sm < cuda::kMinSm) {
    *why_not = "device " + std::to_string(device) + " (" + caps.name + ") is sm_" + std::to_string(caps.sm) +
               "; the CUDA backends need sm_80 or newer";
    return nullptr;
  }
  auto backend = std::make_unique<cuda::UnfusedBackend>(desc, caps);
  if (!backend->probe(why_not)) return nullptr;
  return backend;
}

}  // namespace qkv2ctx
