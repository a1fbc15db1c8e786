// Tile sizes of the sm_80 fused FP16/BF16 kernel family and the rule that picks one per run. Plain
// constexpr C++ (no CUDA headers) so the host tests can check it and the kernel traits derive from it:
// the numbers below exist once.
#pragma once
#include <cstdint>

namespace qkv2ctx::fused_sm80 {

// Head sizes with a compiled kernel. All are multiples of 16 (the k extent of m16n8k16), so Q·Kᵀ needs
// no padding of D; rows of D FP16 values are multiples of 16 bytes for cp.async.
inline constexpr int kSupportedHeadSizes[] = {32, 64, 80, 96, 128};
constexpr bool is_supported_head_size(int d) {
  for (int s : kSupportedHeadSizes)
    if (s == d) return true;
  return false;
}

// The two query-tile shapes compiled for every (dtype, head size). Both use 16-row mma.sync tiles, K/V
// tiles of BN keys in a 2-stage cp.async ring and 4 warps; they differ in rows per warp.
//  m128: 4 warps x 32 rows (2 MMA row tiles per warp). Each K/V fragment read from shared memory feeds
//        two MMAs: 1-1.25 clk of ldmatrix traffic per MMA against the mma.sync rate of one m16n8k16
//        per 1.5 clk per SM (H100). ~240 registers: 2 CTAs = 8 warps per SM.
//  m64:  4 warps x 16 rows, 3-4 CTAs per SM: short sequences (S <= 64 wastes half of a 128-row tile)
//        and batches too small to fill the SMs with 128-row tiles.
// Measured on the H100 (FP16, D = 64, S = 384/512) and not kept: 8 warps x 16 rows at <= 128 registers
// (16 warps per SM) ran 10% slower than m128 (twice the ldmatrix bytes per MMA); issuing the next
// tile's Q·Kᵀ beside the current softmax (two score tiles in registers) ran 3-20% slower (the extra
// registers cost occupancy).
//  m128n64: m128 with K/V tiles of 64 keys, compiled for D = 128 only (m128 there has BN = 32; for
//        D <= 96 m128 already has BN = 64 and is used instead). It fits 255 registers without spills
//        because P is rounded to the element type during the softmax (half the registers of FP32
//        scores until P·V) and Q stays in shared memory: ldmatrix traffic per MMA 0.31 x4 instead of
//        0.375, half the softmax row reductions and barriers per key. The default for D = 128.
//        H100, BF16 N = 16 S = 2048 B = 8: 855-862 -> 814-820 µs (319-322 -> 335-338 TFLOP/s). Not kept:
//        half of its exponentials on the FMA pipe (degree-3 polynomial, 1:1 with MUFU): 874-881 µs.
// Also measured and not kept (all shapes, same run, A/B builds): lazy rescaling of O (a row group's m
// moves only when a tile would give p > 2^8, so most tiles skip alpha and the D/2 FMULs of the O
// rescale): within +-1.5% of the eager rescale at every bar shape (BF16 D = 128 S = 2048: 808.0 /
// 819.5 vs 820.4 / 808.7 µs). The rescale is not on the critical path of mma.sync tiles.
//  wg128: the Hopper tile (fused_sm90/fused_wgmma.cuh, sm_90a only): 2 warpgroups x 64 query rows, K/V
//        tiles of 64 keys (D <= 64) or 128 (D = 128); Q·Kᵀ and P·V on wgmma (m64nBNk16 from shared
//        memory; m64nDk16 with P from registers and V read transposed by the tensor core), operands in
//        swizzled tiles (128-byte swizzle; 64-byte at D = 32), 2-stage cp.async ring. Compiled for D = 32, 64 and 128
//        (swizzle rows of whole 16-byte chunks in powers of two; D = 80 / 96 stay on the sm_80 tiles).
enum class TileShape : std::uint8_t { m64, m128, m128n64, wg128 };

// Whether (shape, head size) has a compiled kernel.
constexpr bool has_tile(TileShape shape, int head_size) {
  switch (shape) {
    case TileShape::m128n64: return head_size == 128;
    case TileShape::wg128: return head_size == 32 || head_size == 64 || head_size == 128;
    default: return true;
  }
}

// The SM version a shape needs (wgmma: sm_90a; the library compiles sm_90a SASS for it).
constexpr int tile_min_sm(TileShape shape) { return shape == TileShape::wg128 ? 90 : 80; }
constexpr bool tile_runs_on(TileShape shape, int sm) {
  return sm >= tile_min_sm(shape) && (shape != TileShape::wg128 || sm == 90);
}

struct TileConfig {
  int block_m;            // query rows per CTA
  int block_n;            // keys per K/V tile
  int warps;              // one warp per 16 * m_tiles_per_warp query rows
  int m_tiles_per_warp;   // 16-row MMA tiles per warp
  int kv_stages;          // cp.async ring depth for K and for V
  bool q_in_registers;    // Q fragments loaded once (else re-read from shared memory per K tile)
  int min_blocks_per_sm;  // __launch_bounds__ occupancy target (caps registers per thread)
  bool persistent;        // compiled with the persistent schedule (persistent_fits() must hold)
  bool padded_rows;       // shared-memory rows padded by 16 bytes (ldmatrix); else swizzled (wgmma)
};

constexpr TileConfig tile_config(TileShape shape, int head_size) {
  TileConfig c{};
  c.kv_stages = 2;
  if (shape == TileShape::wg128) {
    c.warps = 8;
    c.m_tiles_per_warp = 1;
    c.block_m = 128;
    // D = 64: 64-key tiles at <= 128 registers, 2 CTAs (16 warps) per SM. 128-key tiles need 175
    // registers (one CTA per SM) and ran 95.2 vs 72.9 µs (H100, H = 16, S = 384, B = 32).
    // D = 128: 128-key tiles, one CTA of up to 255 registers (64-key tiles at 2 CTAs per SM spill
    // 468 bytes at the 128-register cap, ptxas -v).
    // Not kept either (same run, D = 64): CTAs of one warpgroup (64 rows, 4 per SM; twice the K/V reads
    // from L2, 164 bytes of spills): 80.7 vs 71.1 µs at H = 16 S = 384 B = 32, 98.6 vs 83.9 at H = 12
    // S = 512 (ragged varlen 49.2 vs 50.1).
    c.block_n = head_size <= 64 ? 64 : 128;
    c.min_blocks_per_sm = head_size <= 64 ? 2 : 1;
    c.q_in_registers = false;  // Q is a shared-memory wgmma operand
    // Persistent at D <= 64 (measured at D = 64): the next item's Q and K_0 load under the current
    // item's last P·V and epilogue. Same H100 run, µs, against one item per CTA: H = 16 S = 384 B = 32 73.4 vs 76.0,
    // H = 12 S = 128 B = 128 48.8 vs 51.8, ragged varlen 52.6 vs 53.3, S = 512 within 0.5%. At D = 128
    // (long items, 255 registers) it ran 661 vs 652 (BF16 S = 2048): one item per CTA there.
    c.persistent = head_size <= 64;
    c.padded_rows = false;
    return c;
  }
  c.padded_rows = true;
  c.warps = 4;
  c.m_tiles_per_warp = shape == TileShape::m64 ? 1 : 2;
  c.block_m = c.warps * 16 * c.m_tiles_per_warp;
  // Keys per K/V tile: 64 gives 8 score n-tiles (32 fp32 registers per 16 rows) and amortizes each Q
  // fragment over 8 MMAs. D = 128 halves it: its output accumulators (D/2 per 16 rows) leave no room
  // for 64 scores per 16 rows beside them under the register caps below (measured: spills).
  // (m128n64 fits 64 at D = 128 by holding P rounded: see TileShape.)
  c.block_n = head_size > 96 && shape != TileShape::m128n64 ? 32 : 64;
  // Q fragments cost m_tiles * D / 4 registers per thread (32 for 32 rows x D = 64): kept where they fit
  // beside the output (m_tiles * D / 2) and score (m_tiles * BN / 2) accumulators under the cap.
  // (D = 96 keeps Q in shared memory: with it in registers ptxas spills at both register caps.)
  c.q_in_registers = c.m_tiles_per_warp * head_size <= 128 && head_size != 96;
  // Register caps: m128 255 (2 x 128 threads per SM); m64 168 (3 x 128 threads), 128 for D = 32
  // (4 x 128). ptxas -v: no spills for any instance on sm_80 or sm_90a.
  c.min_blocks_per_sm = shape == TileShape::m64 ? (head_size <= 32 ? 4 : 3) : 2;
  // The persistent schedule (below) keeps the next item's pointers and the item walk in registers:
  // D = 64 (both shapes) still compiles without spills (ptxas -v, sm_90a); D = 32 / 80 / 96 and
  // D = 128 at BM = 64 spilled, so they keep one query tile per CTA.
  // D = 128 at BM = 128 compiled without spills too but ran 3% slower (255 registers; its items are
  // long, so there was no start-up latency to hide): one tile per CTA.
  c.persistent = head_size == 64;
  return c;
}

// Shared-memory rows are padded by 16 bytes: the row pitch in 16-byte chunks (D/8 + 1 = 5, 9, 11, 13,
// 17) is odd for every supported D, so the 8 row addresses of one ldmatrix 8x8 matrix fall in 8
// different bank groups (conflict-free), and so do the 4-byte fragment stores of the epilogue.
constexpr int smem_row_elems(int head_size) { return head_size + 8; }

// K/V ring stages a run needs: never more than its tiles of keys (S <= BN needs one).
constexpr int kv_stages_for(const TileConfig& c, int max_seqlen) {
  const int tiles = (max_seqlen + c.block_n - 1) / c.block_n;
  return tiles < 1 ? 1 : (tiles < c.kv_stages ? tiles : c.kv_stages);
}

// Dynamic shared memory (bytes, 2-byte elements): `q_buffers` Q tiles (each reused for staging its
// item's output) plus `stages` K tiles and `stages` V tiles.
// The Hopper tile's swizzled tiles need a 1024-byte aligned base: the kernel aligns the dynamic
// shared memory itself, within this much slack.
inline constexpr int kSmemAlignSlack = 1024;
constexpr int smem_bytes(const TileConfig& c, int head_size, int stages, int q_buffers = 1) {
  return c.padded_rows ? (q_buffers * c.block_m + 2 * stages * c.block_n) * smem_row_elems(head_size) * 2
                       : (q_buffers * c.block_m + 2 * stages * c.block_n) * head_size * 2 + kSmemAlignSlack;
}

// Persistent schedule: a CTA computes several query tiles in turn and issues the next tile's Q, K0,
// V0 and K1 under the current tile's last K/V tile, so the load latency at the start of every tile
// (measured as ~3 K/V-tile times of a CTA's life at 2 CTAs per SM) overlaps compute. It needs a
// second Q buffer and both K/V stages; used where that still keeps min_blocks_per_sm CTAs on an
// H100 SM (228 KiB, 1 KiB reserved per CTA). D = 96 at BM = 64 does not fit (3 x 81 KiB).
inline constexpr int kSmemPerSmH100 = 228 * 1024;
constexpr bool persistent_fits(const TileConfig& c, int head_size) {
  return c.min_blocks_per_sm * (smem_bytes(c, head_size, 2, 2) + 1024) <= kSmemPerSmH100;
}

// Query-tile slots of one head in varlen mode, from host-known sizes only: sequence b owns the slots
// [floor(cu[b]/BM) + b, floor(cu[b+1]/BM) + b + 1), which hold its ceil(len_b/BM) tiles (and at most
// two surplus slots that exit at once). So the grid is floor(T/BM) + B per head, with no device scan.
constexpr std::int64_t varlen_tile_slots(int block_m, std::int64_t num_tokens, int batch) {
  return num_tokens / block_m + batch;
}

// Varlen batches of at most this many sequences are scheduled longest-first: one warp holds every
// length (4 per lane, loaded at once), so resolving a CTA's work costs one global-load latency plus a
// few warp reductions per length class. Larger batches keep the sequence-ordered slots above (their
// per-CTA search is ceil(log32 B) dependent loads).
// What ragged batches can gain at most with these tiles: a query tile costs ceil(len / BN) K/V tiles
// whatever its rows, so a batch's tile work is sum_b ceil(len_b / BM) * ceil(len_b / BN). For lengths
// uniform in [S/4, S] at S = 384 (200 random batches of 32) that is 0.595 of the full-length tile work
// at BM = 128, BN = 64 (0.536 at BM = 64), against 0.442 of the attention work itself; the H100 runs
// the m128 persistent kernel at 0.68 of its full-length time (87% of the tile bound). m64 tiles ran
// 59.8 vs 56.8 µs there: less padding, slower tiles.
inline constexpr int kLongestFirstMaxBatch = 128;
constexpr bool varlen_longest_first(int batch) { return batch <= kLongestFirstMaxBatch; }

// Longest-first order of the query tiles of one head (varlen, batch <= kLongestFirstMaxBatch). Every
// query tile of a sequence costs the same (its K/V tiles, no causal mask), so the order sorts
// sequences by their cost class ceil(len_b / kLongestFirstClassKeys), largest first, then by b, and
// lists each sequence's ceil(len_b / BM) tiles consecutively. The hardware
// hands CTAs to SMs in index order and the CTA index is slot-major (slot * H + head), so the longest
// sequences of all heads start first and the last wave is made of the cheapest tiles (instead of a
// long sequence whose CTAs happened to be numbered last). Returns false for a slot past the last tile.
// Host reference of the device mapping in fused_schedule.cuh (the CPU tests check its properties).
// Classes of 64 keys (the K/V tile of D <= 96) separate costs finely enough for the static
// persistent schedule to balance (a simulation of the H = 16, S = 384 ragged batch: the slowest CTA
// 4% closer to the mean than with classes of BM keys), in at most 64 rounds at S = 4096.
inline constexpr int kLongestFirstClassKeys = 64;
constexpr int longest_first_class(int len) { return (len + kLongestFirstClassKeys - 1) / kLongestFirstClassKeys; }
constexpr bool longest_first_tile(const int* lens, int batch, int block_m, int max_seqlen, std::int64_t slot,
                                  int& seq, int& m_block) {
  for (int k = longest_first_class(max_seqlen); k >= 1; --k)
    for (int b = 0; b < batch; ++b) {
      if (longest_first_class(lens[b]) != k) continue;
      const int tiles = (lens[b] + block_m - 1) / block_m;
      if (slot < tiles) {
        seq = b;
        m_block = static_cast<int>(slot);
        return true;
      }
      slot -= tiles;
    }
  return false;
}

// Picks the tile shape for a run. S <= 64: m64 (a 128-row tile would be at least half padding).
// Otherwise m128 when it still gives at least 4 CTAs per SM over the run (2 resident per SM, so two
// waves and a tail that is a small fraction); else m64, whose smaller tiles spread a small batch
// over more SMs (132 on H100) and hold 3 CTAs per SM.
constexpr TileShape choose_tile(int max_seqlen, std::int64_t batch_times_heads, int num_sms) {
  if (max_seqlen <= 64) return TileShape::m64;
  const std::int64_t ctas_m128 = batch_times_heads * ((max_seqlen + 127) / 128);
  return ctas_m128 >= 4LL * num_sms ? TileShape::m128 : TileShape::m64;
}

// The 128-row shape a head size runs by default: m128n64 where it is compiled (D = 128), else m128.
// A shape without a kernel for the head size (m128n64 forced at D != 128) runs m128, the same tile there.
constexpr TileShape tile_for_head_size(TileShape shape, int head_size) {
  if (shape == TileShape::m128 && has_tile(TileShape::m128n64, head_size)) return TileShape::m128n64;
  if (!has_tile(shape, head_size)) return TileShape::m128;
  return shape;
}

// The Hopper tile runs sequences longer than this; shorter ones keep the persistent sm_80 m128 tile,
// which hides their load latency across items (H100, FP16 H = 12 S = 128 B = 128: 45.0 vs 50.1 µs).
inline constexpr int kWgmmaMinSeqlen = 129;

// The 128-row shape of a head size on a device of version `sm` for sequences of max_seqlen: the Hopper
// tile where it runs, has a kernel for the head size and the sequences are long enough, else
// tile_for_head_size(m128).
constexpr TileShape large_tile_for_device(int head_size, int sm, int max_seqlen) {
  if (tile_runs_on(TileShape::wg128, sm) && has_tile(TileShape::wg128, head_size) && max_seqlen >= kWgmmaMinSeqlen)
    return TileShape::wg128;
  return tile_for_head_size(TileShape::m128, head_size);
}

// The default shape of a run on a device: choose_tile()'s choice, its 128 rows as large_tile_for_device().
constexpr TileShape choose_tile_for_device(int max_seqlen, std::int64_t batch_times_heads, int head_size, int num_sms,
                                           int sm) {
  const TileShape shape = choose_tile(max_seqlen, batch_times_heads, num_sms);
  return shape == TileShape::m128 ? large_tile_for_device(head_size, sm, max_seqlen)
                                  : tile_for_head_size(shape, head_size);
}

}  // namespace qkv2ctx::fused_sm80
