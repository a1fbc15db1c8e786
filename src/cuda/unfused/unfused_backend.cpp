// Placeholder until the cuBLASLt unfused backend lands.
#include "core/backend.hpp"
namespace qkv2ctx {
std::unique_ptr<BackendImpl> make_cuda_unfused_backend(const AttentionDesc&, int, std::string* why) {
  *why = "the cuda-unfused backend is not implemented yet";
  return nullptr;
}
}  // namespace qkv2ctx
