// The fused sm_80 INT8 kernel family: launch arguments, the two schedules and the host rule that picks
// one per run. Plain C++ (no CUDA headers): included by the kernels, the backend and the host tests, so
// every number below exists once.
//
// Probabilities are quantized after normalization (SPEC 5.0 step 6), so a row's exponential sum must be
// known before any of its probabilities enters P·V. Two schedules:
//   resident   the sequence's K and V (transposed) stay in shared memory; the row's exponentials stay in
//              registers, spread over `key_groups` warps (128 keys each) that exchange row maxima and
//              sums through shared memory and add their partial P·V at the end. One pass over the keys:
//              each exponential is computed once. S <= 4 * 128 = 512 and the K/V copy must fit.
//   streaming  flash-style K/V tiles of 128 keys through a 2-stage cp.async ring, every warp owns 16
//              query rows: pass 1 sums the exponentials (after a row-max pass in row_max mode), pass 2
//              recomputes Q·Kᵀ and the exponentials, quantizes with the known sum and accumulates P·V.
//              Any S; each exponential is computed twice.
//   buffered   K/V tiles streamed as in streaming, 16 query rows per warp, up to 4 warps per CTA; the
//              row's FP32 exponentials are kept in the warp's region of shared memory (16 x S x 4 B), so
//              the second pass reads them back instead of recomputing Q·Kᵀ and the exponentials, and
//              streams only V. Each exponential is computed once; shared memory bounds S (auto: <= 512).
#pragma once
#include <algorithm>
#include <cstdint>

#include "qkv2ctx/types.hpp"

namespace qkv2ctx {
struct StatsBlock;
}

