// Built only without CUDA: the CUDA backend factories say why they cannot run.
#include "core/backend.hpp"

namespace qkv2ctx {
std::unique_ptr<BackendImpl> make_cuda_unfused_backend(const AttentionDesc&, int, std::string* why) {
  *why = "qkv2ctx was built without CUDA (QKV2CTX_CUDA=OFF or no nvcc)";
  return nullptr;
}
std::unique_ptr<BackendImpl> make_cuda_fused_backend(const AttentionDesc&, int, std::string* why) {
  *why = "qkv2ctx was built without CUDA (QKV2CTX_CUDA=OFF or no nvcc)";
  return nullptr;
}
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_device_summary() { return ""; }
}  // namespace qkv2ctx
