// Serialization of the TensorRT plugin state: v1-v3 byte blobs checked field by field at their
// offsets (SPEC §6.5), corrupt/truncated/oversized blobs, a fuzz loop, and the v4-v6 field
// collections (SPEC §6.6).
#include <bit>
#include <chrono>
#include <cstring>
#include <functional>
#include <random>

#include "common/test_util.hpp"

using namespace qkv2ctx;
using namespace qkv2ctx::trt;
using qkv2ctx::test::expect_error;

namespace {

// Little-endian access written independently of the library's writer.
std::int32_t le_i32(const std::vector<std::uint8_t>& b, std::size_t off) {
  return static_cast<std::int32_t>(std::uint32_t(b.at(off)) | std::uint32_t(b.at(off + 1)) << 8 |
                                   std::uint32_t(b.at(off + 2)) << 16 |
                                   std::uint32_t(b.at(off + 3)) << 24);
}
float le_f32(const std::vector<std::uint8_t>& b, std::size_t off) {
  return std::bit_cast<float>(le_i32(b, off));
}
void put_i32(std::vector<std::uint8_t>& b, std::int32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::uint8_t>(std::uint32_t(v) >> (8 * i)));
}
void put_f32(std::vector<std::uint8_t>& b, float v) { put_i32(b, std::bit_cast<std::int32_t>(v)); }
void set_i32(std::vector<std::uint8_t>& b, std::size_t off, std::int32_t v) {
  for (int i = 0; i < 4; ++i)
    b.at(off + i) = static_cast<std::uint8_t>(std::uint32_t(v) >> (8 * i));
}

// A random valid state of `version` (fresh values each call).
PluginState random_state(std::mt19937_64& rng, int version) {
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto coin = [&] { return uni(0, 1) == 1; };
  auto pos_float = [&] { return std::uniform_real_distribution<float>(1e-3f, 2.0f)(rng); };
  static constexpr int kSms[] = {75, 80, 86, 87, 89, 90, 100, 120};
  PluginState s;
  s.version = version;
  s.num_heads = uni(1, 32);
  const int h = uni(1, 256);
  s.hidden_size = s.num_heads * h;
  s.sm = kSms[uni(0, 7)];
  const int legacy = legacy_version(version);
  if (legacy == 1) {
    s.type_id = uni(0, 2);
    s.has_mask = coin();
    s.S = uni(0, 4096);
    s.B = uni(0, 256);
    if (coin())
      s.runner = {RunnerKind::unfused, uni(-1, 115), uni(-1, 115), uni(1, 4096), uni(1, 256), h};
  } else if (legacy == 2) {
    s.var_seqlen = coin();
    s.use_int8_scale_max = coin();
    if (s.var_seqlen) {
      s.type_id = uni(1, 2);
      s.has_mask = true;
      int runner_h = h;
      if (h < 64 && coin()) runner_h = h <= 32 && coin() ? 32 : 64;  // padded at enqueue
      const std::int32_t algo = kCublasGemmDefaultTensorOp;
      const int runner_s = coin() ? 256 : uni(64, 512), runner_b = coin() ? 1 : uni(1, 64);
      s.runner = {RunnerKind::fused, algo, algo, runner_s, runner_b, runner_h};
    } else {
      s.type_id = uni(0, 1);
      s.has_mask = coin();
      s.S = uni(0, 4096);
      s.B = uni(0, 256);
      s.runner = {RunnerKind::unfused, uni(-1, 115), uni(-1, 115), s.S, s.B, h};
    }
  } else {
    s.type_id = 2;
    s.var_seqlen = true;
    s.use_int8_scale_max = coin();
    s.use_explicit_int8 = coin();
    s.input_qkv_scale = pos_float();
    s.output_ctx_scale = pos_float();
  }
  if (s.type_id == 2 || coin()) s.dq_probs = pos_float();
  return s;
}

