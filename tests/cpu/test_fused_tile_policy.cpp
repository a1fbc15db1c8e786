// Host checks of the fused sm_80 tile policy (src/cuda/fused_sm80/fused_tile_policy.hpp): the numbers
// the kernels are compiled from and the per-run tile choice. Plain constexpr code, so these run on every
// machine (no GPU, no CUDA).
#include <gtest/gtest.h>

#include "cuda/fused_sm80/fused_tile_policy.hpp"

using namespace qkv2ctx::fused_sm80;

namespace {

constexpr int kH100Sms = 132;
// Shared memory a CTA may opt into on sm_80 (163 KiB); an H100 SM has 228 KiB, 1 KiB of it reserved
// per resident CTA.
constexpr int kSm80SmemOptin = 163 * 1024;
constexpr int kH100SmemPerSm = 228 * 1024;

TEST(FusedTilePolicy, SupportedHeadSizes) {
  for (int d : {32, 64, 80, 96, 128}) EXPECT_TRUE(is_supported_head_size(d)) << d;
  for (int d : {0, 16, 40, 48, 72, 112, 160, 256}) EXPECT_FALSE(is_supported_head_size(d)) << d;
}

TEST(FusedTilePolicy, ConfigsAreConsistent) {
  for (int d : kSupportedHeadSizes) {
    for (TileShape shape : {TileShape::m64, TileShape::m128, TileShape::m128n64}) {
      if (!has_tile(shape, d)) continue;
      const TileConfig c = tile_config(shape, d);
      SCOPED_TRACE("D=" + std::to_string(d) + " shape=" + std::to_string(static_cast<int>(shape)));
      EXPECT_EQ(c.block_m, c.warps * 16 * c.m_tiles_per_warp);
      EXPECT_EQ(c.block_m, shape == TileShape::m64 ? 64 : 128);
      EXPECT_EQ(c.block_n % 16, 0);
      EXPECT_GE(c.kv_stages, 2);
      // Every configuration runs on sm_80; on the H100 the occupancy the registers are capped for
      // (min_blocks_per_sm) is not undone by shared memory.
      EXPECT_LE(smem_bytes(c, d, c.kv_stages), kSm80SmemOptin);
      EXPECT_LE(c.min_blocks_per_sm * (smem_bytes(c, d, c.kv_stages) + 1024), kH100SmemPerSm);
      // The persistent schedule's second Q buffer keeps the same occupancy.
      if (c.persistent) EXPECT_TRUE(persistent_fits(c, d));
      // Padded rows: an odd number of 16-byte chunks per row keeps ldmatrix conflict-free.
      EXPECT_EQ((smem_row_elems(d) * 2 / 16) % 2, 1);
    }
  }
  // The register-heavy corner: D = 128 with 32 rows per warp keeps Q in shared memory; D = 128 halves BN.
  EXPECT_FALSE(tile_config(TileShape::m128, 128).q_in_registers);
  EXPECT_EQ(tile_config(TileShape::m128, 128).block_n, 32);
  EXPECT_EQ(tile_config(TileShape::m64, 128).block_n, 32);
  EXPECT_TRUE(tile_config(TileShape::m128, 64).q_in_registers);
  EXPECT_EQ(smem_bytes(tile_config(TileShape::m128, 64), 64, 2), (128 + 4 * 64) * 72 * 2);
  EXPECT_EQ(smem_bytes(tile_config(TileShape::m128, 64), 64, 2, 2), (256 + 4 * 64) * 72 * 2);
  // The benchmark configurations run persistent; D = 96 at BM = 64 would not fit 3 CTAs per SM.
  EXPECT_TRUE(tile_config(TileShape::m128, 64).persistent);
  EXPECT_TRUE(tile_config(TileShape::m64, 64).persistent);
  EXPECT_FALSE(tile_config(TileShape::m128, 128).persistent);
  EXPECT_FALSE(persistent_fits(tile_config(TileShape::m64, 96), 96));
  // m128n64: D = 128 with 64-key tiles, Q in shared memory, one tile per CTA, 2 CTAs per H100 SM.
  const TileConfig wide = tile_config(TileShape::m128n64, 128);
  EXPECT_EQ(wide.block_m, 128);
  EXPECT_EQ(wide.block_n, 64);
  EXPECT_FALSE(wide.q_in_registers);
  EXPECT_FALSE(wide.persistent);
  EXPECT_EQ(wide.min_blocks_per_sm, 2);
  EXPECT_EQ(smem_bytes(wide, 128, 2), (128 + 4 * 64) * 136 * 2);
}

TEST(FusedTilePolicy, WideKeyTilesOnlyForD128) {
  for (int d : kSupportedHeadSizes) {
    EXPECT_EQ(has_tile(TileShape::m128n64, d), d == 128) << d;
    EXPECT_TRUE(has_tile(TileShape::m64, d));
    EXPECT_TRUE(has_tile(TileShape::m128, d));
    // The default 128-row shape: m128n64 at D = 128, m128 (already BN = 64) elsewhere; m64 unchanged.
    EXPECT_EQ(tile_for_head_size(TileShape::m128, d), d == 128 ? TileShape::m128n64 : TileShape::m128) << d;
    EXPECT_EQ(tile_for_head_size(TileShape::m64, d), TileShape::m64) << d;
    EXPECT_EQ(tile_for_head_size(TileShape::m128n64, d), d == 128 ? TileShape::m128n64 : TileShape::m128) << d;
    if (d != 128) EXPECT_EQ(tile_config(TileShape::m128, d).block_n, 64) << d;
  }
}

// The Hopper tile: sm_90 only, D = 32 / 64 / 128 (whole swizzle rows), unpadded tiles plus the
// alignment slack, the default 128-row shape there.
TEST(FusedTilePolicy, HopperTile) {
  for (int d : kSupportedHeadSizes) {
    EXPECT_EQ(has_tile(TileShape::wg128, d), d == 32 || d == 64 || d == 128) << d;
    EXPECT_EQ(large_tile_for_device(d, 90, 384), has_tile(TileShape::wg128, d)
                                                     ? TileShape::wg128
                                                     : tile_for_head_size(TileShape::m128, d))
        << d;
    EXPECT_EQ(large_tile_for_device(d, 90, 128), tile_for_head_size(TileShape::m128, d)) << d;  // short: sm_80
    EXPECT_EQ(large_tile_for_device(d, 80, 384), tile_for_head_size(TileShape::m128, d)) << d;
    EXPECT_EQ(large_tile_for_device(d, 100, 384), tile_for_head_size(TileShape::m128, d)) << d;  // sm_90a code only
    if (!has_tile(TileShape::wg128, d)) continue;
    const TileConfig c = tile_config(TileShape::wg128, d);
    EXPECT_EQ(c.block_m, 128);
    EXPECT_EQ(c.warps, 8);
    EXPECT_FALSE(c.padded_rows);
    EXPECT_EQ(c.persistent, d <= 64) << d;
    EXPECT_TRUE(persistent_fits(c, d)) << d;
    EXPECT_EQ(smem_bytes(c, d, 2), (128 + 4 * c.block_n) * d * 2 + kSmemAlignSlack);
    EXPECT_EQ(smem_bytes(c, d, 2, 2), (256 + 4 * c.block_n) * d * 2 + kSmemAlignSlack);
    EXPECT_LE(c.min_blocks_per_sm * (smem_bytes(c, d, c.kv_stages) + 1024), kH100SmemPerSm) << d;
  }
  EXPECT_TRUE(tile_runs_on(TileShape::wg128, 90));
  EXPECT_FALSE(tile_runs_on(TileShape::wg128, 89));
  EXPECT_FALSE(tile_runs_on(TileShape::wg128, 100));
  EXPECT_TRUE(tile_runs_on(TileShape::m128, 100));
  // The default on an H100 for the BERT shapes; small batches and short sequences keep m64.
  EXPECT_EQ(choose_tile_for_device(384, 32 * 16, 64, kH100Sms, 90), TileShape::wg128);
  EXPECT_EQ(choose_tile_for_device(2048, 8 * 16, 128, kH100Sms, 90), TileShape::wg128);
  EXPECT_EQ(choose_tile_for_device(384, 32 * 16, 32, kH100Sms, 90), TileShape::wg128);
  EXPECT_EQ(choose_tile_for_device(384, 32 * 16, 96, kH100Sms, 90), TileShape::m128);
  EXPECT_EQ(choose_tile_for_device(384, 1 * 16, 64, kH100Sms, 90), TileShape::m64);
  EXPECT_EQ(choose_tile_for_device(128, 128 * 12, 64, kH100Sms, 90), TileShape::m128);
  EXPECT_EQ(choose_tile_for_device(kWgmmaMinSeqlen, 128 * 12, 64, kH100Sms, 90), TileShape::wg128);
  EXPECT_EQ(choose_tile_for_device(64, 100000, 64, kH100Sms, 90), TileShape::m64);
  EXPECT_EQ(choose_tile_for_device(384, 32 * 16, 128, kH100Sms, 80), TileShape::m128n64);
}

TEST(FusedTilePolicy, StagesFollowTheKeyCount) {
  const TileConfig c = tile_config(TileShape::m64, 64);
  EXPECT_EQ(kv_stages_for(c, 1), 1);
  EXPECT_EQ(kv_stages_for(c, 64), 1);
  EXPECT_EQ(kv_stages_for(c, 65), 2);
  EXPECT_EQ(kv_stages_for(c, 4097), 2);
  EXPECT_LT(smem_bytes(c, 64, 1), smem_bytes(c, 64, 2));
}

TEST(FusedTilePolicy, TileChoice) {
  // Short sequences: never a half-empty 128-row tile.
  EXPECT_EQ(choose_tile(64, 100000, kH100Sms), TileShape::m64);
  EXPECT_EQ(choose_tile(1, 100000, kH100Sms), TileShape::m64);
  // The BERT benchmark shapes fill the GPU with 128-row tiles.
  EXPECT_EQ(choose_tile(128, 128 * 12, kH100Sms), TileShape::m128);
  EXPECT_EQ(choose_tile(384, 32 * 16, kH100Sms), TileShape::m128);
  EXPECT_EQ(choose_tile(512, 32 * 12, kH100Sms), TileShape::m128);
  // Small batches spread over more, smaller CTAs.
  EXPECT_EQ(choose_tile(384, 1 * 16, kH100Sms), TileShape::m64);
  EXPECT_EQ(choose_tile(128, 8 * 12, kH100Sms), TileShape::m64);
  // The boundary: 4 CTAs per SM at BM = 128.
  EXPECT_EQ(choose_tile(256, 264, kH100Sms), TileShape::m128);
  EXPECT_EQ(choose_tile(256, 263, kH100Sms), TileShape::m64);
}

TEST(FusedTilePolicy, VarlenSlotsCoverEverySequence) {
  // Sequence b owns slots [cu[b]/BM + b, cu[b+1]/BM + b + 1): at least ceil(len/BM) of them, and the
  // last sequence ends inside varlen_tile_slots().
  const int cu[] = {0, 0, 1, 127, 128, 129, 500, 500, 1000};
  const int B = 8;
  for (int bm : {64, 128}) {
    for (int b = 0; b < B; ++b) {
      const std::int64_t first = cu[b] / bm + b, next = cu[b + 1] / bm + b + 1;
      const int len = cu[b + 1] - cu[b];
      EXPECT_GE(next - first, (len + bm - 1) / bm) << "b=" << b;
      EXPECT_LE(next - first, (len + bm - 1) / bm + 2) << "b=" << b;
    }
    EXPECT_LE(cu[B] / bm + B, varlen_tile_slots(bm, cu[B], B));
    EXPECT_EQ(varlen_tile_slots(bm, 1000, B), 1000 / bm + B);
  }
}

// The longest-first varlen order (host reference of the device mapping): every query tile of every
// sequence exactly once, inside the grid's slots, with the cost classes non-increasing.
TEST(FusedTilePolicy, LongestFirstCoversEveryTileOnceLongestFirst) {
  EXPECT_TRUE(varlen_longest_first(1));
  EXPECT_TRUE(varlen_longest_first(kLongestFirstMaxBatch));
  EXPECT_FALSE(varlen_longest_first(kLongestFirstMaxBatch + 1));
  const int lens[] = {106, 0, 384, 1, 128, 129, 255, 257, 64, 383, 0, 200};
  const int B = static_cast<int>(sizeof(lens) / sizeof(lens[0]));
  int total = 0;
  for (int l : lens) total += l;
  for (int bm : {64, 128}) {
    SCOPED_TRACE("BM=" + std::to_string(bm));
    int seen[B][8] = {};
    int prev_class = 1 << 30, tiles = 0;
    const std::int64_t slots = varlen_tile_slots(bm, total, B);
    for (std::int64_t slot = 0; slot < slots; ++slot) {
      int b = -1, m = -1;
      if (!longest_first_tile(lens, B, bm, 384, slot, b, m)) {
        EXPECT_GE(slot, tiles);  // only the surplus slots at the end are empty
        continue;
      }
      ASSERT_GE(b, 0);
      ASSERT_LT(b, B);
      ASSERT_GE(m, 0);
      ASSERT_LT(m * bm, lens[b]);
      ++seen[b][m];
      ++tiles;
      const int cls = longest_first_class(lens[b]);
      EXPECT_LE(cls, prev_class);
      prev_class = cls;
    }
    for (int b = 0; b < B; ++b)
      for (int m = 0; m < (lens[b] + bm - 1) / bm; ++m) EXPECT_EQ(seen[b][m], 1) << "b=" << b << " m=" << m;
    // The first tiles are those of the longest sequence (384 keys), the last those of the shortest.
    int b = -1, m = -1;
    ASSERT_TRUE(longest_first_tile(lens, B, bm, 384, 0, b, m));
    EXPECT_EQ(b, 2);
    ASSERT_TRUE(longest_first_tile(lens, B, bm, 384, tiles - 1, b, m));
    EXPECT_LE(lens[b], kLongestFirstClassKeys);
  }
}

}  // namespace
