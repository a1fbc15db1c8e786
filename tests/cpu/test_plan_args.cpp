// Every Plan::run / Plan::problem_size argument error, through the CPU backend, with its message;
// make_plan errors; CUDA backends requested on a machine without CUDA. A failed call must leave the
// output untouched.
#include <cstring>

#include "common/test_util.hpp"
#include "core/backend.hpp"

using namespace qkv2ctx;
using qkv2ctx::test::HostTensor;

namespace {

template <class F>
std::string error_message(F&& f, ErrorCode code) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no qkv2ctx::Error was thrown";
  return "";
}

#define EXPECT_ERROR_CODE(statement, fragment, code)                                               \
  do {                                                                                             \
    const std::string msg_ = error_message([&] { statement; }, code);                              \
    EXPECT_NE(msg_.find(fragment), std::string::npos) << "message:  " << msg_ << "\nexpected: " << (fragment); \
  } while (0)
#define EXPECT_ERROR(statement, fragment) EXPECT_ERROR_CODE(statement, fragment, ErrorCode::invalid_argument)

// A valid call of one mode, to break one argument at a time. E = 8 (N = 2, H = 4) for float
// modes; chw32 uses N = 1, H = 32.
struct Call {
  AttentionDesc desc;
  HostTensor qkv, out;
  std::vector<std::int32_t> lens, cu;
  AttentionArgs args;
  alignas(16) std::uint8_t ws[2 * kStatsBytes];
  Workspace workspace{ws, sizeof(ws)};

  Call(MaskMode mask, Layout layout = Layout::trt, DType dtype = DType::fp16) {
    desc.dtype = dtype, desc.mask = mask, desc.layout = layout;
    desc.num_heads = 2, desc.head_size = 4;
    if (layout == Layout::chw32) desc.num_heads = 1, desc.head_size = 32;
    const std::int64_t E = desc.hidden_size(), S = 5, B = 3;
    if (mask == MaskMode::varlen) {
      lens = {5, 0, 4};
      cu = test::prefix_sums(lens);  // T = 9, plus 2 spare rows
      if (layout == Layout::chw32) {
        qkv = HostTensor(dtype, {3 * E / 32, 11, 32});
        out = HostTensor(dtype, {E / 32, 11, 32});
      } else {
        qkv = HostTensor(dtype, {11, 3 * E});
        out = HostTensor(dtype, {11, E});
      }
      args.cu_seqlens = TensorView(cu.data(), DType::int32, MemSpace::host, {B + 1});
      args.max_seqlen = 5;
    } else {
      qkv = HostTensor(dtype, layout == Layout::trt ? std::vector<std::int64_t>{S, B, 3 * E} : std::vector<std::int64_t>{B, S, 3 * E});
      out = HostTensor(dtype, layout == Layout::trt ? std::vector<std::int64_t>{S, B, E} : std::vector<std::int64_t>{B, S, E});
      if (mask == MaskMode::lengths) {
        lens = {5, 2, 0};
        args.seq_lens = TensorView(lens.data(), DType::int32, MemSpace::host, {B});
      }
    }
    qkv.fill_random(test::fresh_seed());
    out.fill_byte(0x3C);
    args.qkv = qkv.view();
    args.out = out.view();
  }
  void set_cu(std::vector<std::int32_t> v) {
    cu = std::move(v);
    args.cu_seqlens.data = cu.data();
  }
  Plan plan() const { return make_plan(desc, {Backend::cpu}); }
  void run() const { plan().run(args, workspace); }
  ProblemSize size() const { return plan().problem_size(args); }
  bool out_untouched() const {
    for (auto b : out.bytes)
      if (b != 0x3C) return false;
    return true;
  }
};

// Runs the broken call, checks the message, and that nothing was written.
#define EXPECT_RUN_ERROR(call, fragment)      \
  do {                                        \
    EXPECT_ERROR((call).run(), fragment);     \
    EXPECT_TRUE((call).out_untouched());      \
  } while (0)

}  // namespace

