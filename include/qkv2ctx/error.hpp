// Typed errors. Every error thrown by qkv2ctx is a qkv2ctx::Error; its message names the field, the
// value and what is allowed.
#pragma once
#include <stdexcept>
#include <string>

namespace qkv2ctx {

enum class ErrorCode {
  invalid_argument,  // a descriptor field, tensor, scale or length that is not allowed
  unsupported,       // a valid combination this build or device cannot run (the message says why)
  cuda_error,        // a CUDA / cuBLAS call failed (the message names the call and location)
  io_error,          // files (CLI, .npy)
  internal,          // a bug in qkv2ctx
};

std::string_view to_string(ErrorCode c);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace qkv2ctx