namespace qkv2ctx::fused_int8 {

// streaming: 4 warps x 16 rows per CTA, 4 CTAs (16 warps) per SM at D <= 64. Measured on an H100 (D = 64,
// guarded, µs, 4 / 8 / 16 / 2 warps per CTA, same run): H = 16 S = 384 B = 32: 96.0 / 99.4 / 127.9 / 115.6;
// H = 16 S = 512 B = 32: 154.6 / 160.8 / 183.8 / 186.3; S = 2048 B = 8: 531.7 / 542.4 / 597.7 / 636.6. (Not
// profiled; presumably a barrier waits for 4 warps instead of 8, and the last wave is shorter.)
inline constexpr int kStreamWarps = 4;
inline constexpr int kStreamThreads = kStreamWarps * 32;
inline constexpr int kResidentWarps = 4;         // resident: 4 warps, so two CTAs (255 registers each)
inline constexpr int kResidentThreads = kResidentWarps * 32;  // share an SM and overlap their K/V copies
inline constexpr int kChunkKeys = 32;            // k extent of one P·V mma: the unit keys are dealt in
inline constexpr int kKeysPerWarp = 128;         // resident: exponentials per warp row (64 registers)
inline constexpr int kMaxKeyGroups = kResidentWarps;  // resident: warps sharing one 16-row block
inline constexpr int kResidentMaxKeys = kMaxKeyGroups * kKeysPerWarp;
// The automatic choice takes the resident schedule up to this S only. Measured on an H100 (D = 64,
// full-length varlen, same run): S = 128 resident 79.6-83.9 us vs streaming 83.5; S = 384 resident
// >= 186 us vs streaming 156; S = 512 resident >= 210 / 271 vs streaming 194 / 257. With key groups
// (S > 128) the resident CTA's 3 named barriers per 16-row block, the partial-context exchange and its
// 8 warps per SM (255 registers) cost more than the second pass of exponentials saves.
inline constexpr int kResidentAutoMaxKeys = 128;
inline constexpr int kStreamBlockM = kStreamWarps * 16;  // streaming: query rows per CTA
// streaming: keys per K/V tile (default; 64 or 128). Measured on an H100 (D = 64, guarded, µs, 64 vs 128):
// S = 384 H = 16 B = 32: 105.6 vs 102.3; S = 512 H = 12 B = 32: 130.5 vs 125.3; S = 2048 B = 8: 580.4 vs 542.3.
inline constexpr int kStreamTileKeys = 128;
inline constexpr int kBufferedMaxWarps = 4;              // buffered: warps (16 rows each) per CTA, at most
inline constexpr int kBufferedMaxThreads = kBufferedMaxWarps * 32;
inline constexpr int kEChunkBytes = 16 * kChunkKeys * 4;  // buffered: one warp's exponentials of a 32-key chunk
inline constexpr int kBufferedAutoMaxKeys = 512;         // buffered: automatic choice up to this S
// ... and only with at least this many warps per SM: the streaming schedule computes every exponential
// twice but keeps 16 warps per SM, and wins as soon as the buffers cut buffered below 12. Measured on an
// H100 (D = 64, guarded, µs, after both schedules got the contracted forms): S = 128 (16 warps per SM)
// buffered 45.7 vs streaming 55.1 (H = 12, B = 128); S = 384 (8 warps per SM) buffered 114.9 vs
// streaming 102.3 (H = 16, B = 32); S = 512: streaming 125.3 (H = 12) and 164.0 (H = 16).
inline constexpr int kBufferedAutoMinWarpsPerSm = 12;
// buffered: keys per K/V tile (64 or 128, a kernel template parameter) and ring stages (tiles in flight
// + 1): 64-key tiles are short steps (16 rows x 64 keys per warp), so one tile of prefetch does not cover
// an L2 round trip (measured with 2 stages: ~1100 cycles per tile of a K pass); 4 stages of 64 keys or 2 of
// 128 keys take the same shared memory.
// Measured on an H100 (D = 64, guarded, µs): S = 384 B = 32 H = 16: 144.1 (64) vs 129.7 (128); S = 512
// B = 32 H = 16: 308.4 vs 281.8; S = 128 B = 128 H = 12: 51.9 vs 52.5. The plan takes 128 above S = 128.
inline constexpr int kBufferedDefaultTileKeys = 64;
inline constexpr int kBufferedLongTileKeys = 128;
inline constexpr int kBufferedLongTileMinKeys = 129;  // S from which 128-key tiles are the default
constexpr int buffered_stages(int tile_keys) { return tile_keys == 64 ? 4 : 2; }
constexpr int buffered_tile_keys(int max_seqlen, int forced_tile_keys = 0) {
  if (forced_tile_keys == 64 || forced_tile_keys == 128) return forced_tile_keys;
  return max_seqlen >= kBufferedLongTileMinKeys ? kBufferedLongTileKeys : kBufferedDefaultTileKeys;
}

constexpr bool is_supported_head_size(int d) { return d == 32 || d == 64 || d == 128; }

// wgmma (sm_90a, fused_sm90/int8_wgmma.cuh): both GEMMs on the warpgroup MMA, 2 warpgroups x 64 query
// rows per CTA, V transposed once per tile in shared memory. Sequences of at most 128 keys keep the whole
// row in registers (one 128-key tile, each exponential computed once); longer ones run the streaming
// passes over 64-key tiles.
inline constexpr int kWgmmaInt8Threads = 256;
inline constexpr int kWgmmaInt8BlockM = 128;
inline constexpr int kWgmmaInt8TileKeys = 64;       // streaming
inline constexpr int kWgmmaInt8WholeRowKeys = 128;  // whole row: max_seqlen <= this
inline constexpr int kWgmmaInt8AlignSlack = 1024;   // swizzle atoms need 1024-byte aligned tiles
constexpr bool has_wgmma_int8_kernel(int d) { return d == 64 || d == 128; }
constexpr int wgmma_int8_tile_keys(int max_seqlen) {
  return max_seqlen <= kWgmmaInt8WholeRowKeys ? kWgmmaInt8WholeRowKeys : kWgmmaInt8TileKeys;
}
// Q [128][D] | K, V staging, Vᵀ tiles (two stages each when streaming, one for the whole row) | slack.
constexpr int int8_wgmma_smem(int head_size, int tile_keys = kWgmmaInt8TileKeys) {
  const int stages = tile_keys == kWgmmaInt8WholeRowKeys ? 1 : 2;
  return (kWgmmaInt8BlockM + 3 * stages * tile_keys) * head_size + kWgmmaInt8AlignSlack;
}

enum class Int8Schedule : std::uint8_t { resident, streaming, buffered, wgmma };

// Test and benchmark hooks; the defaults pick by the rules below.
struct Int8Options {
  enum class Force : std::uint8_t { automatic, resident, streaming, buffered, wgmma } force = Force::automatic;
  int block_m = 0;  // resident, buffered: query rows per CTA (a multiple of 16; buffered <= 64); 0 = choose
  int tile_keys = 0;  // buffered, streaming: keys per K/V tile, 64 or 128; 0 = buffered_tile_keys(S) /
                      // kStreamTileKeys
};

// Per-CTA counter slots (fixed_bound / guarded): each CTA writes its own, so no counter has to be
// zeroed before the launch; read back and summed on the host by read_stats.
struct Int8CounterSlot {
  std::uint32_t underflow_rows;
  std::uint32_t overflow_rows;
  std::uint32_t repaired_rows;
  std::uint32_t unused;
};

// Passed by value to both kernels.
struct Int8Params {
  const std::int8_t* qkv = nullptr;
  std::int8_t* out = nullptr;
  const std::int32_t* seq_lens = nullptr;    // mask lengths: [batch]
  const std::int32_t* cu_seqlens = nullptr;  // mask varlen: [batch + 1]
  StatsBlock* stats = nullptr;               // written by CTA 0 (errors, counters zeroed)
  Int8CounterSlot* slots = nullptr;          // [ctas] when the bound mode counts rows, else null
  std::uint32_t* slot_count = nullptr;       // CTA 0 writes the grid size here (with slots)
  std::int64_t num_tokens = 0;               // T: rows of qkv / out
  std::int64_t tile_slots = 0;               // query-tile slots per (sequence, head), or per head (varlen)
  int batch = 0;
  int max_seqlen = 0;   // S (padded) or the host upper bound (varlen; longer sequences are cut to it)
  int num_heads = 0;
  int block_m = 0;      // query rows per CTA
  int key_groups = 1;   // resident: warps per 16-row block (1, 2, 4 or 8)
  int keys_capacity = 0;  // resident: keys the shared-memory K / Vt regions hold (multiple of 32);
                          // buffered: keys each warp's exponential buffer holds (multiple of 64)
  float scale_bmm1 = 0, scale_softmax = 0, scale_bmm2 = 0, fixed_bound = 0;
  Layout layout = Layout::trt;
  MaskMode mask = MaskMode::none;
  BoundMode bound = BoundMode::row_max;
};

// ---- shared-memory layouts (bytes) -----------------------------------------------------------------

// resident: Q [block_m][D] | K [cap][D] | Vt [cap/32][D/16][32 lanes][16 B] | O partials
// [4 warps][16 rows][D] int32 (also the staging area of raw V rows, 256 keys per round) | row exchange
// [2][4 warps][16] x 4 B.
struct ResidentSmem {
  int q, k, vt, obuf, xch, total;
};
constexpr ResidentSmem resident_smem(int head_size, int block_m, int keys_capacity) {
  ResidentSmem s{};
  s.q = 0;
  s.k = s.q + block_m * head_size;
  s.vt = s.k + keys_capacity * head_size;
  s.obuf = s.vt + keys_capacity * head_size;
  s.xch = s.obuf + kResidentWarps * 16 * head_size * 4;
  s.total = s.xch + 2 * kResidentWarps * 16 * 4;
  return s;
}
// Shared memory the per-block opt-in limit must leave for the kernels' static variables (CTA counters,
// the cu_seqlens check's minimum; ~100 bytes).
inline constexpr int kStaticSmemReserve = 1024;
// Raw V rows staged per conversion round (the O-partials area holds 256 rows of D bytes).
inline constexpr int kVStageKeys = kResidentWarps * 16 * 4;
// Dynamic shared memory per CTA that still lets two resident CTAs share an SM (228 KiB per SM, minus
// 1 KiB reserved per CTA and the static variables).
inline constexpr int kTwoCtaSmem = 112 * 1024;

// streaming: Q [kStreamBlockM][D] | K ring [2][tile_keys][D] | V ring [2][tile_keys][D].
constexpr int streaming_smem(int head_size, int tile_keys = kStreamTileKeys) {
  return (kStreamBlockM + 4 * tile_keys) * head_size;
}
constexpr int streaming_tile_keys(int forced_tile_keys = 0) {
  return forced_tile_keys == 64 || forced_tile_keys == 128 ? forced_tile_keys : kStreamTileKeys;
}

// buffered: ring [buffered_stages][tile_keys][D] (K or V tiles) | exponentials [block_m / 16 warps][cap / 32
// chunks] x kEChunkBytes. Q [block_m][D] is staged at the start of the exponential region: every warp
// copies its Q fragments to registers before the first barrier of the passes, after which the region
// holds exponentials only (block_m * D <= the region: it holds at least 64 keys x 64 B per warp).
struct BufferedSmem {
  int ring, ebuf, q, total;
};
constexpr BufferedSmem buffered_smem(int head_size, int block_m, int keys_capacity,
                                     int tile_keys = kBufferedDefaultTileKeys) {
  BufferedSmem s{};
  s.ring = 0;
  s.ebuf = buffered_stages(tile_keys) * tile_keys * head_size;
  s.q = s.ebuf;
  s.total = s.ebuf + (block_m / 16) * (keys_capacity / kChunkKeys) * kEChunkBytes;
  return s;
}

// ---- the per-run choice ----------------------------------------------------------------------------

struct Int8Launch {
  Int8Schedule schedule = Int8Schedule::streaming;
  int block_m = kStreamBlockM;
  int tile_keys = kBufferedDefaultTileKeys;  // buffered, streaming
  int key_groups = 1;
  int keys_capacity = 0;
  int smem_bytes = 0;
  std::int64_t tile_slots = 0;
  std::int64_t ctas = 0;
};

constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Query-tile slots (see fused_tile_policy.hpp, varlen_tile_slots): per head, sequence b owns the slots
// [floor(cu[b]/BM) + b, floor(cu[b+1]/BM) + b + 1), so floor(T/BM) + B slots cover every tile with at
// most B + 1 idle CTAs and no device scan.
constexpr std::int64_t tile_slots_for(MaskMode mask, int block_m, int max_seqlen, std::int64_t num_tokens,
                                      int batch) {
  return mask == MaskMode::varlen ? num_tokens / block_m + batch : (max_seqlen + block_m - 1) / block_m;
}

// Warps per 16-row block so that 128 keys per warp cover max_seqlen.
constexpr int key_groups_for(int max_seqlen) {
  int g = 1;
  while (g * kKeysPerWarp < max_seqlen) g *= 2;
  return g;
}

// Busy CTAs of a launch with `block_m` query rows per CTA (varlen: at most one partial tile per sequence
// beyond T / block_m, and never more than B * ceil(S / block_m)).
inline std::int64_t busy_ctas(MaskMode mask, int block_m, int batch, int max_seqlen, std::int64_t num_tokens,
                              int num_heads) {
  const std::int64_t per_seq = (max_seqlen + block_m - 1) / block_m;
  std::int64_t tiles = static_cast<std::int64_t>(batch) * per_seq;
  if (mask == MaskMode::varlen) tiles = std::min(tiles, num_tokens / block_m + batch);
  return tiles * num_heads;
}

// Resident query rows per CTA: every CTA first copies its sequence's K and V (worth about 48 rows of
// compute), so more rows per CTA amortize the copy, but fewer, longer CTAs leave a larger last wave.
// Minimizes waves x (rows + 48) over multiples of 16 up to S, within the two-CTAs-per-SM shared memory
// (or the device limit when even 16 rows do not fit two per SM, e.g. D = 128 at S = 512).
inline int choose_resident_block_m(int head_size, MaskMode mask, int batch, int max_seqlen,
                                   std::int64_t num_tokens, int num_heads, int num_sms, int max_smem_optin) {
  const int cap = round_up(std::max(max_seqlen, 1), kChunkKeys);
  const int s16 = round_up(std::max(max_seqlen, 1), 16);
  const bool two_per_sm = resident_smem(head_size, 16, cap).total <= kTwoCtaSmem;
  const int smem_limit = two_per_sm ? kTwoCtaSmem : max_smem_optin - kStaticSmemReserve;
  const std::int64_t slots = static_cast<std::int64_t>(std::max(num_sms, 1)) * (two_per_sm ? 2 : 1);
  int best = 16;
  double best_cost = -1.0;
  for (int bm = 16; bm <= std::min(s16, 1024); bm += 16) {
    if (resident_smem(head_size, bm, cap).total > smem_limit) break;
    const std::int64_t ctas = busy_ctas(mask, bm, batch, max_seqlen, num_tokens, num_heads);
    const double cost = static_cast<double>((ctas + slots - 1) / slots) * (bm + 48);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best = bm;
    }
  }
  // varlen with whole sequences per CTA: each sequence owns floor(cu[b+1]/BM) - floor(cu[b]/BM) + 1 slots,
  // of which all but one idle; a larger BM (more Q rows reserved, no more work) removes idle CTAs (each
  // still resolves its slot through cu_seqlens). Measured at S = 128: BM = 512 79.6 us vs 128 83.9 us.
  if (mask == MaskMode::varlen && best >= s16) {
    int bm = std::min(4 * s16, 1024);
    while (bm > best && resident_smem(head_size, bm, cap).total > smem_limit) bm -= 16;
    best = std::max(best, bm);
  }
  return best;
}