TEST(PlanArgs, ValidCallsRunAndReportTheirSize) {
  for (MaskMode mask : {MaskMode::none, MaskMode::lengths, MaskMode::varlen})
    for (Layout layout : {Layout::trt, Layout::hf}) {
      Call c(mask, layout);
      EXPECT_NO_THROW(c.run()) << to_string(mask) << " " << to_string(layout);
      const ProblemSize p = c.size();
      EXPECT_EQ(p.batch, 3);
      EXPECT_EQ(p.max_seqlen, 5);
      EXPECT_EQ(p.num_tokens, mask == MaskMode::varlen ? 11 : 15);
    }
  Call chw(MaskMode::varlen, Layout::chw32, DType::int8);
  EXPECT_NO_THROW(chw.run());
  EXPECT_EQ(chw.size().num_tokens, 11);
}

TEST(PlanArgs, NullPointers) {
  { Call c(MaskMode::none); c.args.qkv.data = nullptr; EXPECT_RUN_ERROR(c, "qkv: data pointer is null"); }
  { Call c(MaskMode::none); c.args.out.data = nullptr; EXPECT_ERROR(c.run(), "out: data pointer is null"); }
  { Call c(MaskMode::lengths); c.args.seq_lens = {}; EXPECT_RUN_ERROR(c, "seq_lens: data pointer is null"); }
  { Call c(MaskMode::varlen); c.args.cu_seqlens = {}; EXPECT_RUN_ERROR(c, "cu_seqlens: data pointer is null"); }
}

TEST(PlanArgs, WrongDtype) {
  { Call c(MaskMode::none); c.args.qkv.dtype = DType::fp32; EXPECT_RUN_ERROR(c, "qkv: dtype fp32 is not allowed, expected fp16"); }
  { Call c(MaskMode::none); c.args.out.dtype = DType::bf16; EXPECT_RUN_ERROR(c, "out: dtype bf16 is not allowed, expected fp16"); }
  { Call c(MaskMode::lengths); c.args.seq_lens.dtype = DType::fp32; EXPECT_RUN_ERROR(c, "seq_lens: dtype fp32 is not allowed, expected int32"); }
  { Call c(MaskMode::varlen); c.args.cu_seqlens.dtype = DType::int8; EXPECT_RUN_ERROR(c, "cu_seqlens: dtype int8 is not allowed, expected int32"); }
}

TEST(PlanArgs, CudaTensorOnACpuPlan) {
  const char* want = "memory space cuda does not match the plan's backend, which needs host";
  { Call c(MaskMode::none); c.args.qkv.space = MemSpace::cuda; EXPECT_RUN_ERROR(c, std::string("qkv: ") + want); }
  { Call c(MaskMode::none); c.args.out.space = MemSpace::cuda; EXPECT_RUN_ERROR(c, std::string("out: ") + want); }
  { Call c(MaskMode::lengths); c.args.seq_lens.space = MemSpace::cuda; EXPECT_RUN_ERROR(c, std::string("seq_lens: ") + want); }
  { Call c(MaskMode::varlen); c.args.cu_seqlens.space = MemSpace::cuda; EXPECT_RUN_ERROR(c, std::string("cu_seqlens: ") + want); }
}

