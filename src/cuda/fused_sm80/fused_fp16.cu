// FP16 instances of the fused sm_80 kernel: head sizes {32, 64, 80, 96, 128} x tiles {m64, m128}
// (kSupportedHeadSizes x TileShape; fused_launch.cuh's switch is the list). One file per dtype so the
// two compile in parallel.
#include "cuda/fused_sm80/fused_launch.cuh"

namespace qkv2ctx::fused_sm80 {
void launch_fused_fp16(const FusedParams& p, int head_size, TileShape tile, cudaStream_t stream) {
  launch_fused_typed<__half>(p, head_size, tile, stream);
}
}  // namespace qkv2ctx::fused_sm80