// Buffered warps per CTA (1 .. 4): the most warps per SM that shared memory (the SM holds the opt-in
// limit + 1 KiB; each CTA also reserves 1 KiB and its static variables) and registers (as ptxas
// allocates them) allow; on a tie the larger CTA, which streams K and V fewer times.
// warps = 0 when not even one warp's buffer fits.
struct BufferedOccupancy {
  int warps;         // per CTA
  int warps_per_sm;  // resident warps per SM with that CTA
};
constexpr BufferedOccupancy buffered_occupancy(int head_size, int max_seqlen, int max_smem_optin,
                                               int tile_keys = kBufferedDefaultTileKeys) {
  const int cap = round_up(max_seqlen > 0 ? max_seqlen : 1, tile_keys);
  const int sm_smem = max_smem_optin + 1024;
  const int regs_per_thread = head_size <= 64 ? 128 : 160;  // ptxas: 80 / 111 / 143 for D = 32 / 64 / 128
  int best = 0, best_warps_per_sm = 0;
  for (int wpc = kBufferedMaxWarps; wpc >= 1; --wpc) {
    const int bytes = buffered_smem(head_size, 16 * wpc, cap, tile_keys).total;
    if (bytes + kStaticSmemReserve > max_smem_optin) continue;
    int ctas = sm_smem / (bytes + kStaticSmemReserve);
    ctas = std::min(ctas, 65536 / (regs_per_thread * 32 * wpc));
    ctas = std::min(ctas, 32);
    if (ctas * wpc > best_warps_per_sm) {
      best_warps_per_sm = ctas * wpc;
      best = wpc;
    }
  }
  return {best, best_warps_per_sm};
}
constexpr int choose_buffered_warps(int head_size, int max_seqlen, int max_smem_optin,
                                    int tile_keys = kBufferedDefaultTileKeys) {
  return buffered_occupancy(head_size, max_seqlen, max_smem_optin, tile_keys).warps;
}