TEST(PlanArgs, WrongRankOrDimensions) {
  { Call c(MaskMode::none); c.args.qkv = TensorView(c.qkv.data(), DType::fp16, MemSpace::host, {15, 24});
    EXPECT_RUN_ERROR(c, "qkv: shape [15, 24] has rank 2, expected rank 3"); }
  { Call c(MaskMode::varlen); c.args.qkv = TensorView(c.qkv.data(), DType::fp16, MemSpace::host, {11, 24, 1});
    EXPECT_RUN_ERROR(c, "qkv: shape [11, 24, 1] has rank 3, expected rank 2"); }
  { Call c(MaskMode::none); c.args.out = TensorView(c.out.data(), DType::fp16, MemSpace::host, {5, 24});
    EXPECT_RUN_ERROR(c, "out: shape [5, 24] has rank 2, expected rank 3"); }
  { Call c(MaskMode::none); c.args.qkv = TensorView(c.qkv.data(), DType::fp16, MemSpace::host, {5, 4, 18});
    EXPECT_RUN_ERROR(c, "qkv: shape [5, 4, 18] dimension 2 must be 3E = 24"); }
  { Call c(MaskMode::none); c.args.out = TensorView(c.out.data(), DType::fp16, MemSpace::host, {5, 3, 7});
    EXPECT_RUN_ERROR(c, "out: shape [5, 3, 7] dimension 2 must be E = 8"); }
  { Call c(MaskMode::none); c.args.out = TensorView(c.out.data(), DType::fp16, MemSpace::host, {4, 3, 8});
    EXPECT_RUN_ERROR(c, "out: shape [4, 3, 8] dimension 0 must be S = 5"); }
  { Call c(MaskMode::none, Layout::hf); c.args.out = TensorView(c.out.data(), DType::fp16, MemSpace::host, {3, 4, 8});
    EXPECT_RUN_ERROR(c, "out: shape [3, 4, 8] dimension 1 must be S = 5"); }
  { Call c(MaskMode::none, Layout::hf); c.args.out = TensorView(c.out.data(), DType::fp16, MemSpace::host, {2, 5, 8});
    EXPECT_RUN_ERROR(c, "out: shape [2, 5, 8] dimension 0 must be B = 3"); }
  { Call c(MaskMode::varlen); c.args.qkv = TensorView(c.qkv.data(), DType::fp16, MemSpace::host, {11, 23});
    EXPECT_RUN_ERROR(c, "qkv: shape [11, 23] dimension 1 must be 3E = 24"); }
  { Call c(MaskMode::varlen); c.args.out = TensorView(c.out.data(), DType::fp16, MemSpace::host, {10, 8});
    EXPECT_RUN_ERROR(c, "out: shape [10, 8] dimension 0 must be T (rows of qkv) = 11"); }
  { Call c(MaskMode::varlen); c.args.out = TensorView(c.out.data(), DType::fp16, MemSpace::host, {11, 9});
    EXPECT_RUN_ERROR(c, "out: shape [11, 9] dimension 1 must be E = 8"); }
  { Call c(MaskMode::none); c.args.qkv.shape[1] = -3;
    EXPECT_RUN_ERROR(c, "qkv: shape [5, -3, 24] has a negative dimension"); }
  { Call c(MaskMode::varlen); c.args.cu_seqlens = TensorView(c.cu.data(), DType::int32, MemSpace::host, {0});
    EXPECT_RUN_ERROR(c, "cu_seqlens: shape [0] must have at least 1 element (B + 1)"); }
  { Call c(MaskMode::varlen); c.args.cu_seqlens = TensorView(c.cu.data(), DType::int32, MemSpace::host, {2, 2});
    EXPECT_RUN_ERROR(c, "cu_seqlens: shape [2, 2] has rank 2, expected rank 1"); }
  EXPECT_ERROR((TensorView(nullptr, DType::fp16, MemSpace::host, {1, 1, 1, 1, 1, 1})), "TensorView: rank 6 is not allowed (at most 5)");
}

TEST(PlanArgs, Chw32Dimensions) {
  // N = 1, H = 32: E = 32, qkv [3, T, 32], out [1, T, 32].
  { Call c(MaskMode::varlen, Layout::chw32, DType::int8); c.args.qkv = TensorView(c.qkv.data(), DType::int8, MemSpace::host, {2, 11, 32});
    EXPECT_RUN_ERROR(c, "qkv: shape [2, 11, 32] dimension 0 must be 3E/32 = 3"); }
  { Call c(MaskMode::varlen, Layout::chw32, DType::int8); c.args.qkv = TensorView(c.qkv.data(), DType::int8, MemSpace::host, {3, 22, 16});
    EXPECT_RUN_ERROR(c, "qkv: shape [3, 22, 16] dimension 2 must be 32 = 32"); }
  { Call c(MaskMode::varlen, Layout::chw32, DType::int8); c.args.qkv = TensorView(c.qkv.data(), DType::int8, MemSpace::host, {3, 352});
    EXPECT_RUN_ERROR(c, "qkv: shape [3, 352] has rank 2, expected rank 3"); }
  { Call c(MaskMode::varlen, Layout::chw32, DType::int8); c.args.out = TensorView(c.out.data(), DType::int8, MemSpace::host, {1, 10, 32});
    EXPECT_RUN_ERROR(c, "out: shape [1, 10, 32] dimension 1 must be T = 11"); }
  { Call c(MaskMode::varlen, Layout::chw32, DType::int8); c.args.out = TensorView(c.out.data(), DType::int8, MemSpace::host, {2, 11, 16});
    EXPECT_RUN_ERROR(c, "out: shape [2, 11, 16] dimension 0 must be E/32 = 1"); }
}

