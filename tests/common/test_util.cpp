#include "common/test_util.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "core/backend.hpp"
#include "qkv2ctx/detail/int8_math.hpp"
#include "util/half.hpp"

namespace qkv2ctx::test {

std::uint64_t fresh_seed() {
  static std::uint64_t base = [] {
    std::uint64_t b;
    if (const char* env = std::getenv("QKV2CTX_TEST_SEED")) b = std::strtoull(env, nullptr, 10);
    else b = std::random_device{}() ^ (static_cast<std::uint64_t>(std::random_device{}()) << 32);
    std::cout << "[qkv2ctx] base seed QKV2CTX_TEST_SEED=" << b << std::endl;
    return b;
  }();
  static std::uint64_t counter = 0;
  return base + 0x9E3779B97F4A7C15ull * ++counter;
}

HostTensor::HostTensor(DType dt, std::vector<std::int64_t> dims) : dtype(dt), shape(std::move(dims)) {
  bytes.resize(static_cast<std::size_t>(numel()) * element_size(dtype));
}

std::int64_t HostTensor::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

TensorView HostTensor::view() const {
  TensorView v;
  v.data = const_cast<std::uint8_t*>(bytes.data());
  v.dtype = dtype;
  v.space = MemSpace::host;
  v.rank = static_cast<int>(shape.size());
  std::int64_t stride = 1;
  for (int k = v.rank - 1; k >= 0; --k) {
    v.shape[k] = shape[k];
    v.strides[k] = stride;
    stride *= shape[k];
  }
  return v;
}

double HostTensor::get(std::int64_t i) const {
  const std::uint8_t* p = bytes.data() + i * element_size(dtype);
  switch (dtype) {
    case DType::fp32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::int32: { std::int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::fp16: { std::uint16_t h; std::memcpy(&h, p, 2); return util::half_to_float(h); }
    case DType::bf16: { std::uint16_t h; std::memcpy(&h, p, 2); return util::bf16_to_float(h); }
    case DType::int8: return static_cast<std::int8_t>(*p);
  }
  return 0;
}

void HostTensor::set(std::int64_t i, double v) {
  std::uint8_t* p = bytes.data() + i * element_size(dtype);
  switch (dtype) {
    case DType::fp32: { float f = static_cast<float>(v); std::memcpy(p, &f, 4); break; }
    case DType::int32: { std::int32_t x = static_cast<std::int32_t>(v); std::memcpy(p, &x, 4); break; }
    case DType::fp16: { std::uint16_t h = util::float_to_half(static_cast<float>(v)); std::memcpy(p, &h, 2); break; }
    case DType::bf16: { std::uint16_t h = util::float_to_bf16(static_cast<float>(v)); std::memcpy(p, &h, 2); break; }
    case DType::int8: *p = static_cast<std::uint8_t>(static_cast<std::int8_t>(int8_math::sat8_rne(static_cast<float>(v)))); break;
  }
}

void HostTensor::fill_random(std::uint64_t seed, double amplitude, int int_amax) {
  std::mt19937_64 rng(seed);
  if (dtype == DType::int8 || dtype == DType::int32) {
    std::uniform_int_distribution<int> dist(-int_amax, int_amax);
    for (std::int64_t i = 0; i < numel(); ++i) set(i, dist(rng));
  } else {
    std::uniform_real_distribution<double> dist(-amplitude, amplitude);
    for (std::int64_t i = 0; i < numel(); ++i) set(i, dist(rng));
  }
}

void HostTensor::fill_byte(std::uint8_t b) { std::memset(bytes.data(), b, bytes.size()); }

std::vector<std::int32_t> random_lengths(std::uint64_t seed, int batch, int lo, int hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<std::int32_t> v(batch);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<std::int32_t> prefix_sums(const std::vector<std::int32_t>& lens) {
  std::vector<std::int32_t> cu(lens.size() + 1, 0);
  for (std::size_t i = 0; i < lens.size(); ++i) cu[i + 1] = cu[i] + lens[i];
  return cu;
}

bool have_cuda_device() { return cuda_device_count() > 0; }

std::string expect_error(const std::function<void()>& fn, const std::string& fragment, ErrorCode code) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
        << "message: '" << e.what() << "'\nexpected to contain: '" << fragment << "'";
    return e.what();
  }
  ADD_FAILURE() << "no error; expected one containing '" << fragment << "'";
  return "";
}

std::string conformance_dir(const std::string& name) {
  return std::string(QKV2CTX_CONFORMANCE_DIR) + "/" + name;
}

}  // namespace qkv2ctx::test
