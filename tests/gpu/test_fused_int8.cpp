// The fused INT8 family against the CPU INT8 emulation (SPEC 5.0 steps 1-8): the sm_80 schedules
// (buffered, resident, streaming) and, on an SM 9.0 device, the wgmma one (forced through
// QKV2CTX_INT8_SCHEDULE), every layout, mask mode and bound mode,
// head sizes 32 / 64 / 128, S = 1 ... 4097, B = 1 and 7 with ragged and empty sequences, outputs and
// workspace poisoned (gpu_test_util's compare_with_reference).
//
// Tolerance (expect_matches_reference): within 1 LSB on >= 99.9% of outputs and never more than 2 LSB,
// row counters equal to the reference's. Why 1 LSB can happen at all: the kernel's exponential is
// ex2.approx (relative error ~2^-22) where the reference rounds exp2 exactly, and FP32 row sums are
// added in another order, so a probability 127 p within ~1e-6 of a .5 boundary can round the other way;
// one such flip moves one output by |v| * scale_bmm2 (v <= 127), i.e. about 1 LSB at these scales.
// Two flips in the same output (2 LSB) are rarer still; more than 2 would be a bug.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "cuda/fused_sm80/int8_params.hpp"
#include "gpu/gpu_test_util.hpp"

using namespace qkv2ctx;
using namespace qkv2ctx::test;

namespace {

const PlanOptions kFused{Backend::cuda_fused, 0};

// Sets an environment variable for the plans made in its scope (the backend reads it at plan creation).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (value.empty()) ::unsetenv(name);
    else ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

// Scale settings. benign: s_qkv = 0.02 with values up to 127 (amax 2.54), p_max = 0.8: the fixed bound
// never fails. stress: s_qkv = 0.3 (amax 38), values up to 20: logits have std ~12, p_max = 181 > 87.3,
// so under the fixed bound most rows underflow, and spike tokens (q = k = +20 in every lane, logit
// 64 * 400 * 0.01125 = 288 > p_max + 88.7) overflow it.
struct Scales {
  float qkv_scale, ctx_scale;
  int int_amax, spikes;
};
constexpr Scales kBenign{0.02f, 0.01f, 127, 0};
constexpr Scales kStress{0.3f, 0.075f, 20, 2};

AttentionDesc int8_desc(int N, int H, Layout layout, MaskMode mask, BoundMode bound, const Scales& s) {
  AttentionDesc d;
  d.dtype = DType::int8;
  d.num_heads = N;
  d.head_size = H;
  d.layout = layout;
  d.mask = mask;
  d.bound = bound;
  d.int8.qkv_scale = s.qkv_scale;
  d.int8.ctx_scale = s.ctx_scale;
  return d;
}

ProblemSpec int8_spec(MaskMode mask, int B, int S, const Scales& s) {
  ProblemSpec spec = random_problem(mask, B, S, fresh_seed());
  spec.int_amax = s.int_amax;
  spec.int8_spike_tokens = s.spikes;
  return spec;
}

// Runs one case under the given schedule ("" = the automatic choice).
void check(const AttentionDesc& d, const ProblemSpec& spec, const std::string& schedule) {
  SCOPED_TRACE("schedule " + (schedule.empty() ? std::string("auto") : schedule));
  ScopedEnv env("QKV2CTX_INT8_SCHEDULE", schedule);
  std::cout << "  [" << (schedule.empty() ? "auto" : schedule) << "]";
  expect_matches_reference(d, spec, kFused);
}

// Whether this device runs the wgmma schedule for head size H (SM 9.0 and a kernel for H).
bool wgmma_runs(int H) { return device_sm() == 90 && fused_int8::has_wgmma_int8_kernel(H); }

// Every schedule that can run head size H on this device (any S).
std::vector<std::string> all_schedules(int H) {
  std::vector<std::string> v = {"buffered", "resident", "streaming"};
  if (wgmma_runs(H)) v.push_back("wgmma");
  return v;
}

// Schedules a case runs under: all where the resident one can take it (S <= 512 and K, Vt within the
// H100's 227 KiB per block), else both long-sequence kernels where wgmma runs, else the automatic choice.
std::vector<std::string> schedules_for(int S, int H) {
  using namespace fused_int8;
  const int cap = round_up(S, kChunkKeys);
  if (S <= kResidentMaxKeys && resident_smem(H, 16, cap).total + kStaticSmemReserve <= 227 * 1024)
    return all_schedules(H);
  if (wgmma_runs(H)) return {"streaming", "wgmma"};
  return {""};
}

}  // namespace