TEST(PlanArgs, EmptyBatchOrSequence) {
  for (Layout layout : {Layout::trt, Layout::hf}) {
    const bool trt = layout == Layout::trt;
    const std::string order = trt ? "([S, B, 3E] for layout trt)" : "([B, S, 3E] for layout hf)";
    Call s0(MaskMode::none, layout);
    s0.args.qkv = TensorView(s0.qkv.data(), DType::fp16, MemSpace::host, {trt ? 0 : 3, trt ? 3 : 0, 24});
    EXPECT_RUN_ERROR(s0, "needs S >= 1 and B >= 1 " + order);
    Call b0(MaskMode::lengths, layout);
    b0.args.qkv = TensorView(b0.qkv.data(), DType::fp16, MemSpace::host, {trt ? 5 : 0, trt ? 0 : 5, 24});
    EXPECT_RUN_ERROR(b0, "needs S >= 1 and B >= 1 " + order);
  }
}

TEST(PlanArgs, LengthsAndCuSeqlensBelongToTheirModes) {
  { Call c(MaskMode::lengths); c.args.seq_lens = TensorView(c.lens.data(), DType::int32, MemSpace::host, {2});
    EXPECT_RUN_ERROR(c, "seq_lens: shape [2] dimension 0 must be B = 3"); }
  { Call c(MaskMode::lengths); c.args.seq_lens = TensorView(c.lens.data(), DType::int32, MemSpace::host, {3, 1});
    EXPECT_RUN_ERROR(c, "seq_lens: shape [3, 1] has rank 2, expected rank 1"); }
  { Call c(MaskMode::none); std::int32_t lens[3] = {1, 2, 3};
    c.args.seq_lens = TensorView(lens, DType::int32, MemSpace::host, {3});
    EXPECT_RUN_ERROR(c, "seq_lens was given but mask mode none does not read it"); }
  { Call c(MaskMode::varlen); std::int32_t lens[3] = {1, 2, 3};
    c.args.seq_lens = TensorView(lens, DType::int32, MemSpace::host, {3});
    EXPECT_RUN_ERROR(c, "seq_lens was given but mask mode varlen does not read it"); }
  for (MaskMode mask : {MaskMode::none, MaskMode::lengths}) {
    Call c(mask);
    std::int32_t cu[4] = {0, 1, 2, 3};
    c.args.cu_seqlens = TensorView(cu, DType::int32, MemSpace::host, {4});
    EXPECT_RUN_ERROR(c, std::string("cu_seqlens was given but mask mode ") + std::string(to_string(mask)) + " does not read it");
  }
}

TEST(PlanArgs, CuSeqlensContentsAndMaxSeqlen) {
  { Call c(MaskMode::varlen); c.args.max_seqlen = 0;
    EXPECT_RUN_ERROR(c, "max_seqlen = 0 is not allowed: varlen needs a host upper bound >= 1 of the sequence lengths"); }
  { Call c(MaskMode::varlen); c.args.max_seqlen = -2; EXPECT_RUN_ERROR(c, "max_seqlen = -2 is not allowed"); }
  { Call c(MaskMode::varlen); c.set_cu({1, 5, 5, 9});
    EXPECT_RUN_ERROR(c, "cu_seqlens[0] = 1 is not allowed: it must be 0"); }
  { Call c(MaskMode::varlen); c.set_cu({0, 5, 3, 9});
    EXPECT_RUN_ERROR(c, "cu_seqlens must be non-decreasing: cu_seqlens[2] = 3 < cu_seqlens[1] = 5"); }
  { Call c(MaskMode::varlen); c.set_cu({0, 2, 8, 9});
    EXPECT_RUN_ERROR(c, "sequence 1 has length 6 > max_seqlen = 5"); }
  { Call c(MaskMode::varlen); c.set_cu({0, 5, 8, 12});
    EXPECT_RUN_ERROR(c, "cu_seqlens[B] = 12 exceeds the 11 token rows of qkv"); }
}

