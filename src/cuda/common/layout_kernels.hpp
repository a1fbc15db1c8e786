// Packing between the user's tensors (any layout / mask mode, SPEC 3) and padded per-head buffers
// [B*N][Sp][Hp] (row = query/key position, Sp and Hp multiples of 16, zero padded), the form the
// strided-batched GEMMs of the unfused backend and other simple kernels want.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/common/seq_table.hpp"
#include "qkv2ctx/types.hpp"

namespace qkv2ctx::cuda {

struct HeadGeometry {
  DType dtype = DType::fp16;
  Layout layout = Layout::trt;
  int num_heads = 0;
  int head_size = 0;
  std::int64_t num_tokens = 0;  // rows T of qkv / out (chw32 addressing needs it)
  int Sp = 0;                   // padded rows per head buffer (>= S, multiple of 16)
  int Hp = 0;                   // padded head size (>= H, multiple of 16)
};

// Copies Q, K, V of every (sequence, head) into q/k/v [B*N][Sp][Hp] (v_transposed: v is
// [B*N][Hp][Sp]). Q rows >= the sequence's query rows, K/V rows >= its valid keys and columns >= H
// are written as zeros (so padding tokens holding garbage, even NaN, never reach a GEMM). Pure bit
// copies: works for every dtype.
void gather_qkv(const HeadGeometry& g, const SeqTable& seqs, const void* qkv, void* q, void* k,
                void* v, bool v_transposed, cudaStream_t stream);

// Writes context rows from ctx [B*N][Sp][Hp] into `out` (the user's layout), for the query rows of
// each sequence only (varlen tokens outside every sequence are left untouched).
//  - float ctx (fp32/fp16/bf16 output): rounded to the dtype (RNE);
//  - int32 ctx (int8 output): SPEC 5.0 step 8, sat8(RNE(float(acc2) * scale)), scale = scale_bmm2,
//    or row_scales[row] per row when given (INT8 probs=max_relative; [B*N][Sp]).
void scatter_context(const HeadGeometry& g, const SeqTable& seqs, const void* ctx, void* out,
                     float scale_bmm2, const float* row_scales, cudaStream_t stream);

}  // namespace qkv2ctx::cuda
