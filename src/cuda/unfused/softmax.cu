// Softmax kernels of the unfused backend. See softmax.hpp.
//
// Float types (SPEC 4.2): m = max over valid keys of the raw score x, e = exp((x - m) * scale),
// p = e / sum(e), all in FP32, rounded to the probability type once.
// INT8 (SPEC 5.0 steps 2-6, exactly the CPU reference's step list): x = float(acc1) * scale_bmm1;
// shift m = row max (row_max) or p_max (fixed_bound, guarded); e = ex2.approx.ftz((x - m) * log2e);
// sum; guarded rows whose sum under/overflowed are counted and recomputed with their row max
// (fixed_bound only counts them); inv = (sum == 0 || NaN) ? 1 : 1/sum; P = sat8(RNE(e * inv * 1/dq)).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/common/cuda_check.hpp"
#include "cuda/common/int8_device.cuh"
#include "cuda/unfused/softmax.hpp"

namespace qkv2ctx::cuda {
namespace {

constexpr int kWarpRowsThreads = 128;   // 4 rows per block in the warp-per-row kernel
constexpr int kBlockRowThreads = 256;   // threads of the block-per-row kernel
constexpr int kMaxWarpRowLength = 1024; // 32 lanes x 8 chunks x 4 values in registers
constexpr std::int64_t kMaxBlocks = 1 << 20;

struct KernelArgs {
  SeqTable seqs;
  int num_heads;
  int Sp;
  const void* scores;
  void* probs;
  float scale;
  float scale_bmm1, scale_softmax, fixed_bound;
  BoundMode bound;
  ProbsMode probs_mode;
  float max_relative_scale;
  float* row_scales;
  StatsBlock* stats;
};

// ---- element access -------------------------------------------------------------------------------

// Four consecutive scores as floats: raw scores (float types) or INT8 logits (SPEC 5.0 step 2).
__device__ __forceinline__ void load4(const float* p, float (&v)[4], const KernelArgs&) {
  const float4 x = *reinterpret_cast<const float4*>(p);
  v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
}
__device__ __forceinline__ void load4(const std::int32_t* p, float (&v)[4], const KernelArgs& a) {
  const int4 x = *reinterpret_cast<const int4*>(p);
  v[0] = int8_logit(x.x, a.scale_bmm1); v[1] = int8_logit(x.y, a.scale_bmm1);
  v[2] = int8_logit(x.z, a.scale_bmm1); v[3] = int8_logit(x.w, a.scale_bmm1);
}

__device__ __forceinline__ void store4(float* p, const float (&v)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store4(__half* p, const float (&v)[4]) {
  __half2 lo = __floats2half2_rn(v[0], v[1]), hi = __floats2half2_rn(v[2], v[3]);
  uint2 bits;
  bits.x = *reinterpret_cast<unsigned*>(&lo);
  bits.y = *reinterpret_cast<unsigned*>(&hi);
  *reinterpret_cast<uint2*>(p) = bits;
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, const float (&v)[4]) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]), hi = __floats2bfloat162_rn(v[2], v[3]);
  uint2 bits;
  bits.x = *reinterpret_cast<unsigned*>(&lo);
  bits.y = *reinterpret_cast<unsigned*>(&hi);
  *reinterpret_cast<uint2*>(p) = bits;
}
// INT8 probabilities arrive as exact integers in [0, 127].
__device__ __forceinline__ void store4(std::int8_t* p, const float (&v)[4]) {
  const unsigned bits = (static_cast<unsigned>(v[0]) & 0xff) | ((static_cast<unsigned>(v[1]) & 0xff) << 8) |
                        ((static_cast<unsigned>(v[2]) & 0xff) << 16) | ((static_cast<unsigned>(v[3]) & 0xff) << 24);
  *reinterpret_cast<unsigned*>(p) = bits;
}

// ---- reductions -----------------------------------------------------------------------------------

struct MaxOp {
  static constexpr float kIdentity = -INFINITY;
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  static constexpr float kIdentity = 0.0f;
  __device__ float operator()(float a, float b) const { return a + b; }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// ---- rows ----------------------------------------------------------------------------------------

// A row held by one warp: lane l owns chunks l, l + 32, ... (4 values each) in registers.
template <typename ScoreT, int kChunks>
struct WarpRow {
  float x[kChunks][4];
  int lane, chunks;

  __device__ WarpRow(const ScoreT* src, int Sp, const KernelArgs& a) : lane(threadIdx.x & 31), chunks(Sp / 4) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int c = lane + 32 * i;
      if (c < chunks) load4(src + 4 * c, x[i], a);
    }
  }
  template <typename F>
  __device__ void for_chunks(F f) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int c = lane + 32 * i;
      if (c < chunks) f(4 * c, x[i]);
    }
  }
  template <typename Op>
  __device__ float reduce(float v, Op op) { return warp_reduce(v, op); }
  __device__ bool leader() const { return lane == 0; }
};

// A row handled by a whole block: every pass re-reads it from global memory (L2-resident).
template <typename ScoreT>
struct BlockRow {
  const ScoreT* src;
  int chunks;
  const KernelArgs& a;
  float* scratch;  // shared, >= 33 floats