TEST(PlanArgs, Workspace) {
  { Call c(MaskMode::none); c.workspace.bytes = 100;
    EXPECT_RUN_ERROR(c, "workspace of 100 bytes is too small: this problem needs 256 (Plan::workspace_bytes)"); }
  { Call c(MaskMode::none); c.workspace.data = nullptr;
    EXPECT_RUN_ERROR(c, "workspace.data is null but 256 bytes are needed"); }
  { Call c(MaskMode::none); c.workspace = {c.ws + 1, sizeof(c.ws) - 1};
    EXPECT_RUN_ERROR(c, "workspace.data must be 16-byte aligned"); }
  { Call c(MaskMode::none);
    EXPECT_ERROR(c.plan().read_stats({nullptr, 0}), "read_stats: the workspace of the run is needed (at least 256 bytes)");
    EXPECT_ERROR(c.plan().read_stats({c.ws, 255}), "read_stats: the workspace of the run is needed"); }
  { Call c(MaskMode::none);
    EXPECT_ERROR(c.plan().workspace_bytes({-1, 5, 5}), "ProblemSize: batch, max_seqlen and num_tokens must be >= 0"); }
}

TEST(PlanArgs, NonContiguousTensors) {
  const char* want = "only dense row-major (contiguous) tensors are supported";
  { Call c(MaskMode::none); c.args.qkv.strides[1] *= 2; EXPECT_RUN_ERROR(c, std::string("qkv: ") + want); }
  { Call c(MaskMode::none); std::swap(c.args.out.strides[0], c.args.out.strides[1]); EXPECT_RUN_ERROR(c, std::string("out: ") + want); }
  { Call c(MaskMode::lengths); c.args.seq_lens.strides[0] = 2; EXPECT_RUN_ERROR(c, std::string("seq_lens: ") + want); }
  { Call c(MaskMode::varlen); c.args.cu_seqlens.strides[0] = -1; EXPECT_RUN_ERROR(c, std::string("cu_seqlens: ") + want); }
  // A size-1 dimension's stride does not matter.
  { Call c(MaskMode::varlen, Layout::chw32, DType::int8); c.args.out.strides[0] = 12345; EXPECT_NO_THROW(c.run()); }
}

TEST(PlanArgs, MakePlanRejectsAnInvalidDescriptor) {
  AttentionDesc d;
  d.num_heads = 0;
  EXPECT_ERROR(make_plan(d, {Backend::cpu}), "AttentionDesc.num_heads = 0 is not allowed");
  d = {};
  d.dtype = DType::int8;
  d.int8.ctx_scale = -1;
  EXPECT_ERROR(make_plan(d, {Backend::cpu}), "int8.ctx_scale = -1.000000 is not allowed");
  d = {};
  d.bound = BoundMode::fixed_bound;
  EXPECT_ERROR(make_plan(d, {Backend::cpu}), "AttentionDesc.bound = fixed_bound is not allowed");
  d = {};
  d.layout = Layout::chw32;
  EXPECT_ERROR(make_plan(d, {Backend::automatic}), "chw32 (TensorRT plugin v3) requires dtype int8");
  EXPECT_ERROR(make_plan(AttentionDesc{}, {static_cast<Backend>(42)}), "PlanOptions.backend has an unknown value");
}

TEST(PlanArgs, CudaBackendsWithoutCudaAreUnsupportedWithAReason) {
  if (test::have_cuda_device()) GTEST_SKIP() << "a CUDA device is present";
  for (Backend b : {Backend::cuda_fused, Backend::cuda_unfused}) {
    const std::string msg = error_message([&] { make_plan(AttentionDesc{}, {b}); }, ErrorCode::unsupported);
    const std::string head = "backend " + std::string(to_string(b)) + " cannot run " + describe(AttentionDesc{}) + ": ";
    ASSERT_EQ(msg.rfind(head, 0), 0u) << msg;
    EXPECT_GT(msg.size(), head.size() + 10) << "the reason is missing: " << msg;
    if (!cuda_built()) { EXPECT_NE(msg.find("built without CUDA"), std::string::npos) << msg; }
  }
  const Plan automatic = make_plan(AttentionDesc{}, {Backend::automatic});
  EXPECT_EQ(automatic.backend(), Backend::cpu);
  EXPECT_NE(automatic.describe().find("running the CPU reference"), std::string::npos) << automatic.describe();
}