// ---- host-side policy (no GPU needed) ---------------------------------------------------------------------

TEST(FusedInt8Policy, ScheduleAndGrid) {
  using namespace fused_int8;
  const int smem = 227 * 1024;
  const Int8Options resident{Int8Options::Force::resident, 0};
  // Automatic: buffered while its row buffers leave 12 warps per SM (exponentials in shared memory, one
  // exponential per element: S <= 128 at D = 64), streaming (two exponentials, 16 warps per SM) beyond.
  EXPECT_EQ(plan_int8_launch(64, MaskMode::varlen, 128, 128, 128 * 128, 12, smem).schedule, Int8Schedule::buffered);
  EXPECT_EQ(plan_int8_launch(64, MaskMode::varlen, 32, 384, 32 * 384, 16, smem).schedule, Int8Schedule::streaming);
  EXPECT_EQ(plan_int8_launch(64, MaskMode::varlen, 32, 384, 32 * 384, 16, smem).tile_keys, kStreamTileKeys);
  EXPECT_EQ(plan_int8_launch(64, MaskMode::varlen, 32, 512, 32 * 512, 16, smem).schedule, Int8Schedule::streaming);
  EXPECT_EQ(buffered_occupancy(64, 384, smem, 128).warps_per_sm, 8);
  EXPECT_EQ(buffered_occupancy(64, 512, smem, 128).warps_per_sm, 6);
  EXPECT_EQ(plan_int8_launch(64, MaskMode::varlen, 8, 2048, 8 * 2048, 16, smem).schedule, Int8Schedule::streaming);
  // Resident at S = 128 (one warp per 16-row block, single pass).
  Int8Launch l = plan_int8_launch(64, MaskMode::varlen, 128, 128, 128 * 128, 12, smem, resident);
  EXPECT_EQ(l.schedule, Int8Schedule::resident);
  EXPECT_EQ(l.key_groups, 1);
  EXPECT_EQ(l.keys_capacity, 128);
  EXPECT_EQ(l.block_m, 512);  // whole sequences per CTA, enlarged to cut idle varlen slots
  EXPECT_LE(l.smem_bytes, kTwoCtaSmem);
  EXPECT_EQ(l.tile_slots, 128 * 128 / l.block_m + 128);  // varlen: floor(T / BM) + B slots per head
  EXPECT_EQ(l.ctas, l.tile_slots * 12);
  EXPECT_EQ(plan_int8_launch(64, MaskMode::none, 1, 513, 513, 1, smem, resident).key_groups, 8);  // beyond capacity
  EXPECT_EQ(plan_int8_launch(64, MaskMode::none, 1, 512, 512, 1, smem, resident).key_groups, 4);
  EXPECT_EQ(plan_int8_launch(64, MaskMode::none, 1, 1025, 1025, 1, smem).schedule, Int8Schedule::streaming);
  // A lone short sequence: small CTAs spread it over more SMs; never more rows than the sequence has.
  EXPECT_LE(plan_int8_launch(64, MaskMode::none, 1, 64, 64, 1, smem).block_m, 64);
  // Forced resident at the bars' shapes: whole sequences per CTA where that still gives full waves
  // (S = 384, 16 heads), half sequences where it would leave a half-empty last wave (S = 512, 12 heads).
  EXPECT_GE(plan_int8_launch(64, MaskMode::varlen, 32, 384, 32 * 384, 16, smem, resident).block_m, 384);
  EXPECT_EQ(plan_int8_launch(64, MaskMode::varlen, 32, 512, 32 * 512, 12, smem, resident).block_m, 256);
  EXPECT_EQ(key_groups_for(1), 1);
  EXPECT_EQ(key_groups_for(129), 2);
  EXPECT_EQ(key_groups_for(512), 4);
  // Padded: ceil(S / BM) tiles per (sequence, head).
  l = plan_int8_launch(32, MaskMode::lengths, 7, 300, 7 * 300, 3, smem, resident);
  EXPECT_EQ(l.tile_slots, (300 + l.block_m - 1) / l.block_m);
  EXPECT_EQ(l.ctas, l.tile_slots * 7 * 3);
  // Every resident tile chosen fits the device.
  for (int S : {1, 65, 200, 384, 512})
    for (int D : {32, 64, 128})
      for (MaskMode m : {MaskMode::lengths, MaskMode::varlen}) {
        const Int8Launch r = plan_int8_launch(D, m, 7, S, 7 * S, 3, smem, resident);
        EXPECT_EQ(r.schedule, Int8Schedule::resident);
        EXPECT_LE(r.smem_bytes + kStaticSmemReserve, smem) << "S=" << S << " D=" << D;
        EXPECT_EQ(r.block_m % 16, 0);
      }
}

