// Capabilities of the device a plan is made for.
#pragma once
#include <string>

namespace qkv2ctx::cuda {

struct DeviceCaps {
  int device = 0;
  int sm = 0;              // 10 * major + minor
  int num_sms = 0;
  int max_smem_optin = 0;  // bytes of shared memory a block may opt into
  int l2_bytes = 0;
  std::string name;
};

// Throws Error(invalid_argument) if the ordinal does not exist.
DeviceCaps query_device(int device);

// For backend factories: false (with *why_not naming the ordinal and the count found) when the
// device does not exist, e.g. a CUDA build on a machine without a GPU.
bool device_exists(int device, std::string* why_not);

}  // namespace qkv2ctx::cuda
