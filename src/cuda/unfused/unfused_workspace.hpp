// The unfused backend's workspace: one carve used both to size it and to place its buffers.
//   StatsBlock | cuBLASLt scratch | varlen ranges [B] | Q, K [B*N][Sp][Hp] | V [B*N][Sp][Hp]
//   (INT8: V^T [B*N][Hp][Sp]) | scores [B*N][Sp][Sp] (f32 / s32) | probabilities [B*N][Sp][Sp]
//   (dtype; FP32 works in place in the scores) | context accumulators [B*N][Sp][Hp] (f32 / s32)
//   | INT8 probs=max_relative: per-row requantization scales [B*N][Sp] (f32)
// Sp and Hp are S and H rounded up to 16 (zero padded), which keeps every leading dimension and
// batch stride 16-element aligned: cuBLASLt's INT8 kernels need multiples of 4, vector loads 16 B.
#pragma once
#include <cstdint>
#include <string>

#include "cuda/common/seq_table.hpp"
#include "cuda/common/workspace_carver.hpp"
#include "qkv2ctx/descriptor.hpp"

namespace qkv2ctx::cuda {

inline constexpr int kUnfusedPad = 16;
inline constexpr std::size_t kLtWorkspaceBytes = std::size_t{4} << 20;  // cuBLASLt split-K etc.

// Sequence lengths above this cannot fit any workspace (S^2 scores); rejecting them keeps int math safe.
inline constexpr int kMaxUnfusedSeqlen = 1 << 30;

inline int round_up_to_pad(int x) {
  if (x > kMaxUnfusedSeqlen)
    throw Error(ErrorCode::invalid_argument, "problem too large: max_seqlen = " + std::to_string(x) +
                                                 " exceeds " + std::to_string(kMaxUnfusedSeqlen));
  return (x + kUnfusedPad - 1) / kUnfusedPad * kUnfusedPad;
}

struct UnfusedBuffers {
  StatsBlock* stats = nullptr;
  void* lt_workspace = nullptr;
  SeqRange* ranges = nullptr;
  void* q = nullptr;
  void* k = nullptr;
  void* v = nullptr;
  void* scores = nullptr;
  void* probs = nullptr;
  void* ctx = nullptr;
  float* row_scales = nullptr;  // INT8 probs=max_relative only
  int Sp = 0, Hp = 0;
  std::int64_t heads = 0;  // B * N
  std::size_t total_bytes = 0;
};

// base == nullptr measures only.
inline UnfusedBuffers carve_unfused_workspace(const AttentionDesc& d, int batch, int S, void* base) {
  WorkspaceCarver carver(base);
  UnfusedBuffers b;
  b.stats = carver.stats();
  b.Sp = round_up_to_pad(S);
  b.Hp = round_up_to_pad(d.head_size);
  b.heads = static_cast<std::int64_t>(batch) * d.num_heads;
  const std::size_t elt = element_size(d.dtype);
  const std::size_t acc = 4;  // f32 or s32 accumulators
  const auto heads = static_cast<std::uint64_t>(b.heads);
  const auto Sp = static_cast<std::uint64_t>(b.Sp), Hp = static_cast<std::uint64_t>(b.Hp);
  b.lt_workspace = carver.take(kLtWorkspaceBytes);
  if (d.mask == MaskMode::varlen) b.ranges = carver.take_array<SeqRange>(static_cast<std::size_t>(batch), "cu_seqlens ranges");
  const std::size_t head_bytes = checked_product({heads, Sp, Hp, elt}, "the per-head Q/K/V buffers (B*N*S*H)");
  b.q = carver.take(head_bytes);
  b.k = carver.take(head_bytes);
  b.v = carver.take(head_bytes);
  b.scores = carver.take(checked_product({heads, Sp, Sp, acc}, "the score matrices (B*N*S*S)"));
  b.probs = d.dtype == DType::fp32 ? b.scores
                                   : carver.take(checked_product({heads, Sp, Sp, elt}, "the probability matrices (B*N*S*S)"));
  b.ctx = carver.take(checked_product({heads, Sp, Hp, acc}, "the context accumulators (B*N*S*H)"));
  if (d.dtype == DType::int8 && d.probs == ProbsMode::max_relative)
    b.row_scales = static_cast<float*>(carver.take(checked_product({heads, Sp, 4}, "the per-row scales (B*N*S)")));
  b.total_bytes = carver.total();
  return b;
}

}  // namespace qkv2ctx::cuda