// SM 9.0: the wgmma schedule automatically for D = 64 beyond S = 256 with the fixed bound (its streaming
// form: 64-key tiles; row_max keeps the sm_80 streaming kernel); when forced, for D = 64 and 128 at any S
// (the whole row in one 128-key tile up to S = 128); 128 query rows per CTA.
TEST(FusedInt8Policy, HopperSchedule) {
  using namespace fused_int8;
  const int smem = 227 * 1024;
  const Int8Options forced{Int8Options::Force::wgmma, 0};
  for (int S : {1, 128, 129, 384, 4097})
    for (int D : {64, 128}) {
      const Int8Launch l = plan_int8_launch(D, MaskMode::varlen, 32, S, 32 * S, 16, smem, forced, 132, 90);
      EXPECT_EQ(l.schedule, Int8Schedule::wgmma) << "S=" << S << " D=" << D;
      EXPECT_EQ(l.block_m, kWgmmaInt8BlockM);
      EXPECT_EQ(l.tile_keys, S <= 128 ? kWgmmaInt8WholeRowKeys : kWgmmaInt8TileKeys);
      EXPECT_EQ(l.smem_bytes, int8_wgmma_smem(D, l.tile_keys));
      EXPECT_LE(l.smem_bytes + kStaticSmemReserve, smem);
      EXPECT_EQ(l.tile_slots, 32 * S / kWgmmaInt8BlockM + 32);
      EXPECT_EQ(l.ctas, l.tile_slots * 16);
      const bool automatic = D == 64 && S > 256;
      EXPECT_EQ(plan_int8_launch(D, MaskMode::varlen, 32, S, 32 * S, 16, smem, {}, 132, 90).schedule == Int8Schedule::wgmma,
                automatic)
          << "S=" << S << " D=" << D;
    }
  const Int8Launch padded = plan_int8_launch(64, MaskMode::lengths, 7, 300, 7 * 300, 3, smem, {}, 132, 90);
  EXPECT_EQ(padded.schedule, Int8Schedule::wgmma);
  EXPECT_EQ(padded.ctas, 3 * 7 * 3);  // ceil(300 / 128) tiles per (sequence, head)
  EXPECT_EQ(plan_int8_launch(64, MaskMode::varlen, 32, 256, 32 * 256, 16, smem, {}, 132, 90).schedule,
            Int8Schedule::streaming);
  for (BoundMode bound : {BoundMode::fixed_bound, BoundMode::guarded, BoundMode::row_max})
    EXPECT_EQ(plan_int8_launch(64, MaskMode::none, 32, 384, 32 * 384, 16, smem, {}, 132, 90, bound).schedule,
              bound == BoundMode::row_max ? Int8Schedule::streaming : Int8Schedule::wgmma);
  // No wgmma kernel for D = 32, and none before or after SM 9.0.
  EXPECT_NE(plan_int8_launch(32, MaskMode::varlen, 32, 384, 32 * 384, 16, smem, {}, 132, 90).schedule, Int8Schedule::wgmma);
  EXPECT_NE(plan_int8_launch(64, MaskMode::varlen, 32, 384, 32 * 384, 16, smem, {}, 108, 80).schedule, Int8Schedule::wgmma);
  EXPECT_NE(plan_int8_launch(64, MaskMode::varlen, 32, 384, 32 * 384, 16, smem, {}, 142, 100).schedule, Int8Schedule::wgmma);
}

