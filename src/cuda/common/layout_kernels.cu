// Gather / scatter kernels between the user's layouts and padded per-head buffers. Addressing
// comes from core/indexing.hpp only; all offsets are 64-bit (SPEC R8).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "core/indexing.hpp"
#include "cuda/common/cuda_check.hpp"
#include "cuda/common/int8_device.cuh"
#include "cuda/common/layout_kernels.hpp"

namespace qkv2ctx::cuda {
namespace {

// Grid-stride loops over rows: a bounded grid covers any number of rows.
constexpr std::int64_t kMaxBlocks = 1 << 20;

unsigned grid_for(std::int64_t work_items) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(work_items, kMaxBlocks)));
}

// One block per padded row r = bn * Sp + s of the per-head buffers; threads over the head dim.
template <typename Word>
__global__ void gather_rows_kernel(HeadGeometry g, SeqTable seqs, const Word* __restrict__ qkv,
                                   Word* __restrict__ q, Word* __restrict__ k, Word* __restrict__ v,
                                   bool gather_v) {
  const std::int64_t rows = static_cast<std::int64_t>(seqs.batch) * g.num_heads * g.Sp;
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int s = static_cast<int>(r % g.Sp);
    const std::int64_t bn = r / g.Sp;
    const int b = static_cast<int>(bn / g.num_heads), n = static_cast<int>(bn % g.num_heads);
    const SeqSpan span = seqs.span(b);
    const std::int64_t t = span.row0 + static_cast<std::int64_t>(s) * span.row_step;
    const bool q_row = s < span.rows, kv_row = s < span.keys;
    const std::int64_t dst = r * g.Hp;
    for (int d = threadIdx.x; d < g.Hp; d += blockDim.x) {
      const bool in_head = d < g.head_size;
      q[dst + d] = (q_row && in_head)
                       ? qkv[qkv_offset(g.layout, t, 0, n, d, g.num_heads, g.head_size, g.num_tokens)]
                       : Word(0);
      k[dst + d] = (kv_row && in_head)
                       ? qkv[qkv_offset(g.layout, t, 1, n, d, g.num_heads, g.head_size, g.num_tokens)]
                       : Word(0);
      if (gather_v)
        v[dst + d] = (kv_row && in_head)
                         ? qkv[qkv_offset(g.layout, t, 2, n, d, g.num_heads, g.head_size, g.num_tokens)]
                         : Word(0);
    }
  }
}

// V transposed into [B*N][Hp][Sp] through a 32x32 shared-memory tile, so that both the reads
// (along the head dim) and the writes (along the key dim) are contiguous.
constexpr int kTile = 32, kTileRowsPerPass = 8;

template <typename Word>
__global__ void __launch_bounds__(kTile * kTileRowsPerPass)
gather_v_transposed_kernel(HeadGeometry g, SeqTable seqs, const Word* __restrict__ qkv,
                           Word* __restrict__ vt) {
  __shared__ Word tile[kTile][kTile + 1];
  const int s_tiles = (g.Sp + kTile - 1) / kTile, d_tiles = (g.Hp + kTile - 1) / kTile;
  const std::int64_t tiles = static_cast<std::int64_t>(seqs.batch) * g.num_heads * s_tiles * d_tiles;
  for (std::int64_t tile_id = blockIdx.x; tile_id < tiles; tile_id += gridDim.x) {
    const std::int64_t bn = tile_id / (s_tiles * d_tiles);
    const int within = static_cast<int>(tile_id % (s_tiles * d_tiles));
    const int s0 = (within / d_tiles) * kTile, d0 = (within % d_tiles) * kTile;
    const int b = static_cast<int>(bn / g.num_heads), n = static_cast<int>(bn % g.num_heads);
    const SeqSpan span = seqs.span(b);
    for (int i = threadIdx.y; i < kTile; i += kTileRowsPerPass) {
      const int s = s0 + i, d = d0 + threadIdx.x;
      Word val = 0;
      if (s < span.keys && d < g.head_size) {
        const std::int64_t t = span.row0 + static_cast<std::int64_t>(s) * span.row_step;
        val = qkv[qkv_offset(g.layout, t, 2, n, d, g.num_heads, g.head_size, g.num_tokens)];
      }
      tile[i][threadIdx.x] = val;
    }
    __syncthreads();
    for (int i = threadIdx.y; i < kTile; i += kTileRowsPerPass) {
      const int d = d0 + i, s = s0 + threadIdx.x;
      if (d < g.Hp && s < g.Sp) vt[(bn * g.Hp + d) * g.Sp + s] = tile[threadIdx.x][i];
    }
    __syncthreads();
  }
}

__device__ __forceinline__ void store_out(float* p, float x, float) { *p = x; }
__device__ __forceinline__ void store_out(__half* p, float x, float) { *p = __float2half_rn(x); }
__device__ __forceinline__ void store_out(__nv_bfloat16* p, float x, float) { *p = __float2bfloat16_rn(x); }
__device__ __forceinline__ void store_out(std::int8_t* p, std::int32_t acc, float scale_bmm2) {
  *p = static_cast<std::int8_t>(int8_requantize(acc, scale_bmm2));
}

