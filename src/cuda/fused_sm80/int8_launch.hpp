// Host entry point of the fused INT8 kernels: one launch for (head size, schedule). Implemented per
// head size in int8_d32.cu / int8_d64.cu / int8_d128.cu (they compile in parallel).
#pragma once
#include <cuda_runtime.h>

#include "cuda/fused_sm80/int8_params.hpp"

namespace qkv2ctx::fused_int8 {

// Launches launch.ctas CTAs of the chosen schedule (at least one: CTA 0 writes the StatsBlock).
// Throws Error(unsupported) for a head size without a kernel, Error(cuda_error) on a launch error.
void launch_int8(const Int8Params& params, const Int8Launch& launch, int head_size, cudaStream_t stream);

void launch_int8_d32(const Int8Params& params, const Int8Launch& launch, cudaStream_t stream);
void launch_int8_d64(const Int8Params& params, const Int8Launch& launch, cudaStream_t stream);
void launch_int8_d128(const Int8Params& params, const Int8Launch& launch, cudaStream_t stream);

}  // namespace qkv2ctx::fused_int8
