// Umbrella header of the public API.
#pragma once
#include "qkv2ctx/descriptor.hpp"
#include "qkv2ctx/error.hpp"
#include "qkv2ctx/int8.hpp"
#include "qkv2ctx/plan.hpp"
#include "qkv2ctx/tensor.hpp"
#include "qkv2ctx/trt_plugin.hpp"
#include "qkv2ctx/types.hpp"
