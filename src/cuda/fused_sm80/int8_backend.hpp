// The fused sm_80 INT8 family as a backend (int8_params.hpp describes the kernels). fused_backend.cpp
// routes dtype int8 here.
#pragma once
#include <memory>
#include <string>

#include "core/backend.hpp"
#include "cuda/common/device.hpp"
#include "cuda/fused_sm80/int8_params.hpp"

namespace qkv2ctx {

// Returns nullptr and sets *why_not when the family cannot run `desc` on this device (dtype other than
// int8, head size without a kernel, SM below 8.0). `options` forces a schedule or tile size (tests and
// measurements); the defaults choose per run.
std::unique_ptr<BackendImpl> make_fused_int8_backend(const AttentionDesc& desc, const cuda::DeviceCaps& caps,
                                                     std::string* why_not,
                                                     const fused_int8::Int8Options& options = {});

}  // namespace qkv2ctx
