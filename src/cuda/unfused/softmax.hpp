// Scale + mask + softmax over the score matrices of the unfused backend, one row per query:
// scores [B*N][Sp][Sp] (key contiguous) -> probabilities [B*N][Sp][Sp] in the GEMM-2 input type.
#pragma once
#include <cuda_runtime.h>

#include "core/backend.hpp"
#include "cuda/common/seq_table.hpp"
#include "qkv2ctx/int8.hpp"

namespace qkv2ctx::cuda {

struct SoftmaxArgs {
  DType dtype = DType::fp16;  // fp32/fp16/bf16: FP32 scores -> dtype probabilities; int8: s32 -> s8
  SeqTable seqs;              // valid keys and query rows of each sequence
  int num_heads = 0;
  int Sp = 0;                 // row length and rows per head (multiple of 16)
  const void* scores = nullptr;
  void* probs = nullptr;      // may equal scores for fp32 (in place)
  float scale = 1.0f;         // float types: 1/sqrt(H_eff), applied to the raw scores
  Int8Derived int8{};         // int8: SPEC 5.0 constants
  BoundMode bound = BoundMode::row_max;
  ProbsMode probs_mode = ProbsMode::trt;
  float* row_scales = nullptr;  // int8 probs=max_relative: [B*N][Sp] step-8 scale of each row
  StatsBlock* stats = nullptr;  // int8 fixed-bound / guarded row counters
};

// Every row of every head is written: rows that are not query rows of their sequence (padding up to
// Sp, varlen rows past the sequence's end) and rows whose sequence has no valid key get zeros, as
// do the columns of masked keys. Rows up to Sp = 1024 run one warp per row (values in registers),
// longer rows one block per row (three passes over the row, which stays in L2).
void softmax_rows(const SoftmaxArgs& args, cudaStream_t stream);

}  // namespace qkv2ctx::cuda