  template <typename F>
  __device__ void for_chunks(F f) {
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      float v[4];
      load4(src + 4 * c, v, a);
      f(4 * c, v);
    }
  }
  template <typename Op>
  __device__ float reduce(float v, Op op) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_reduce(v, op);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
      float w = lane < warps ? scratch[lane] : Op::kIdentity;
      w = warp_reduce(w, op);
      if (lane == 0) scratch[32] = w;
    }
    __syncthreads();
    const float r = scratch[32];
    __syncthreads();  // scratch is reused by the next reduction
    return r;
  }
  __device__ bool leader() const { return threadIdx.x == 0; }
};

// ---- per-row math --------------------------------------------------------------------------------

template <typename Row, typename ProbT>
__device__ void write_zero_row(Row& row, ProbT* dst) {
  row.for_chunks([&](int j0, const float(&)[4]) {
    const float z[4] = {0.f, 0.f, 0.f, 0.f};
    store4(dst + j0, z);
  });
}

template <typename Row>
__device__ float masked_row_max(Row& row, int keys) {
  float m = -INFINITY;
  row.for_chunks([&](int j0, const float(&v)[4]) {
#pragma unroll
    for (int t = 0; t < 4; ++t)
      if (j0 + t < keys) m = fmaxf(m, v[t]);
  });
  return row.reduce(m, MaxOp{});
}

template <typename Row, typename ProbT>
__device__ void float_softmax_row(Row& row, int keys, float scale, ProbT* dst) {
  const float m = masked_row_max(row, keys);
  float sum = 0.f;
  row.for_chunks([&](int j0, const float(&v)[4]) {
#pragma unroll
    for (int t = 0; t < 4; ++t)
      if (j0 + t < keys) sum += expf((v[t] - m) * scale);
  });
  const float inv = 1.0f / row.reduce(sum, SumOp{});  // >= 1: the maximum contributes exp(0)
  row.for_chunks([&](int j0, const float(&v)[4]) {
    float p[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) p[t] = j0 + t < keys ? expf((v[t] - m) * scale) * inv : 0.f;
    store4(dst + j0, p);
  });
}

template <typename Row>
__device__ float int8_exp_sum(Row& row, int keys, float m) {
  float sum = 0.f;
  row.for_chunks([&](int j0, const float(&v)[4]) {
#pragma unroll
    for (int t = 0; t < 4; ++t)
      if (j0 + t < keys) sum += fast_exp_ftz(__fsub_rn(v[t], m));
  });
  return row.reduce(sum, SumOp{});
}

// probs=max_relative (bound row_max): Pi8 = sat8(RNE(127 e)), e = exp(x - max) in (0, 1]; the row
// sum goes into the row's step-8 scale (the same FP32 steps as the CPU reference).
template <typename Row>
__device__ void int8_max_relative_row(Row& row, int keys, const KernelArgs& a, std::int8_t* dst,
                                      float* row_scale) {
  const float m = masked_row_max(row, keys);
  const float inv = int8_math::inverse_row_sum(int8_exp_sum(row, keys, m));
  if (row.leader()) *row_scale = a.max_relative_scale * inv;
  row.for_chunks([&](int j0, const float(&v)[4]) {
    float p[4];
#pragma unroll
    for (int t = 0; t < 4; ++t)
      p[t] = j0 + t < keys ? static_cast<float>(int8_math::sat8_rne(
                                 fast_exp_ftz(__fsub_rn(v[t], m)) * int8_math::kMaxRelativeLevels))
                           : 0.f;
    store4(dst + j0, p);
  });
}

template <typename Row>
__device__ void int8_softmax_row(Row& row, int keys, const KernelArgs& a, std::int8_t* dst) {
  float m = a.bound == BoundMode::row_max ? masked_row_max(row, keys) : a.fixed_bound;
  float sum = int8_exp_sum(row, keys, m);
  if (a.bound != BoundMode::row_max && int8_math::guarded_row_needs_repair(sum)) {
    if (row.leader()) {
      const bool overflow = !(sum == sum) || sum == INFINITY;
      atomicAdd(overflow ? &a.stats->fixed_bound_overflow_rows : &a.stats->fixed_bound_underflow_rows, 1ull);
      if (a.bound == BoundMode::guarded) atomicAdd(&a.stats->repaired_rows, 1ull);
    }
    if (a.bound == BoundMode::guarded) {
      m = masked_row_max(row, keys);
      sum = int8_exp_sum(row, keys, m);
    }
  }
  const float inv = int8_math::inverse_row_sum(sum);
  row.for_chunks([&](int j0, const float(&v)[4]) {
    float p[4];
#pragma unroll
    for (int t = 0; t < 4; ++t)
      p[t] = j0 + t < keys
                 ? static_cast<float>(int8_probability(fast_exp_ftz(__fsub_rn(v[t], m)), inv, a.scale_softmax))
                 : 0.f;
    store4(dst + j0, p);
  });
}

