// The packed mask of TensorRT's v1 fused path (SPEC §3.2.2): the [B, P] INT32 tensor that
// embLayerNormPlugin writes instead of valid lengths for S in {64, 96, 128, 384}.
//
// Word (b, mi, t) of thread t in M-tile mi of batch entry b sits at (b*xmmas_m + mi)*threads + t.
// With warp = t/32, lane = t%32, warp_n = warp / warps_m and col = warp_n*16 + (lane%4)*2, byte ni
// of the word covers the keys base = ni*16*warps_n + col: bits 8ni+{0..7} = keys
// base+{0,1,0,1,8,9,8,9}. Every key thus appears in several bits, threads and M-tiles; all copies
// carry the same value.
#include <string>

#include "core/trt_internal.hpp"

namespace qkv2ctx::trt {
namespace {

// Key offset from `base` of each bit within a word's byte.
constexpr int kBitKeyOffset[8] = {0, 1, 0, 1, 8, 9, 8, 9};

[[noreturn]] void mask_error(ErrorCode code, const std::string& message) {
  throw Error(code, std::string(kPluginName) + " packed mask: " + message);
}

bool sm_has_packed_mask(int sm) {
  for (int s : {75, 80, 86, 87, 89, 90, 100, 120})
    if (s == sm) return true;
  return false;
}

// Tensor width P for an S that has a packed layout (bertCommon.h packedMaskSize*).
int tensor_width(int S) { return S == 384 ? 24 * 256 : 4 * 128; }

int key_of(const PackedMaskLayout& l, int thread, int ni, int bit) {
  const int warp_n = (thread / 32) / l.warps_m;
  const int col = warp_n * 16 + (thread % 32 % 4) * 2;
  return ni * 16 * l.warps_n + col + kBitKeyOffset[bit];
}

void check_batch(int batch) {
  if (batch < 0)
    mask_error(ErrorCode::invalid_argument,
               "batch = " + std::to_string(batch) + " is not allowed: >= 0");
}

}  // namespace

int packed_mask_width(int sm, int type_id, int S) {
  const bool fp16_or_int8 = type_id == 1 || type_id == 2;
  if (!fp16_or_int8 || !sm_has_packed_mask(sm)) return 1;
  if (S == 64 || S == 96 || S == 128 || S == 384) return tensor_width(S);
  return 1;
}

PackedMaskLayout packed_mask_layout(int S) {
  PackedMaskLayout l;
  if (S == 64 || S == 96 || S == 128) {
    l.warps_m = 2;
    l.warps_n = 2;
  } else if (S == 384) {
    l.warps_m = 1;
    l.warps_n = 8;
  } else {
    mask_error(ErrorCode::invalid_argument,
               "S = " + std::to_string(S) +
                   " is not allowed: packed masks exist only for S = 64, 96, 128 and 384 (other "
                   "sequence lengths get valid lengths, width 1)");
  }
  l.threads = l.warps_m * l.warps_n * 32;
  l.xmmas_m = (S + 16 * l.warps_m - 1) / (16 * l.warps_m);
  l.xmmas_n = (S + 16 * l.warps_n - 1) / (16 * l.warps_n);
  return l;
}

std::vector<std::uint32_t> encode_packed_mask(std::span<const std::int32_t> key_mask, int batch,
                                              int S) {
  const PackedMaskLayout l = packed_mask_layout(S);
  check_batch(batch);
  const std::size_t keys = static_cast<std::size_t>(batch) * S;
  if (key_mask.size() != keys)
    mask_error(ErrorCode::invalid_argument,
               "key mask has " + std::to_string(key_mask.size()) +
                   " values, expected batch * S = " + std::to_string(keys));
  std::vector<std::uint32_t> words(static_cast<std::size_t>(batch) * tensor_width(S), 0u);
  for (int b = 0; b < batch; ++b) {
    const std::int32_t* row = key_mask.data() + static_cast<std::size_t>(b) * S;
    for (int t = 0; t < l.threads; ++t) {
      std::uint32_t word = 0;
      for (int ni = 0; ni < l.xmmas_n; ++ni)
        for (int bit = 0; bit < 8; ++bit)
          if (row[key_of(l, t, ni, bit)] == 1) word |= 1u << (8 * ni + bit);
      // The word does not depend on the M-tile: convertMask writes the same one for every mi.
      for (int mi = 0; mi < l.xmmas_m; ++mi)
        words[(static_cast<std::size_t>(b) * l.xmmas_m + mi) * l.threads + t] = word;
    }
  }
  return words;
}

std::vector<std::uint8_t> decode_packed_mask(std::span<const std::uint32_t> words, int batch,
                                             int S) {
  const PackedMaskLayout l = packed_mask_layout(S);
  check_batch(batch);
  const std::size_t width = tensor_width(S);
  if (words.size() != static_cast<std::size_t>(batch) * width)
    mask_error(ErrorCode::invalid_argument,
               "the mask tensor has " + std::to_string(words.size()) +
                   " words, expected batch * P = " + std::to_string(batch) + " * " +
                   std::to_string(width) + " for S = " + std::to_string(S));
  constexpr std::uint8_t kUnseen = 2;
  std::vector<std::uint8_t> valid(static_cast<std::size_t>(batch) * S, kUnseen);
  const int used_bits = 8 * l.xmmas_n;
  for (int b = 0; b < batch; ++b) {
    std::uint8_t* row = valid.data() + static_cast<std::size_t>(b) * S;
    // mi = 0 first, so the value kept for each key comes from M-tile 0 (SPEC §3.2.2); the other
    // tiles must agree, or the mask is not a per-key mask.
    for (int mi = 0; mi < l.xmmas_m; ++mi) {
      for (int t = 0; t < l.threads; ++t) {
        const std::size_t index = (static_cast<std::size_t>(b) * l.xmmas_m + mi) * l.threads + t;
        const std::uint32_t word = words[index];
        auto where = [&] {  // built only for an error message
          return "word " + std::to_string(index) + " (batch " + std::to_string(b) + ", M-tile " +
                 std::to_string(mi) + ", thread " + std::to_string(t) + ")";
        };
        if (used_bits < 32 && (word >> used_bits) != 0)
          mask_error(ErrorCode::invalid_argument,
                     where() + " has bits above bit " + std::to_string(used_bits - 1) +
                         " set: not a mask embLayerNormPlugin writes for S = " + std::to_string(S));
        for (int ni = 0; ni < l.xmmas_n; ++ni)
          for (int bit = 0; bit < 8; ++bit) {
            const int key = key_of(l, t, ni, bit);
            const std::uint8_t v = (word >> (8 * ni + bit)) & 1u;
            if (row[key] == kUnseen)
              row[key] = v;
            else if (row[key] != v)
              mask_error(ErrorCode::invalid_argument,
                         where() + " bit " + std::to_string(8 * ni + bit) + " says key " +
                             std::to_string(key) + " is " + (v ? "valid" : "masked") +
                             " but an earlier copy of that key's bit disagrees: the words are not "
                             "a per-key mask as embLayerNormPlugin writes it");
          }
      }
    }
  }
  for (std::uint8_t v : valid)
    if (v == kUnseen) mask_error(ErrorCode::internal, "a key is not covered by the layout");
  return valid;
}

std::vector<std::int32_t> packed_mask_to_lengths(std::span<const std::uint32_t> words, int batch,
                                                 int S) {
  const std::vector<std::uint8_t> valid = decode_packed_mask(words, batch, S);
  std::vector<std::int32_t> lengths(static_cast<std::size_t>(batch));
  for (int b = 0; b < batch; ++b) {
    const std::uint8_t* row = valid.data() + static_cast<std::size_t>(b) * S;
    int len = 0;
    while (len < S && row[len] == 1) ++len;
    for (int key = len + 1; key < S; ++key)
      if (row[key] == 1)
        mask_error(ErrorCode::unsupported,
                   "batch entry " + std::to_string(b) + " has key " + std::to_string(key) +
                       " valid after masked key " + std::to_string(len) +
                       ": non-prefix key masks are not supported yet (qkv2ctx takes valid lengths; "
                       "a mask converts to them only when its valid keys are 0 .. len-1)");
    lengths[b] = len;
  }
  return lengths;
}

}  // namespace qkv2ctx::trt
