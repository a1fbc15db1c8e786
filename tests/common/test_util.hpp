// Shared test helpers: fresh seeds, random inputs of every dtype, host tensors, conformance data.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "qkv2ctx/qkv2ctx.hpp"

namespace qkv2ctx::test {

// A fresh seed per call, reproducible through QKV2CTX_TEST_SEED (the base seed is printed once).
std::uint64_t fresh_seed();

// Host buffer holding `numel` elements of `dtype`.
struct HostTensor {
  DType dtype = DType::fp32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;
  HostTensor() = default;
  HostTensor(DType dt, std::vector<std::int64_t> dims);
  std::int64_t numel() const;
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }
  TensorView view() const;  // host view with this shape
  double get(std::int64_t i) const;      // element as double (int8 as its integer value)
  void set(std::int64_t i, double v);    // rounds to the dtype (RNE, saturating for int8)
  // Random values: floats uniform in [-amplitude, amplitude]; int8 uniform in [-int_amax, int_amax].
  void fill_random(std::uint64_t seed, double amplitude = 1.0, int int_amax = 127);
  void fill_byte(std::uint8_t b);  // poison
};

// Random lengths in [lo, hi] and their prefix sums.
std::vector<std::int32_t> random_lengths(std::uint64_t seed, int batch, int lo, int hi);
std::vector<std::int32_t> prefix_sums(const std::vector<std::int32_t>& lens);

bool have_cuda_device();

// Runs `fn` and expects a qkv2ctx::Error of `code` whose message contains `fragment` (a test
// failure otherwise); returns the message.
std::string expect_error(const std::function<void()>& fn, const std::string& fragment,
                         ErrorCode code = ErrorCode::invalid_argument);

// Path of a conformance folder under tests/data/conformance.
std::string conformance_dir(const std::string& name);

}  // namespace qkv2ctx::test

// Skips the test, with the reason, when no CUDA device is present.
#define QKV2CTX_REQUIRE_GPU()                                                                     \
  do {                                                                                            \
    if (!::qkv2ctx::test::have_cuda_device())                                                     \
      GTEST_SKIP() << "no CUDA device present (GPU tests run on a GPU machine: bench/device.sh)"; \
  } while (0)