// Buffered: the warps per CTA maximize warps per SM within shared memory; every forced choice up to
// S = 512 fits the device with 16 .. 64 rows per CTA, and its buffer holds every key.
TEST(FusedInt8Policy, BufferedFits) {
  using namespace fused_int8;
  const int smem = 227 * 1024;
  const Int8Options buffered{Int8Options::Force::buffered, 0};
  EXPECT_EQ(choose_buffered_warps(64, 384, smem), 4);  // 108 KiB per CTA: 2 CTAs = 8 warps per SM
  EXPECT_EQ(choose_buffered_warps(64, 512, smem), 3);  // 4 warps (140 KiB) would leave 4 warps per SM
  // 64-key tiles up to S = 128, 128-key tiles beyond (same ring size: 4 x 64 or 2 x 128 keys).
  EXPECT_EQ(plan_int8_launch(64, MaskMode::none, 128, 128, 128 * 128, 12, smem).tile_keys, 64);
  const Int8Launch s384 = plan_int8_launch(64, MaskMode::none, 32, 384, 32 * 384, 16, smem, buffered);
  EXPECT_EQ(s384.tile_keys, 128);
  EXPECT_EQ(s384.block_m, 64);
  EXPECT_EQ(s384.keys_capacity, 384);
  EXPECT_EQ(buffered_smem(64, 64, 384, 128).total, buffered_smem(64, 64, 384, 64).total);
  EXPECT_EQ(plan_int8_launch(64, MaskMode::none, 32, 384, 32 * 384, 16, smem, Int8Options{Int8Options::Force::buffered, 0, 64}).tile_keys, 64);
  for (int S : {1, 63, 64, 65, 200, 384, 511, 512, 1024})
    for (int D : {32, 64, 128})
      for (MaskMode m : {MaskMode::lengths, MaskMode::varlen}) {
        const Int8Launch r = plan_int8_launch(D, m, 7, S, 7 * S, 3, smem, buffered);
        EXPECT_EQ(r.schedule, Int8Schedule::buffered);
        EXPECT_LE(r.smem_bytes + kStaticSmemReserve, smem) << "S=" << S << " D=" << D;
        EXPECT_EQ(r.block_m % 16, 0);
        EXPECT_GE(r.block_m, 16);
        EXPECT_LE(r.block_m, 16 * kBufferedMaxWarps);
        EXPECT_GE(r.keys_capacity, S);
        EXPECT_EQ(r.keys_capacity % r.tile_keys, 0);
      }
}

// ---- correctness against the CPU emulation -----------------------------------------------------------------

