// Placeholder until the CPU reference lands.
#include "core/backend.hpp"
#include "qkv2ctx/error.hpp"
namespace qkv2ctx {
std::unique_ptr<BackendImpl> make_cpu_backend(const AttentionDesc&) {
  throw Error(ErrorCode::unsupported, "the CPU reference backend is not implemented yet");
}
}  // namespace qkv2ctx