// The automatic choice takes the wgmma schedule on SM 9.0 (it needs sm_90a) where it measured faster than
// the sm_80 schedules: D = 64 beyond S = 256 (its streaming form) with the fixed bound (fixed_bound,
// guarded). Measured on an H100 (guarded, median µs, wgmma / sm_80 streaming, same run): H = 16 S = 384
// B = 32 96.0 / 96.9 (other runs: 93.3 / 95.8, 95.7 / 95.2); H = 12 S = 512 118.7 / 118.7 (116.0 / 119.6);
// H = 16 S = 512 153.4 / 154.5; S = 1024 B = 8 142.7 / 145.5; S = 2048 B = 8 516.1 / 531.8; but S = 192
// 77.5 / 75.7 and S = 256 72.6 / 72.2. Not automatic: row_max (its extra max pass: S = 384 113.0 / 110.2,
// H = 16 S = 512 185.7 / 181.2, S = 2048 642.6 / 639.4), D = 128 (S = 384: 185.1 / 170.1, 1 CTA per SM at
// 198 registers) and the whole-row form (S = 128: D = 64 45.2 vs buffered 44.7, D = 128 56.2 vs 49.5).
inline constexpr int kWgmmaInt8AutoMinKeys = 257;
constexpr bool wgmma_int8_auto(int head_size, int max_seqlen, int sm, BoundMode bound) {
  return sm == 90 && head_size == 64 && max_seqlen >= kWgmmaInt8AutoMinKeys && bound != BoundMode::row_max;
}