// Every S of the issue; each S runs every mask mode (layouts and bound modes rotate across cases),
// under both schedules where the resident one applies.
TEST(FusedInt8, SequenceLengths) {
  QKV2CTX_REQUIRE_GPU();
  const int lengths[] = {1, 2, 63, 64, 65, 127, 128, 129, 384, 511, 512, 513, 1000, 1024, 2048, 4097};
  const BoundMode bounds[] = {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded};
  const int heads[] = {64, 32, 64, 128};
  int k = 0;
  for (int S : lengths) {
    for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
      ++k;
      const Layout layout = mask == MaskMode::varlen ? (k % 3 == 0 ? Layout::chw32 : (k % 3 == 1 ? Layout::trt : Layout::hf))
                                                     : (k % 2 ? Layout::trt : Layout::hf);
      const BoundMode bound = bounds[k % 3];
      const Scales& sc = (k % 2) ? kStress : kBenign;
      const int H = heads[k % 4];
      const int B = S >= 1000 ? (mask == MaskMode::none ? 1 : 3) : ((k % 2) ? 7 : 1);
      const int N = S >= 1000 ? 1 : 2;
      const AttentionDesc d = int8_desc(N, H, layout, mask, bound, sc);
      const ProblemSpec spec = int8_spec(mask, B, S, sc);
      for (const std::string& sched : schedules_for(S, H)) check(d, spec, sched);
    }
  }
}

// Every layout x mask mode x bound mode x head size on a short, ragged problem (both schedules).
TEST(FusedInt8, AllCombinations) {
  QKV2CTX_REQUIRE_GPU();
  for (int H : {32, 64, 128})
    for (Layout layout : {Layout::trt, Layout::hf, Layout::chw32})
      for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
        if (layout == Layout::chw32 && mask != MaskMode::varlen) continue;
        for (BoundMode bound : {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded})
          for (const Scales* sc : {&kBenign, &kStress}) {
            const AttentionDesc d = int8_desc(3, H, layout, mask, bound, *sc);
            const ProblemSpec spec = int8_spec(mask, 7, 77, *sc);
            for (const std::string& sched : all_schedules(H)) check(d, spec, sched);
          }
      }
}