PluginState make_v1(int type_id, int hidden, int heads, bool has_mask, int sm) {
  PluginState s;
  s.version = 1;
  s.type_id = type_id;
  s.hidden_size = hidden;
  s.num_heads = heads;
  s.has_mask = has_mask;
  s.dq_probs = type_id == 2 ? 1.0f / 127.0f : -1.0f;
  s.sm = sm;
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Byte layout, field by field

TEST(TrtSerialize, Version1LayoutWithUnfusedRunnerIs57Bytes) {
  std::mt19937_64 rng(test::fresh_seed());
  PluginState s = make_v1(1, 768, 12, true, 86);
  s.S = std::uniform_int_distribution<int>(1, 1024)(rng);
  s.B = std::uniform_int_distribution<int>(1, 64)(rng);
  s.dq_probs = 0.0123f;
  s.runner = {RunnerKind::unfused, 7, 113, s.S, s.B, 64};
  const auto b = serialize(s);
  ASSERT_EQ(b.size(), 57u);
  EXPECT_EQ(serialized_size(s), 57u);
  EXPECT_EQ(le_i32(b, 0), 1);         // type (DataType kHALF)
  EXPECT_EQ(le_i32(b, 4), 12);        // num_heads
  EXPECT_EQ(le_i32(b, 8), 64);        // head_size
  EXPECT_EQ(b[12], 1);                // has_mask (bool, 1 byte)
  EXPECT_EQ(le_i32(b, 13), 768);      // hidden_size
  EXPECT_EQ(le_i32(b, 17), 86);       // sm
  EXPECT_EQ(le_i32(b, 21), s.S);      // S
  EXPECT_EQ(le_i32(b, 25), s.B);      // B
  EXPECT_EQ(le_f32(b, 29), 0.0123f);  // dq_probs
  EXPECT_EQ(le_i32(b, 33), 1);        // hasUnfusedRunner
  EXPECT_EQ(le_i32(b, 37), 7);        // algo1
  EXPECT_EQ(le_i32(b, 41), 113);      // algo2
  EXPECT_EQ(le_i32(b, 45), s.S);      // runner S
  EXPECT_EQ(le_i32(b, 49), s.B);      // runner B
  EXPECT_EQ(le_i32(b, 53), 64);       // runner head_size
  EXPECT_EQ(deserialize(1, b), s);
}

TEST(TrtSerialize, Version1WithoutRunnerZeroFillsAndIgnoresTheReservedBytes) {
  const PluginState s = make_v1(2, 1024, 16, true, 80);
  auto b = serialize(s);
  ASSERT_EQ(b.size(), 57u);
  EXPECT_EQ(le_i32(b, 0), 2);
  EXPECT_EQ(le_f32(b, 29), 1.0f / 127.0f);
  EXPECT_EQ(le_i32(b, 33), 0);
  for (std::size_t i = 37; i < 57; ++i) EXPECT_EQ(b[i], 0) << "byte " << i;
  // TensorRT leaves them unspecified: anything there is ignored.
  for (std::size_t i = 37; i < 57; ++i) b[i] = static_cast<std::uint8_t>(0xA5 ^ i);
  EXPECT_EQ(deserialize(1, b), s);
}

TEST(TrtSerialize, Version2LayoutUnfused59AndFused51) {
  PluginState fixed;
  fixed.version = 2;
  fixed.type_id = 0;
  fixed.hidden_size = 512;
  fixed.num_heads = 8;
  fixed.has_mask = true;
  fixed.sm = 90;
  fixed.S = 200;
  fixed.B = 3;
  fixed.use_int8_scale_max = true;
  fixed.runner = {RunnerKind::unfused, 99, 104, 200, 3, 64};
  const auto u = serialize(fixed);
  ASSERT_EQ(u.size(), 59u);
  EXPECT_EQ(le_i32(u, 0), 0);
  EXPECT_EQ(le_i32(u, 8), 64);
  EXPECT_EQ(le_f32(u, 29), -1.0f);  // FP32 without dq_probs
  EXPECT_EQ(u[33], 0);              // var_seqlen
  EXPECT_EQ(le_i32(u, 34), 2);      // hdim: fixed length
  EXPECT_EQ(u[38], 1);              // use_int8_scale_max
  EXPECT_EQ(le_i32(u, 39), 99);
  EXPECT_EQ(le_i32(u, 43), 104);
  EXPECT_EQ(le_i32(u, 47), 200);
  EXPECT_EQ(le_i32(u, 51), 3);
  EXPECT_EQ(le_i32(u, 55), 64);
  EXPECT_EQ(deserialize(2, u), fixed);

  PluginState var = fixed;
  var.type_id = 2;
  var.var_seqlen = true;
  var.use_int8_scale_max = false;
  var.dq_probs = 0.005f;
  var.S = var.B = 0;  // var-seqlen plugins never set them
  var.runner = {
      RunnerKind::fused, kCublasGemmDefaultTensorOp, kCublasGemmDefaultTensorOp, 256, 1, 64};
  const auto f = serialize(var);
  ASSERT_EQ(f.size(), 51u);
  EXPECT_EQ(serialized_size(var), 51u);
  EXPECT_EQ(le_i32(f, 0), 2);
  EXPECT_EQ(le_i32(f, 21), 0);
  EXPECT_EQ(le_i32(f, 25), 0);
  EXPECT_EQ(le_f32(f, 29), 0.005f);
  EXPECT_EQ(f[33], 1);          // var_seqlen
  EXPECT_EQ(le_i32(f, 34), 1);  // hdim: var-seqlen
  EXPECT_EQ(f[38], 0);
  EXPECT_EQ(le_i32(f, 39), 256);  // runner placeholder S, B, head_size
  EXPECT_EQ(le_i32(f, 43), 1);
  EXPECT_EQ(le_i32(f, 47), 64);
  EXPECT_EQ(deserialize(2, f), var);
}

TEST(TrtSerialize, Version3LayoutIs38Bytes) {
  PluginState s;
  s.version = 3;
  s.type_id = 2;
  s.var_seqlen = true;
  s.hidden_size = 1024;
  s.num_heads = 16;
  s.sm = 87;
  s.dq_probs = 0.0075f;
  s.use_int8_scale_max = true;
  s.use_explicit_int8 = true;
  s.input_qkv_scale = 0.031f;
  s.output_ctx_scale = 0.017f;
  const auto b = serialize(s);
  ASSERT_EQ(b.size(), 38u);
  EXPECT_EQ(le_i32(b, 0), 16);
  EXPECT_EQ(le_i32(b, 4), 64);
  EXPECT_EQ(le_i32(b, 8), 1024);
  EXPECT_EQ(le_i32(b, 12), 87);
  EXPECT_EQ(le_i32(b, 16), 0);
  EXPECT_EQ(le_i32(b, 20), 0);
  EXPECT_EQ(le_f32(b, 24), 0.0075f);
  EXPECT_EQ(b[28], 1);
  EXPECT_EQ(b[29], 1);
  EXPECT_EQ(le_f32(b, 30), 0.031f);
  EXPECT_EQ(le_f32(b, 34), 0.017f);
  EXPECT_EQ(deserialize(3, b), s);
}

TEST(TrtSerialize, ReadsAHandBuiltReferenceBlob) {
  // A v1 INT8 blob as TensorRT writes it, built here byte by byte (SPEC §9 item 32).
  std::vector<std::uint8_t> b;
  put_i32(b, 2);  // kINT8
  put_i32(b, 12);
  put_i32(b, 64);
  b.push_back(1);
  put_i32(b, 768);
  put_i32(b, 80);
  put_i32(b, 384);
  put_i32(b, 32);
  put_f32(b, 1.0f / 127.0f);
  put_i32(b, 1);
  put_i32(b, 105);  // CUBLAS_GEMM_ALGO5_TENSOR_OP
  put_i32(b, 99);
  put_i32(b, 256);  // unfused runner set up for a dynamic-S profile
  put_i32(b, 32);
  put_i32(b, 64);
  ASSERT_EQ(b.size(), 57u);
  const PluginState s = deserialize(1, b);
  EXPECT_EQ(s.type_id, 2);
  EXPECT_EQ(s.num_heads, 12);
  EXPECT_EQ(s.hidden_size, 768);
  EXPECT_TRUE(s.has_mask);
  EXPECT_EQ(s.sm, 80);
  EXPECT_EQ(s.S, 384);
  EXPECT_EQ(s.B, 32);
  EXPECT_EQ(s.dq_probs, 1.0f / 127.0f);
  EXPECT_EQ(s.runner, (RunnerState{RunnerKind::unfused, 105, 99, 256, 32, 64}));
  EXPECT_EQ(serialize(s), b);
}

TEST(TrtSerialize, RandomStatesRoundTrip) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int trial = 0; trial < 300; ++trial)
    for (int v : {1, 2, 3}) {
      const PluginState s = random_state(rng, v);
      ASSERT_NO_THROW(validate_state(s));
      const auto b = serialize(s);
      EXPECT_EQ(b.size(), serialized_size(s));
      EXPECT_EQ(deserialize(v, b), s);
    }
}