template <typename Acc, typename Out>
__global__ void scatter_rows_kernel(HeadGeometry g, SeqTable seqs, const Acc* __restrict__ ctx,
                                    Out* __restrict__ out, float scale_bmm2,
                                    const float* __restrict__ row_scales) {
  const std::int64_t rows = static_cast<std::int64_t>(seqs.batch) * g.num_heads * g.Sp;
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int s = static_cast<int>(r % g.Sp);
    const std::int64_t bn = r / g.Sp;
    const int b = static_cast<int>(bn / g.num_heads), n = static_cast<int>(bn % g.num_heads);
    const SeqSpan span = seqs.span(b);
    if (s >= span.rows) continue;
    const std::int64_t t = span.row0 + static_cast<std::int64_t>(s) * span.row_step;
    const float scale = row_scales != nullptr ? row_scales[r] : scale_bmm2;
    for (int d = threadIdx.x; d < g.head_size; d += blockDim.x)
      store_out(out + out_offset(g.layout, t, n, d, g.num_heads, g.head_size, g.num_tokens),
                ctx[r * g.Hp + d], scale);
  }
}

unsigned threads_for_head(int Hp) { return static_cast<unsigned>(std::min(128, (Hp + 31) / 32 * 32)); }

template <typename Word>
void launch_gather(const HeadGeometry& g, const SeqTable& seqs, const void* qkv, void* q, void* k,
                   void* v, bool v_transposed, cudaStream_t stream) {
  const std::int64_t rows = static_cast<std::int64_t>(seqs.batch) * g.num_heads * g.Sp;
  const auto* src = static_cast<const Word*>(qkv);
  gather_rows_kernel<Word><<<grid_for(rows), threads_for_head(g.Hp), 0, stream>>>(
      g, seqs, src, static_cast<Word*>(q), static_cast<Word*>(k), static_cast<Word*>(v), !v_transposed);
  QKV2CTX_CHECK_LAUNCH("gather_rows_kernel");
  if (v_transposed) {
    const std::int64_t tiles = static_cast<std::int64_t>(seqs.batch) * g.num_heads *
                               ((g.Sp + kTile - 1) / kTile) * ((g.Hp + kTile - 1) / kTile);
    gather_v_transposed_kernel<Word><<<grid_for(tiles), dim3(kTile, kTileRowsPerPass), 0, stream>>>(
        g, seqs, src, static_cast<Word*>(v));
    QKV2CTX_CHECK_LAUNCH("gather_v_transposed_kernel");
  }
}

template <typename Acc, typename Out>
void launch_scatter(const HeadGeometry& g, const SeqTable& seqs, const void* ctx, void* out,
                    float scale_bmm2, const float* row_scales, cudaStream_t stream) {
  const std::int64_t rows = static_cast<std::int64_t>(seqs.batch) * g.num_heads * g.Sp;
  scatter_rows_kernel<Acc, Out><<<grid_for(rows), threads_for_head(g.Hp), 0, stream>>>(
      g, seqs, static_cast<const Acc*>(ctx), static_cast<Out*>(out), scale_bmm2, row_scales);
  QKV2CTX_CHECK_LAUNCH("scatter_rows_kernel");
}

}  // namespace

void gather_qkv(const HeadGeometry& g, const SeqTable& seqs, const void* qkv, void* q, void* k,
                void* v, bool v_transposed, cudaStream_t stream) {
  if (static_cast<std::int64_t>(seqs.batch) * g.num_heads * g.Sp == 0) return;
  switch (element_size(g.dtype)) {
    case 4: launch_gather<std::uint32_t>(g, seqs, qkv, q, k, v, v_transposed, stream); break;
    case 2: launch_gather<std::uint16_t>(g, seqs, qkv, q, k, v, v_transposed, stream); break;
    default: launch_gather<std::uint8_t>(g, seqs, qkv, q, k, v, v_transposed, stream); break;
  }
}

void scatter_context(const HeadGeometry& g, const SeqTable& seqs, const void* ctx, void* out,
                     float scale_bmm2, const float* row_scales, cudaStream_t stream) {
  if (static_cast<std::int64_t>(seqs.batch) * g.num_heads * g.Sp == 0) return;
  switch (g.dtype) {
    case DType::fp32: launch_scatter<float, float>(g, seqs, ctx, out, scale_bmm2, row_scales, stream); break;
    case DType::fp16: launch_scatter<float, __half>(g, seqs, ctx, out, scale_bmm2, row_scales, stream); break;
    case DType::bf16: launch_scatter<float, __nv_bfloat16>(g, seqs, ctx, out, scale_bmm2, row_scales, stream); break;
    case DType::int8: launch_scatter<std::int32_t, std::int8_t>(g, seqs, ctx, out, scale_bmm2, row_scales, stream); break;
    default: throw Error(ErrorCode::internal, "scatter_context: unexpected dtype");
  }
}

}  // namespace qkv2ctx::cuda