// The fixed bound driven into underflow and overflow at D = 64 (QKV amax 32 and 64: p_max = 128 and
// 512, far above 87.3, so rows whose logits are small underflow; spike tokens give logits far above
// p_max + 88.7): fixed_bound reproduces the reference (its zeroed rows included), guarded repairs
// exactly the rows the reference repairs (counters equal), and guarded matches row_max.
TEST(FusedInt8, FixedBoundFailures) {
  QKV2CTX_REQUIRE_GPU();
  // Spike tokens are drawn among all token rows; in lengths mode one can land in padding, where it is
  // no key, so overflow is required of the whole test, not of every case.
  std::int64_t total_underflow = 0, total_overflow = 0;
  for (float amax : {32.0f, 64.0f})
    for (MaskMode mask : {MaskMode::varlen, MaskMode::lengths}) {
      // Integer values up to 24 (amax 32: p_max = 128) or 18 (amax 64: p_max = 512): random rows have
      // largest logits ~35 resp. ~80, below p_max - 87.3 (underflow); a spike query against a spike key
      // (all 64 lanes at the maximum) has logit 293 resp. 657, above p_max + 88.7 (overflow).
      const Scales sc{amax / 127.0f, amax / 127.0f / 4.0f, amax == 32.0f ? 24 : 18, 3};
      const int S = amax == 32.0f ? 200 : 100;  // the wgmma schedule's streaming and whole-row forms
      for (const std::string& sched : all_schedules(64)) {
        ScopedEnv env("QKV2CTX_INT8_SCHEDULE", sched);
        for (BoundMode bound : {BoundMode::fixed_bound, BoundMode::guarded}) {
          const AttentionDesc d = int8_desc(2, 64, Layout::trt, mask, bound, sc);
          const ProblemSpec spec = int8_spec(mask, 5, S, sc);
          const Comparison c = compare_with_reference(d, spec, kFused, fresh_seed());
          std::cout << "  [" << sched << "] " << c.summary() << std::endl;
          EXPECT_GT(c.ref_stats.fixed_bound_underflow_rows, 0) << "the case should underflow: " << c.label;
          total_underflow += c.ref_stats.fixed_bound_underflow_rows;
          total_overflow += c.ref_stats.fixed_bound_overflow_rows;
          EXPECT_EQ(c.unwritten, 0) << c.label;
          EXPECT_EQ(c.touched_outside, 0) << c.label;
          expect_int8_within_bar(c);
          EXPECT_EQ(c.gpu_stats.fixed_bound_underflow_rows, c.ref_stats.fixed_bound_underflow_rows) << c.summary();
          EXPECT_EQ(c.gpu_stats.fixed_bound_overflow_rows, c.ref_stats.fixed_bound_overflow_rows) << c.summary();
          EXPECT_EQ(c.gpu_stats.repaired_rows, c.ref_stats.repaired_rows) << c.summary();
          if (bound == BoundMode::guarded)
            EXPECT_EQ(c.gpu_stats.repaired_rows,
                      c.ref_stats.fixed_bound_underflow_rows + c.ref_stats.fixed_bound_overflow_rows);
        }
        // guarded vs row_max on the GPU, same inputs: repaired rows use the row maximum, the others
        // the fixed bound, which (not failing) differs from the row maximum only by FP32 rounding.
        const ProblemSpec spec = int8_spec(mask, 5, S, sc);
        const std::uint64_t seed = fresh_seed();
        const HostProblem hp = make_host_problem(int8_desc(2, 64, Layout::trt, mask, BoundMode::row_max, sc), spec, seed);
        const DeviceTensor qkv = DeviceTensor::from_host(hp.qkv);
        const DeviceTensor lens = DeviceTensor::from_host(hp.seq_lens);
        const DeviceTensor cu = DeviceTensor::from_host(hp.cu_seqlens);
        HostTensor outs[2];
        int idx = 0;
        for (BoundMode bound : {BoundMode::row_max, BoundMode::guarded}) {
          const AttentionDesc d = int8_desc(2, 64, Layout::trt, mask, bound, sc);
          const Plan plan = make_plan(d, kFused);
          DeviceTensor out{DeviceBuffer(static_cast<std::size_t>(hp.qkv.numel() / 3)), DType::int8, hp.out_shape};
          out.buffer.fill_byte(0x7f);
          AttentionArgs a;
          a.qkv = qkv.view();
          a.out = out.view();
          if (mask == MaskMode::lengths) a.seq_lens = lens.view();
          else {
            a.cu_seqlens = cu.view();
            a.max_seqlen = spec.max_seqlen;
          }
          DeviceBuffer ws(plan.workspace_bytes(plan.problem_size(a)));
          plan.run(a, Workspace{ws.data(), ws.bytes()}, nullptr);
          (void)plan.read_stats(Workspace{ws.data(), ws.bytes()}, nullptr);
          outs[idx++] = out.to_host();
        }
        std::int64_t hist[4] = {0, 0, 0, 0}, compared = 0;
        for (std::int64_t i = 0; i < outs[0].numel(); ++i) {
          if (out_token_of(int8_desc(2, 64, Layout::trt, mask, BoundMode::row_max, sc), hp.out_shape, i) >= hp.covered_tokens) continue;
          ++compared;
          ++hist[std::min<std::int64_t>(3, static_cast<std::int64_t>(std::abs(outs[0].get(i) - outs[1].get(i))))];
        }
        std::cout << "  [" << sched << "] guarded vs row_max (amax " << amax << ", " << to_string(mask) << "): {0: "
                  << hist[0] << ", 1: " << hist[1] << ", 2: " << hist[2] << ", >2: " << hist[3] << "}" << std::endl;
        EXPECT_EQ(hist[3], 0);
        EXPECT_LE(static_cast<double>(hist[1] + hist[2]), 0.001 * static_cast<double>(compared));
      }
    }
  EXPECT_GT(total_underflow, 0);
  EXPECT_GT(total_overflow, 0) << "no case overflowed the fixed bound";
}