// ---------------------------------------------------------------------------------------------
// Truncated, oversized and corrupt blobs

TEST(TrtSerialize, TruncatedBlobsOfEveryLengthAreTooSmall) {
  std::mt19937_64 rng(test::fresh_seed());
  std::vector<std::pair<int, std::vector<std::uint8_t>>> blobs;
  PluginState v1 = make_v1(1, 256, 4, true, 80);
  blobs.emplace_back(1, serialize(v1));
  v1.runner = {RunnerKind::unfused, 1, 2, 128, 4, 64};
  blobs.emplace_back(1, serialize(v1));
  for (int i = 0; i < 8; ++i) {
    const PluginState s = random_state(rng, 2);
    blobs.emplace_back(2, serialize(s));
  }
  blobs.emplace_back(3, serialize(random_state(rng, 3)));
  for (const auto& [version, blob] : blobs) {
    for (std::size_t n = 0; n < blob.size(); ++n) {
      const std::vector<std::uint8_t> cut(blob.begin(), blob.begin() + n);
      expect_error([&] { deserialize(version, cut); },
                   "blob: buffer too small: " + std::to_string(n) + " bytes");
    }
    for (std::size_t extra = 1; extra <= 8; ++extra) {
      std::vector<std::uint8_t> big = blob;
      big.resize(blob.size() + extra, 0);
      expect_error([&] { deserialize(version, big); }, "blob: buffer too large");
    }
  }
  // v2: the size must match the runner the blob says it has.
  PluginState var = random_state(rng, 2);
  while (!var.var_seqlen) var = random_state(rng, 2);
  auto fused = serialize(var);
  fused.resize(59, 0);
  expect_error(
      [&] { deserialize(2, fused); },
      "blob: buffer too large: 59 bytes, a version 2 blob with var_seqlen = 1 is 51 bytes");
  PluginState fixed = random_state(rng, 2);
  while (fixed.var_seqlen) fixed = random_state(rng, 2);
  auto unfused = serialize(fixed);
  unfused.resize(51);
  expect_error(
      [&] { deserialize(2, unfused); },
      "blob: buffer too small: 51 bytes, a version 2 blob with var_seqlen = 0 is 59 bytes");
}

