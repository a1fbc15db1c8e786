// The packed mask of TensorRT's v1 fused path (SPEC §3.2.2, §9 items 19 and 41): widths, the bit
// layout at known positions, encode/decode round trips, prefix -> lengths, non-prefix -> error.
#include <functional>
#include <random>

#include "common/test_util.hpp"

using namespace qkv2ctx;
using namespace qkv2ctx::trt;
using qkv2ctx::test::expect_error;

namespace {

constexpr int kPackedS[] = {64, 96, 128, 384};

// A key mask [batch][S] with only `key` of batch entry `b` valid.
std::vector<std::int32_t> single_key(int batch, int S, int b, int key) {
  std::vector<std::int32_t> m(static_cast<std::size_t>(batch) * S, 0);
  m[static_cast<std::size_t>(b) * S + key] = 1;
  return m;
}

// Indices of the set bits over all words.
std::vector<std::pair<std::size_t, int>> set_bits(const std::vector<std::uint32_t>& words) {
  std::vector<std::pair<std::size_t, int>> bits;
  for (std::size_t w = 0; w < words.size(); ++w)
    for (int bit = 0; bit < 32; ++bit)
      if (words[w] >> bit & 1u) bits.emplace_back(w, bit);
  return bits;
}

}  // namespace

TEST(TrtPackedMask, WidthPerSmTypeAndSequenceLength) {
  for (int sm : {75, 80, 86, 87, 89, 90, 100, 120})
    for (int type_id : {1, 2}) {
      EXPECT_EQ(packed_mask_width(sm, type_id, 64), 512);
      EXPECT_EQ(packed_mask_width(sm, type_id, 96), 512);
      EXPECT_EQ(packed_mask_width(sm, type_id, 128), 512);
      EXPECT_EQ(packed_mask_width(sm, type_id, 384), 6144);
      for (int S : {1, 32, 63, 65, 127, 192, 256, 383, 512, 1024, -1})
        EXPECT_EQ(packed_mask_width(sm, type_id, S), 1) << S;
      EXPECT_EQ(packed_mask_width(sm, 0, 128), 1);  // FP32 always takes valid lengths
    }
  for (int sm : {61, 70, 72, 88, 121}) EXPECT_EQ(packed_mask_width(sm, 1, 128), 1) << sm;
}

TEST(TrtPackedMask, LayoutPerSequenceLength) {
  struct Want {
    int S, warps_m, warps_n, threads, xmmas_m, xmmas_n, words;
  };
  for (const Want w : {Want{64, 2, 2, 128, 2, 2, 256}, Want{96, 2, 2, 128, 3, 3, 384},
                       Want{128, 2, 2, 128, 4, 4, 512}, Want{384, 1, 8, 256, 24, 3, 6144}}) {
    const PackedMaskLayout l = packed_mask_layout(w.S);
    EXPECT_EQ(l.warps_m, w.warps_m);
    EXPECT_EQ(l.warps_n, w.warps_n);
    EXPECT_EQ(l.threads, w.threads);
    EXPECT_EQ(l.xmmas_m, w.xmmas_m);
    EXPECT_EQ(l.xmmas_n, w.xmmas_n);
    EXPECT_EQ(l.words_per_batch(), w.words);
  }
  expect_error([] { packed_mask_layout(256); },
               "packed mask: S = 256 is not allowed: packed masks exist only for S = 64, 96, 128 "
               "and 384");
}

TEST(TrtPackedMask, BitsSitWhereTheFusedKernelsLookForThem) {
  // Hand-derived from SPEC §3.2.2: a single valid key (S, key) sets two bits of one thread's word
  // in M-tile 0 of batch entry 0.
  struct Case {
    int S;
    int key;
    int thread;
    int bit_a;
    int bit_b;
  };
  const Case cases[] = {
      {128, 0, 0, 0, 2},     {128, 1, 0, 1, 3},    {128, 9, 0, 5, 7},       {128, 6, 3, 0, 2},
      {128, 16, 64, 0, 2},   {128, 32, 0, 8, 10},  {128, 127, 67, 29, 31},  {384, 118, 227, 0, 2},
      {384, 127, 227, 5, 7}, {384, 128, 0, 8, 10}, {384, 383, 227, 21, 23}, {64, 63, 67, 13, 15},
      {96, 95, 67, 21, 23},
  };
  for (const Case& c : cases) {
    const PackedMaskLayout l = packed_mask_layout(c.S);
    const auto words = encode_packed_mask(single_key(1, c.S, 0, c.key), 1, c.S);
    ASSERT_EQ(words.size(), static_cast<std::size_t>(packed_mask_width(90, 1, c.S)));
    // The key's bits appear in every thread with the same warp_n and lane % 4 (8 lanes x warps_m
    // warps), in every M-tile: 2 bits each.
    const auto bits = set_bits(words);
    EXPECT_EQ(bits.size(), static_cast<std::size_t>(2 * 8 * l.warps_m * l.xmmas_m))
        << c.S << "/" << c.key;
    EXPECT_EQ(words[c.thread], (1u << c.bit_a) | (1u << c.bit_b)) << c.S << "/" << c.key;
    for (int mi = 0; mi < l.xmmas_m; ++mi)
      EXPECT_EQ(words[static_cast<std::size_t>(mi) * l.threads + c.thread], words[c.thread]);
  }
  // Batch entries are contiguous at xmmas_m * threads words, not at the tensor width P: for S = 64,
  // batch 1 starts at word 256 of a [2, 512] tensor and words 512.. are unused.
  const auto words = encode_packed_mask(single_key(2, 64, 1, 0), 2, 64);
  ASSERT_EQ(words.size(), 1024u);
  EXPECT_EQ(words[0], 0u);
  EXPECT_EQ(words[256], 0b101u);
  for (std::size_t i = 512; i < words.size(); ++i) ASSERT_EQ(words[i], 0u) << i;
}