// Bad device cu_seqlens: nothing out of bounds (the sanitizer suite runs it too), and read_stats names
// the first violation.
TEST(FusedInt8, BadDeviceCuSeqlens) {
  QKV2CTX_REQUIRE_GPU();
  for (const std::string& sched : all_schedules(64)) {
    ScopedEnv env("QKV2CTX_INT8_SCHEDULE", sched);
    const AttentionDesc d = int8_desc(2, 64, Layout::trt, MaskMode::varlen, BoundMode::guarded, kStress);
    const Plan plan = make_plan(d, kFused);
    const int T = 100;
    HostTensor qkv(DType::int8, {T, 3 * d.hidden_size()});
    qkv.fill_random(fresh_seed(), 1.0, 20);
    const std::vector<std::int32_t> bad = {0, 60, 30, 100, 90};  // decreasing at sequence 1
    HostTensor cu(DType::int32, {static_cast<std::int64_t>(bad.size())});
    for (std::size_t i = 0; i < bad.size(); ++i) cu.set(static_cast<std::int64_t>(i), bad[i]);
    const DeviceTensor dqkv = DeviceTensor::from_host(qkv), dcu = DeviceTensor::from_host(cu);
    DeviceTensor out{DeviceBuffer(static_cast<std::size_t>(T) * d.hidden_size()), DType::int8, {T, d.hidden_size()}};
    AttentionArgs a;
    a.qkv = dqkv.view();
    a.out = out.view();
    a.cu_seqlens = dcu.view();
    a.max_seqlen = 64;
    DeviceBuffer ws(plan.workspace_bytes(plan.problem_size(a)));
    plan.run(a, Workspace{ws.data(), ws.bytes()}, nullptr);
    try {
      (void)plan.read_stats(Workspace{ws.data(), ws.bytes()}, nullptr);
      ADD_FAILURE() << "read_stats did not report the decreasing cu_seqlens";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("non-decreasing"), std::string::npos) << e.what();
    }
  }
}

TEST(FusedInt8, DeclinesWithReasons) {
  QKV2CTX_REQUIRE_GPU();
  AttentionDesc d = int8_desc(2, 48, Layout::trt, MaskMode::none, BoundMode::row_max, kBenign);
  try {
    (void)make_plan(d, kFused);
    ADD_FAILURE() << "head size 48 should be declined";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(std::string(e.what()).find("head size 48"), std::string::npos) << e.what();
  }
  d.head_size = 64;
  ScopedEnv env("QKV2CTX_INT8_SCHEDULE", "sideways");
  try {
    (void)make_plan(d, kFused);
    ADD_FAILURE() << "a bad QKV2CTX_INT8_SCHEDULE should be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("QKV2CTX_INT8_SCHEDULE"), std::string::npos) << e.what();
  }
}

// A forced wgmma schedule that cannot run is refused at plan creation, naming why.
TEST(FusedInt8, ForcedWgmmaRefusedWhereItCannotRun) {
  QKV2CTX_REQUIRE_GPU();
  ScopedEnv env("QKV2CTX_INT8_SCHEDULE", "wgmma");
  for (int H : {32, 64}) {
    if (wgmma_runs(H)) continue;
    try {
      (void)make_plan(int8_desc(2, H, Layout::trt, MaskMode::none, BoundMode::guarded, kBenign), kFused);
      ADD_FAILURE() << "forced wgmma at head size " << H << " on SM " << device_sm() << " should be refused";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unsupported);
      const std::string why = device_sm() != 90 ? "needs an SM 9.0 device" : "head size " + std::to_string(H);
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  }
}