TEST(TrtSerialize, CorruptValuesAreRejectedWithTheirOffset) {
  PluginState v1 = make_v1(1, 768, 12, true, 80);
  v1.runner = {RunnerKind::unfused, 99, 99, 128, 2, 64};
  const auto good = serialize(v1);
  struct Case {
    std::size_t offset;
    std::int32_t value;  // written as int32, or as one byte when `byte`
    bool byte;
    std::string fragment;
  };
  const Case cases[] = {
      {0, 3, false, "v1: blob type (bytes 0-3) = 3 is not allowed: 0 (FP32), 1 (FP16) or 2 (INT8)"},
      {4, 0, false, "v1: blob num_heads (bytes 4-7) = 0 is not allowed: > 0"},
      {8, 32, false,
       "v1: blob head_size (bytes 8-11) = 32 is not allowed: hidden_size / num_heads = 64"},
      {12, 2, true, "v1: blob has_mask (byte 12) = 2 is not allowed: 0 or 1 (a bool byte)"},
      {13, -768, false, "v1: blob hidden_size (bytes 13-16) = -768 is not allowed: > 0"},
      {13, 770, false, "v1: blob hidden_size = 770 with num_heads = 12 is not allowed"},
      {17, 0, false, "v1: blob sm (bytes 17-20) = 0 is not allowed"},
      {21, -1, false, "v1: blob S (bytes 21-24) = -1 is not allowed: >= 0"},
      {25, -7, false, "v1: blob B (bytes 25-28) = -7 is not allowed: >= 0"},
      {29, std::bit_cast<std::int32_t>(0.0f), false,
       "v1: blob dq_probs (bytes 29-32) = 0 is not allowed"},
      {29, std::bit_cast<std::int32_t>(NAN), false,
       "v1: blob dq_probs (bytes 29-32) = nan is not allowed"},
      {33, 2, false, "v1: blob hasUnfusedRunner (bytes 33-36) = 2 is not allowed: 0 or 1"},
      {45, -128, false, "v1: blob runner S = -128 is not allowed: >= 0"},
      {53, 65, false, "v1: blob runner head_size = 65 is not allowed"},
  };
  for (const Case& c : cases) {
    auto b = good;
    if (c.byte)
      b.at(c.offset) = static_cast<std::uint8_t>(c.value);
    else
      set_i32(b, c.offset, c.value);
    expect_error([&] { deserialize(1, b); }, "CustomQKVToContextPluginDynamic " + c.fragment);
  }

  PluginState var;
  var.version = 2;
  var.type_id = 2;
  var.hidden_size = 64;
  var.num_heads = 4;  // H = 16: the fused runner may hold a padded 32 or 64
  var.has_mask = true;
  var.var_seqlen = true;
  var.dq_probs = 0.01f;
  var.sm = 80;
  var.runner = {RunnerKind::fused, 99, 99, 128, 4, 32};
  auto v2 = serialize(var);
  EXPECT_EQ(deserialize(2, v2), var);
  auto bad_hdim = v2;
  set_i32(bad_hdim, 34, 2);
  expect_error([&] { deserialize(2, bad_hdim); },
               "v2: blob hdim (bytes 34-37) = 2 is not allowed: 1 (index of the hidden dimension");
  auto int8_fixed = v2;  // INT8 with var_seqlen = 0 (and the 59-byte unfused size)
  int8_fixed[33] = 0;
  set_i32(int8_fixed, 34, 2);
  int8_fixed.insert(int8_fixed.begin() + 39, {0, 0, 0, 0, 0, 0, 0, 0});
  set_i32(int8_fixed, 55, 16);
  expect_error([&] { deserialize(2, int8_fixed); },
               "v2: type_id = 2 (INT8) with var_seqlen = 0 is not allowed");
  auto runner_h = v2;
  set_i32(runner_h, 47, 48);
  expect_error([&] { deserialize(2, runner_h); },
               "v2: blob runner head_size = 48 is not allowed: the head size 16 or a padded head "
               "size 32/64 >= it");

  PluginState v3 = var;
  v3.version = 3;
  v3.has_mask = false;
  v3.runner = {};
  auto b3 = serialize(v3);
  set_i32(b3, 16, 5);
  expect_error([&] { deserialize(3, b3); }, "v3: blob S, B (bytes 16-23) = 5, 0 is not allowed");
  b3 = serialize(v3);
  set_i32(b3, 30, std::bit_cast<std::int32_t>(-1.0f));
  expect_error([&] { deserialize(3, b3); },
               "v3: blob input_qkv_scale (bytes 30-33) = -1 is not allowed: finite and > 0");
  b3 = serialize(v3);
  b3[29] = 7;
  expect_error([&] { deserialize(3, b3); }, "v3: blob use_explicit_int8 (byte 29) = 7");
}