// wgmma (automatically: wgmma_int8_auto; `sm` = major * 10 + minor, `bound` the run's bound mode),
// buffered (automatically: S <= 512 with at least kBufferedAutoMinWarpsPerSm warps per SM), resident (when
// forced: S <= 512 and K + Vt fit shared memory; automatically: S <= 128 when buffered does not fit) or
// streaming.
inline Int8Launch plan_int8_launch(int head_size, MaskMode mask, int batch, int max_seqlen,
                                   std::int64_t num_tokens, int num_heads, int max_smem_optin,
                                   const Int8Options& opt = {}, int num_sms = 132, int sm = 80,
                                   BoundMode bound = BoundMode::guarded) {
  Int8Launch l;
  if (opt.force == Int8Options::Force::wgmma ||
      (opt.force == Int8Options::Force::automatic && wgmma_int8_auto(head_size, max_seqlen, sm, bound))) {
    l.schedule = Int8Schedule::wgmma;
    l.block_m = kWgmmaInt8BlockM;
    l.tile_keys = wgmma_int8_tile_keys(max_seqlen);
    l.smem_bytes = int8_wgmma_smem(head_size, l.tile_keys);
    l.tile_slots = tile_slots_for(mask, l.block_m, max_seqlen, num_tokens, batch);
    l.ctas = l.tile_slots * num_heads * (mask == MaskMode::varlen ? 1 : batch);
    return l;
  }
  const int cap = round_up(std::max(max_seqlen, 1), kChunkKeys);
  const bool resident_fits = max_seqlen <= kResidentMaxKeys &&
                             resident_smem(head_size, 16, cap).total + kStaticSmemReserve <= max_smem_optin;
  const int tile_keys = buffered_tile_keys(max_seqlen, opt.tile_keys);
  const BufferedOccupancy occ = buffered_occupancy(head_size, max_seqlen, max_smem_optin, tile_keys);
  const int buffered_warps = occ.warps;
  const bool buffered = opt.force == Int8Options::Force::buffered ||
                        (opt.force == Int8Options::Force::automatic && buffered_warps > 0 &&
                         max_seqlen <= kBufferedAutoMaxKeys && occ.warps_per_sm >= kBufferedAutoMinWarpsPerSm);
  const bool resident = opt.force == Int8Options::Force::resident ||
                        (opt.force == Int8Options::Force::automatic && !buffered && resident_fits &&
                         max_seqlen <= kResidentAutoMaxKeys);
  if (buffered) {
    l.schedule = Int8Schedule::buffered;
    l.block_m = opt.block_m > 0 ? std::min(round_up(opt.block_m, 16), 16 * kBufferedMaxWarps)
                                : 16 * std::max(buffered_warps, 1);
    l.tile_keys = tile_keys;
    l.keys_capacity = round_up(std::max(max_seqlen, 1), tile_keys);
    l.smem_bytes = buffered_smem(head_size, l.block_m, l.keys_capacity, tile_keys).total;
  } else if (resident) {
    l.schedule = Int8Schedule::resident;
    l.block_m = opt.block_m > 0 ? round_up(opt.block_m, 16)
                                : choose_resident_block_m(head_size, mask, batch, max_seqlen, num_tokens, num_heads,
                                                          num_sms, max_smem_optin);
    l.key_groups = key_groups_for(max_seqlen);
    l.keys_capacity = cap;
    l.smem_bytes = resident_smem(head_size, l.block_m, cap).total;
  } else {
    l.schedule = Int8Schedule::streaming;
    l.block_m = kStreamBlockM;
    l.tile_keys = streaming_tile_keys(opt.tile_keys);
    l.smem_bytes = streaming_smem(head_size, l.tile_keys);
  }
  l.tile_slots = tile_slots_for(mask, l.block_m, max_seqlen, num_tokens, batch);
  l.ctas = l.tile_slots * num_heads * (mask == MaskMode::varlen ? 1 : batch);
  return l;
}

}  // namespace qkv2ctx::fused_int8