// The buffered schedule with the tile size the plan does not pick for S (64-key tiles above S = 128,
// 128-key tiles up to it, through QKV2CTX_INT8_TILE_KEYS): partial last tiles with 1 to 3 chunks past
// the keys, every mask mode and bound mode.
TEST(FusedInt8, BufferedOtherTileKeys) {
  QKV2CTX_REQUIRE_GPU();
  const BoundMode bounds[] = {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded};
  int k = 0;
  for (int S : {1, 33, 129, 200, 384, 511})
    for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
      ++k;
      const Layout layout = mask == MaskMode::varlen && k % 2 ? Layout::chw32 : (k % 2 ? Layout::trt : Layout::hf);
      const Scales& sc = (k % 2) ? kStress : kBenign;
      const AttentionDesc d = int8_desc(2, k % 3 == 0 ? 128 : 64, layout, mask, bounds[k % 3], sc);
      ScopedEnv tiles("QKV2CTX_INT8_TILE_KEYS", S <= 128 ? "128" : "64");
      check(d, int8_spec(mask, 5, S, sc), "buffered");
    }
}

// The streaming schedule with both tile sizes (QKV2CTX_INT8_TILE_KEYS): full tiles run without key
// tests, the last tile masks; lengths that end anywhere in a tile, every mask and bound mode.
TEST(FusedInt8, StreamingTileKeys) {
  QKV2CTX_REQUIRE_GPU();
  const BoundMode bounds[] = {BoundMode::row_max, BoundMode::fixed_bound, BoundMode::guarded};
  int k = 0;
  for (const char* tile_keys : {"64", "128"})
    for (int S : {1, 65, 129, 200, 513, 1000})
      for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen}) {
        ++k;
        const Layout layout = mask == MaskMode::varlen && k % 2 ? Layout::chw32 : (k % 2 ? Layout::trt : Layout::hf);
        const Scales& sc = (k % 2) ? kStress : kBenign;
        const AttentionDesc d = int8_desc(2, k % 3 == 0 ? 128 : (k % 3 == 1 ? 64 : 32), layout, mask, bounds[k % 3], sc);
        ScopedEnv tiles("QKV2CTX_INT8_TILE_KEYS", tile_keys);
        check(d, int8_spec(mask, 3, S, sc), "streaming");
      }
}

TEST(FusedInt8, RejectsBadTileKeys) {
  QKV2CTX_REQUIRE_GPU();
  ScopedEnv env("QKV2CTX_INT8_TILE_KEYS", "96");
  try {
    (void)make_plan(int8_desc(2, 64, Layout::trt, MaskMode::none, BoundMode::row_max, kBenign), kFused);
    ADD_FAILURE() << "QKV2CTX_INT8_TILE_KEYS = 96 should be rejected";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("QKV2CTX_INT8_TILE_KEYS"), std::string::npos) << e.what();
  }
}

// ---- compute-sanitizer subset (bench/device.sh runs *Sanitizer* under memcheck and racecheck) ----------------

TEST(FusedInt8Sanitizer, TinyShapes) {
  QKV2CTX_REQUIRE_GPU();
  struct Case {
    AttentionDesc d;
    ProblemSpec spec;
  };
  const Case cases[] = {
      {int8_desc(2, 64, Layout::trt, MaskMode::varlen, BoundMode::guarded, kStress), int8_spec(MaskMode::varlen, 4, 70, kStress)},
      {int8_desc(1, 32, Layout::chw32, MaskMode::varlen, BoundMode::row_max, kBenign), int8_spec(MaskMode::varlen, 3, 33, kBenign)},
      {int8_desc(2, 128, Layout::hf, MaskMode::lengths, BoundMode::fixed_bound, kStress), int8_spec(MaskMode::lengths, 3, 40, kStress)},
      {int8_desc(1, 64, Layout::trt, MaskMode::none, BoundMode::row_max, kBenign), int8_spec(MaskMode::none, 1, 1, kBenign)},
      // wgmma: several 64-key tiles, a partial last one, a guarded repair
      {int8_desc(2, 64, Layout::hf, MaskMode::lengths, BoundMode::guarded, kStress), int8_spec(MaskMode::lengths, 2, 150, kStress)},
  };
  for (const Case& c : cases)
    for (const std::string& sched : all_schedules(c.d.head_size)) check(c.d, c.spec, sched);
}