TEST(TrtSerialize, BlobsAreForVersions1To3Only) {
  expect_error([&] { deserialize(4, std::vector<std::uint8_t>(57)); },
               "v4: versions 4-6 serialize as a field collection");
  expect_error([&] { deserialize(0, {}); }, "version 0 is not allowed");
  PluginState s = make_v1(1, 64, 1, false, 80);
  s.version = 4;
  expect_error([&] { serialize(s); }, "v4: versions 4-6 serialize as a field collection");
  s.version = 1;
  s.num_heads = 0;
  expect_error([&] { serialize(s); }, "v1: num_heads = 0 is not allowed: > 0");
  expect_error([&] { fields_to_serialize(make_v1(1, 64, 1, false, 80)); },
               "v1: versions 1-3 serialize as a byte blob: use serialize()");
}

TEST(TrtSerialize, FuzzRandomAndMutatedBlobsThrowOrRoundTrip) {
  const auto start = std::chrono::steady_clock::now();
  std::mt19937_64 rng(test::fresh_seed());
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int accepted = 0, rejected = 0;
  auto check = [&](int version, const std::vector<std::uint8_t>& bytes) {
    PluginState s;
    try {
      s = deserialize(version, bytes);
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
      ++rejected;
      return;
    }
    ++accepted;
    ASSERT_NO_THROW(validate_state(s));
    // What was accepted is written back unchanged (v1 without runner: reserved bytes zeroed).
    auto expected = bytes;
    if (version == 1 && le_i32(bytes, 33) == 0) std::fill(expected.begin() + 37, expected.end(), 0);
    ASSERT_EQ(serialize(s), expected);
  };
  static constexpr std::size_t kSizes[] = {57, 59, 38};
  for (int i = 0; i < 20000; ++i) {
    const int version = uni(1, 3);
    // Half of the buffers have a size the version accepts, so parsing gets past the size check.
    std::size_t n = uni(0, 1) ? kSizes[version - 1] : static_cast<std::size_t>(uni(0, 80));
    if (version == 2 && uni(0, 1)) n = 51;
    std::vector<std::uint8_t> bytes(n);
    for (auto& b : bytes) b = static_cast<std::uint8_t>(uni(0, 255));
    check(version, bytes);
  }
  for (int i = 0; i < 20000; ++i) {
    const int version = uni(1, 3);
    auto bytes = serialize(random_state(rng, version));
    const int mode = uni(0, 2);
    if (mode == 0) {  // a few random bytes
      for (int k = uni(1, 3); k > 0; --k) bytes[uni(0, int(bytes.size()) - 1)] = uni(0, 255);
    } else if (mode == 1) {  // one flipped bit
      bytes[uni(0, int(bytes.size()) - 1)] ^= static_cast<std::uint8_t>(1u << uni(0, 7));
    } else {  // a random suffix
      for (std::size_t k = uni(0, int(bytes.size()) - 1); k < bytes.size(); ++k)
        bytes[k] = uni(0, 255);
    }
    check(version, bytes);
  }
  EXPECT_GT(accepted, 100);  // mutations of scale/algo/S/B bytes stay valid
  EXPECT_GT(rejected, 20000);
  // About 0.5 s in a Release build; not asserted (Debug and sanitizer builds are much slower).
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz: %d accepted, %d rejected in %.2f s\n", accepted, rejected, seconds);
}

