// Fused INT8 kernels for head size 128 (both schedules). One file per head size so they compile in parallel.
#include "cuda/fused_sm80/int8_launch.cuh"

namespace qkv2ctx::fused_int8 {
void launch_int8_d128(const Int8Params& p, const Int8Launch& l, cudaStream_t stream) {
  launch_int8_instance<128>(p, l, stream);
}
}  // namespace qkv2ctx::fused_int8
