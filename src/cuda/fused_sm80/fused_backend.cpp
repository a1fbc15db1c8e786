// Placeholder until the fused kernel family lands.
#include "core/backend.hpp"
namespace qkv2ctx {
std::unique_ptr<BackendImpl> make_cuda_fused_backend(const AttentionDesc&, int, std::string* why) {
  *why = "the cuda-fused backend is not implemented yet";
  return nullptr;
}
}  // namespace qkv2ctx