// ---------------------------------------------------------------------------------------------
// Versions 4-6: field collections

namespace {
std::vector<std::string> names_of(const SerializedFields& f) {
  std::vector<std::string> names;
  for (const PluginField& p : f.fields()) names.emplace_back(p.name);
  return names;
}
const PluginField& field(const SerializedFields& f, std::string_view name) {
  for (const PluginField& p : f.fields())
    if (name == p.name) return p;
  throw std::runtime_error("no field " + std::string(name));
}
std::int32_t int_of(const SerializedFields& f, std::string_view name) {
  std::int32_t v;
  std::memcpy(&v, field(f, name).data, 4);
  return v;
}
}  // namespace

TEST(TrtFieldCollection, NamesTypesAndValuesPerVersion) {
  PluginState v4 = make_v1(2, 768, 12, true, 89);
  v4.version = 4;
  v4.S = 384;
  v4.B = 16;
  v4.runner = {RunnerKind::unfused, 101, 99, 384, 16, 64};
  const SerializedFields f4 = fields_to_serialize(v4);
  EXPECT_EQ(names_of(f4), (std::vector<std::string>{"type_id", "hidden_size", "num_heads",
                                                    "has_mask", "S", "B", "SM", "runnerStateBuffer",
                                                    "hasUnfusedDispatcher", "dq_probs"}));
  EXPECT_EQ(int_of(f4, "SM"), 89);
  EXPECT_EQ(int_of(f4, "S"), 384);
  EXPECT_EQ(int_of(f4, "hasUnfusedDispatcher"), 1);
  const PluginField& rb = field(f4, "runnerStateBuffer");
  EXPECT_EQ(rb.type, PluginFieldType::kUNKNOWN);
  EXPECT_EQ(rb.length, 20);
  const std::vector<std::uint8_t> runner(static_cast<const std::uint8_t*>(rb.data),
                                         static_cast<const std::uint8_t*>(rb.data) + 20);
  EXPECT_EQ(le_i32(runner, 0), 101);
  EXPECT_EQ(le_i32(runner, 16), 64);
  EXPECT_EQ(field(f4, "dq_probs").type, PluginFieldType::kFLOAT32);
  for (const PluginField& p : f4.fields())
    if (std::string_view(p.name) != "runnerStateBuffer") EXPECT_EQ(p.length, 1) << p.name;

  PluginState fp16 = make_v1(1, 768, 12, false, 89);
  fp16.version = 4;
  EXPECT_EQ(names_of(fields_to_serialize(fp16)),
            (std::vector<std::string>{"type_id", "hidden_size", "num_heads", "has_mask", "S", "B",
                                      "SM", "hasUnfusedDispatcher"}));  // no runner, no dq_probs

  std::mt19937_64 rng(test::fresh_seed());
  PluginState v5 = random_state(rng, 5);
  // dq_probs is serialized only when set (>= 0): INT8 always sets it, FP16 may leave it at -1.
  while (!v5.var_seqlen || v5.type_id != 2) v5 = random_state(rng, 5);
  const SerializedFields f5 = fields_to_serialize(v5);
  EXPECT_EQ(names_of(f5), (std::vector<std::string>{"type_id", "hidden_size", "num_heads",
                                                    "has_mask", "var_seqlen", "use_int8_scale_max",
                                                    "S", "B", "runnerStateBuffer", "dq_probs"}));
  EXPECT_EQ(field(f5, "runnerStateBuffer").length, 12);
  EXPECT_EQ(int_of(f5, "var_seqlen"), 1);

  PluginState v6 = random_state(rng, 6);
  const SerializedFields f6 = fields_to_serialize(v6);
  EXPECT_EQ(names_of(f6), (std::vector<std::string>{
                              "hidden_size", "num_heads", "use_int8_scale_max", "use_explicit_int8",
                              "input_qkv_scale", "output_ctx_scale", "dq_probs"}));
  float qkv;
  std::memcpy(&qkv, field(f6, "input_qkv_scale").data, 4);
  EXPECT_EQ(qkv, v6.input_qkv_scale);
}