// Dispatches one row: zeros unless it is a query row of a sequence with at least one valid key.
template <typename ScoreT, typename ProbT, typename Row>
__device__ void process_row(Row& row, std::int64_t r, const KernelArgs& a, ProbT* dst) {
  const std::int64_t bn = r / a.Sp;
  const int q = static_cast<int>(r % a.Sp);
  const SeqSpan span = a.seqs.span(static_cast<int>(bn / a.num_heads));
  if (q >= span.rows || span.keys <= 0) {
    write_zero_row(row, dst);
  } else if constexpr (std::is_same_v<ScoreT, std::int32_t>) {
    if (a.probs_mode == ProbsMode::max_relative) int8_max_relative_row(row, span.keys, a, dst, a.row_scales + r);
    else int8_softmax_row(row, span.keys, a, dst);
  } else {
    float_softmax_row(row, span.keys, a.scale, dst);
  }
}

template <typename ScoreT, typename ProbT, int kChunks>
__global__ void __launch_bounds__(kWarpRowsThreads) softmax_warp_rows_kernel(KernelArgs a) {
  const std::int64_t rows = static_cast<std::int64_t>(a.seqs.batch) * a.num_heads * a.Sp;
  const int warps_per_block = blockDim.x / 32;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  const auto* scores = static_cast<const ScoreT*>(a.scores);
  auto* probs = static_cast<ProbT*>(a.probs);
  for (std::int64_t r = first; r < rows; r += step) {
    WarpRow<ScoreT, kChunks> row(scores + r * a.Sp, a.Sp, a);
    process_row<ScoreT>(row, r, a, probs + r * a.Sp);
  }
}

template <typename ScoreT, typename ProbT>
__global__ void __launch_bounds__(kBlockRowThreads) softmax_block_rows_kernel(KernelArgs a) {
  __shared__ float scratch[33];
  const std::int64_t rows = static_cast<std::int64_t>(a.seqs.batch) * a.num_heads * a.Sp;
  const auto* scores = static_cast<const ScoreT*>(a.scores);
  auto* probs = static_cast<ProbT*>(a.probs);
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    BlockRow<ScoreT> row{scores + r * a.Sp, a.Sp / 4, a, scratch};
    process_row<ScoreT>(row, r, a, probs + r * a.Sp);
  }
}

template <typename ScoreT, typename ProbT>
void launch(const KernelArgs& a, cudaStream_t stream) {
  const std::int64_t rows = static_cast<std::int64_t>(a.seqs.batch) * a.num_heads * a.Sp;
  if (a.Sp > kMaxWarpRowLength) {
    const auto blocks = static_cast<unsigned>(std::min(rows, kMaxBlocks));
    softmax_block_rows_kernel<ScoreT, ProbT><<<blocks, kBlockRowThreads, 0, stream>>>(a);
    QKV2CTX_CHECK_LAUNCH("softmax_block_rows_kernel");
    return;
  }
  const std::int64_t rows_per_block = kWarpRowsThreads / 32;
  const auto blocks = static_cast<unsigned>(std::min((rows + rows_per_block - 1) / rows_per_block, kMaxBlocks));
  const int chunks = (a.Sp / 4 + 31) / 32;  // per lane
  if (chunks <= 1) softmax_warp_rows_kernel<ScoreT, ProbT, 1><<<blocks, kWarpRowsThreads, 0, stream>>>(a);
  else if (chunks <= 2) softmax_warp_rows_kernel<ScoreT, ProbT, 2><<<blocks, kWarpRowsThreads, 0, stream>>>(a);
  else if (chunks <= 4) softmax_warp_rows_kernel<ScoreT, ProbT, 4><<<blocks, kWarpRowsThreads, 0, stream>>>(a);
  else softmax_warp_rows_kernel<ScoreT, ProbT, 8><<<blocks, kWarpRowsThreads, 0, stream>>>(a);
  QKV2CTX_CHECK_LAUNCH("softmax_warp_rows_kernel");
}

}  // namespace

void softmax_rows(const SoftmaxArgs& s, cudaStream_t stream) {
  if (static_cast<std::int64_t>(s.seqs.batch) * s.num_heads * s.Sp == 0) return;
  if (s.Sp % 16 != 0) throw Error(ErrorCode::internal, "softmax_rows: row length must be a multiple of 16");
  KernelArgs a{s.seqs, s.num_heads, s.Sp, s.scores, s.probs, s.scale,
               s.int8.scale_bmm1, s.int8.scale_softmax, s.int8.fixed_bound, s.bound,
               s.probs_mode, s.int8.max_relative_scale, s.row_scales, s.stats};
  switch (s.dtype) {
    case DType::fp32: launch<float, float>(a, stream); break;
    case DType::fp16: launch<float, __half>(a, stream); break;
    case DType::bf16: launch<float, __nv_bfloat16>(a, stream); break;
    case DType::int8: launch<std::int32_t, std::int8_t>(a, stream); break;
    default: throw Error(ErrorCode::internal, "softmax_rows: unexpected dtype");
  }
}

}  // namespace qkv2ctx::cuda