TEST(TrtPackedMask, EncodeDecodeRoundTripOfArbitraryKeyMasks) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int S : kPackedS)
    for (int trial = 0; trial < 6; ++trial) {
      const int batch = std::uniform_int_distribution<int>(1, 5)(rng);
      // Arbitrary (mostly non-prefix) masks; values other than 1 count as masked, as in
      // embLayerNormPlugin (it tests value == 1).
      std::vector<std::int32_t> mask(static_cast<std::size_t>(batch) * S);
      for (auto& v : mask) v = std::uniform_int_distribution<int>(-1, 2)(rng);
      const auto words = encode_packed_mask(mask, batch, S);
      const auto valid = decode_packed_mask(words, batch, S);
      ASSERT_EQ(valid.size(), mask.size());
      for (std::size_t i = 0; i < mask.size(); ++i)
        ASSERT_EQ(valid[i], mask[i] == 1 ? 1 : 0) << "S " << S << " index " << i;
      // The unused tail of the tensor may hold anything (embLayerNormPlugin never writes it).
      auto tail = words;
      const std::size_t used =
          static_cast<std::size_t>(batch) * packed_mask_layout(S).words_per_batch();
      for (std::size_t i = used; i < tail.size(); ++i) tail[i] = static_cast<std::uint32_t>(rng());
      EXPECT_EQ(decode_packed_mask(tail, batch, S), valid);
    }
}

TEST(TrtPackedMask, PrefixMasksConvertToLengths) {
  std::mt19937_64 rng(test::fresh_seed());
  for (int S : kPackedS) {
    const int batch = std::uniform_int_distribution<int>(1, 6)(rng);
    std::vector<std::int32_t> lengths(batch);
    for (auto& len : lengths) len = std::uniform_int_distribution<int>(0, S)(rng);
    lengths[0] = S;                 // full row
    if (batch > 1) lengths[1] = 0;  // empty row
    std::vector<std::int32_t> mask(static_cast<std::size_t>(batch) * S, 0);
    for (int b = 0; b < batch; ++b)
      for (int k = 0; k < lengths[b]; ++k) mask[static_cast<std::size_t>(b) * S + k] = 1;
    EXPECT_EQ(packed_mask_to_lengths(encode_packed_mask(mask, batch, S), batch, S), lengths) << S;
  }
}

TEST(TrtPackedMask, NonPrefixMasksAreNotSupportedYet) {
  for (int S : kPackedS) {
    std::vector<std::int32_t> mask(2 * static_cast<std::size_t>(S), 1);
    mask[S + 5] = 0;  // batch entry 1: key 5 masked, key 6 valid
    expect_error([&] { packed_mask_to_lengths(encode_packed_mask(mask, 2, S), 2, S); },
                 "packed mask: batch entry 1 has key 6 valid after masked key 5: non-prefix key "
                 "masks are not supported yet",
                 ErrorCode::unsupported);
  }
}

TEST(TrtPackedMask, WordsThatAreNotAPerKeyMaskAreRejected) {
  std::mt19937_64 rng(test::fresh_seed());
  std::vector<std::int32_t> mask(128);
  for (auto& v : mask) v = static_cast<int>(rng() & 1);
  const auto good = encode_packed_mask(mask, 1, 128);
  auto tile = good;  // M-tile 1 disagrees with M-tile 0 about key 0
  tile[128] ^= 1u;
  expect_error([&] { decode_packed_mask(tile, 1, 128); },
               "word 128 (batch 0, M-tile 1, thread 0) bit 0 says key 0 is");
  auto dup = good;  // bit 2 is the second copy of key 0 in the same word
  dup[0] ^= 1u << 2;
  expect_error([&] { decode_packed_mask(dup, 1, 128); }, "bit 2 says key 0 is");
  auto high = encode_packed_mask(std::vector<std::int32_t>(96, 1), 1, 96);
  high[5] |= 1u << 30;  // S = 96 uses 3 bytes per word
  expect_error([&] { decode_packed_mask(high, 1, 96); },
               "word 5 (batch 0, M-tile 0, thread 5) has bits above bit 23 set");
  expect_error([&] { decode_packed_mask(std::vector<std::uint32_t>(256), 1, 64); },
               "the mask tensor has 256 words, expected batch * P = 1 * 512 for S = 64");
  expect_error([&] { decode_packed_mask(good, 1, 100); }, "S = 100 is not allowed");
  expect_error([&] { decode_packed_mask(good, -1, 128); }, "batch = -1 is not allowed: >= 0");
  expect_error([&] { encode_packed_mask(mask, 2, 128); },
               "key mask has 128 values, expected batch * S = 256");
  EXPECT_TRUE(decode_packed_mask({}, 0, 384).empty());
}