TEST(TrtFieldCollection, RandomStatesRoundTripThroughRuntimeCreation) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int trial = 0; trial < 200; ++trial)
    for (int v : {4, 5, 6}) {
      const PluginState s = random_state(rng, v);
      SerializedFields f = fields_to_serialize(s);
      const SerializedFields moved = std::move(f);  // fields stay valid after a move
      // v4 restores the SM it stored; v5/v6 take the device's (the argument).
      const int device_sm = v == 4 ? 75 : s.sm;
      EXPECT_EQ(create_plugin_state(v, moved.fields(), device_sm, Phase::runtime), s);
    }
}

TEST(TrtFieldCollection, RuntimeCollectionsAreValidated) {
  PluginState v4 = make_v1(1, 512, 8, true, 80);
  v4.version = 4;
  v4.S = 128;
  v4.B = 2;
  v4.runner = {RunnerKind::unfused, 99, 99, 128, 2, 64};
  const SerializedFields f4 = fields_to_serialize(v4);
  auto without = [&](const SerializedFields& f, std::string_view name) {
    std::vector<PluginField> out;
    for (const PluginField& p : f.fields())
      if (name != p.name) out.push_back(p);
    return out;
  };
  expect_error([&] { create_plugin_state(4, without(f4, "S"), 80, Phase::runtime); },
               "v4: required field 'S' is missing (version 4 at runtime requires type_id, "
               "hidden_size, num_heads, has_mask, S, B, SM, hasUnfusedDispatcher)");
  expect_error(
      [&] { create_plugin_state(4, without(f4, "runnerStateBuffer"), 80, Phase::runtime); },
      "v4: field 'hasUnfusedDispatcher' = 1 but field 'runnerStateBuffer' is missing");
  // Building a network from an engine's collection is a TensorRT abort; here an error.
  expect_error([&] { create_plugin_state(4, f4.fields(), 80, Phase::build); },
               "v4: field 'S' is only read when TensorRT recreates the plugin");

  std::vector<PluginField> flag0(f4.fields().begin(), f4.fields().end());
  const std::int32_t zero = 0;
  for (auto& p : flag0)
    if (std::string_view(p.name) == "hasUnfusedDispatcher") p.data = &zero;
  expect_error([&] { create_plugin_state(4, flag0, 80, Phase::runtime); },
               "v4: field 'runnerStateBuffer' is present but field 'hasUnfusedDispatcher' = 0");

  std::vector<std::uint8_t> bad_runner(20, 0);
  set_i32(bad_runner, 8, -3);  // runner S
  set_i32(bad_runner, 16, 64);
  std::vector<PluginField> corrupt(f4.fields().begin(), f4.fields().end());
  for (auto& p : corrupt)
    if (std::string_view(p.name) == "runnerStateBuffer") p.data = bad_runner.data();
  expect_error([&] { create_plugin_state(4, corrupt, 80, Phase::runtime); },
               "v4: field 'runnerStateBuffer' runner S = -3 is not allowed: >= 0");
  for (auto& p : corrupt)
    if (std::string_view(p.name) == "runnerStateBuffer") p.length = 12;
  expect_error([&] { create_plugin_state(4, corrupt, 80, Phase::runtime); },
               "v4: field 'runnerStateBuffer' has length 12, expected 20 (unfused runner state");

  std::mt19937_64 rng(test::fresh_seed());
  PluginState v5 = random_state(rng, 5);
  // dq_probs is serialized only when set (>= 0): INT8 always sets it, FP16 may leave it at -1.
  while (!v5.var_seqlen || v5.type_id != 2) v5 = random_state(rng, 5);
  const SerializedFields f5 = fields_to_serialize(v5);
  expect_error([&] { create_plugin_state(5, without(f5, "var_seqlen"), 80, Phase::runtime); },
               "v5: required field 'var_seqlen' is missing (version 5 at runtime requires");
  std::vector<PluginField> long_runner(f5.fields().begin(), f5.fields().end());
  for (auto& p : long_runner)
    if (std::string_view(p.name) == "runnerStateBuffer") p.data = bad_runner.data(), p.length = 20;
  expect_error([&] { create_plugin_state(5, long_runner, 80, Phase::runtime); },
               "v5: field 'runnerStateBuffer' has length 20, expected 12 (fused runner state");
}
