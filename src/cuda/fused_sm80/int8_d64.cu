// Fused INT8 kernels for head size 64 (both schedules). One file per head size so they compile in parallel.
#include "cuda/fused_sm80/int8_launch.cuh"

namespace qkv2ctx::fused_int8 {
void launch_int8_d64(const Int8Params& p, const Int8Launch& l, cudaStream_t stream) {
  launch_int8_instance<64>(p, l, stream);
}
}  // namespace qkv2ctx::fused_int8
