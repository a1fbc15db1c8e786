// Bad inputs and run-time guarantees at the CUDA layer: misaligned pointers, small workspaces, host
// tensors on a CUDA plan, invalid device cu_seqlens (reported by read_stats, never followed out of
// bounds), 64-bit workspace sizes, stream-ordered runs that a CUDA graph can capture.
#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "gpu/gpu_test_util.hpp"

using namespace qkv2ctx;
using namespace qkv2ctx::test;

namespace {

const PlanOptions kUnfused{Backend::cuda_unfused, 0};

// The message of the qkv2ctx::Error `f` throws (with its code checked), or "" if it does not throw.
template <typename F>
std::string error_of(F&& f, ErrorCode expected = ErrorCode::invalid_argument) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), expected) << e.what();
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_CONTAINS(expr, text)                                          \
  do {                                                                             \
    const std::string qkv2ctx_msg_ = error_of([&] { expr; });                      \
    EXPECT_NE(qkv2ctx_msg_.find(text), std::string::npos)                          \
        << "expected an error containing \"" << (text) << "\", got \"" << qkv2ctx_msg_ << "\""; \
  } while (0)

AttentionDesc fp16_desc(MaskMode mask, Layout layout = Layout::trt) {
  AttentionDesc d;
  d.dtype = DType::fp16;
  d.num_heads = 2;
  d.head_size = 32;
  d.layout = layout;
  d.mask = mask;
  return d;
}

std::size_t numel(const std::vector<std::int64_t>& shape) {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

// One problem uploaded to the device with a plan and a workspace of the size the plan asks for.
struct GpuCase {
  AttentionDesc desc;
  ProblemSpec spec;
  HostProblem host;
  Plan plan;
  DeviceTensor qkv, seq_lens, cu_seqlens, out;
  DeviceBuffer workspace;

  GpuCase(const AttentionDesc& d, const ProblemSpec& s)
      : desc(d), spec(s), host(make_host_problem(d, s, fresh_seed())), plan(make_plan(d, kUnfused)),
        qkv(DeviceTensor::from_host(host.qkv)), seq_lens(DeviceTensor::from_host(host.seq_lens)),
        cu_seqlens(DeviceTensor::from_host(host.cu_seqlens)),
        out{DeviceBuffer(numel(host.out_shape) * element_size(d.dtype)), d.dtype, host.out_shape} {
    workspace = DeviceBuffer(plan.workspace_bytes(plan.problem_size(args())));
  }
  AttentionArgs args() const {
    AttentionArgs a;
    a.qkv = qkv.view();
    a.out = out.view();
    if (desc.mask == MaskMode::lengths) a.seq_lens = seq_lens.view();
    if (desc.mask == MaskMode::varlen) {
      a.cu_seqlens = cu_seqlens.view();
      a.max_seqlen = spec.max_seqlen;
    }
    return a;
  }
  Workspace ws() const { return {workspace.data(), workspace.bytes()}; }
  void run(cudaStream_t stream = nullptr) const { plan.run(args(), ws(), stream); }
};

ProblemSpec varlen_spec(std::vector<std::int32_t> lengths, int max_seqlen, int extra_tokens = 0) {
  ProblemSpec s;
  s.batch = static_cast<int>(lengths.size());
  s.max_seqlen = max_seqlen;
  s.lengths = std::move(lengths);
  s.extra_tokens = extra_tokens;
  return s;
}

TEST(GpuArgs, DescribeNamesTheBackend) {
  QKV2CTX_REQUIRE_GPU();
  const Plan plan = make_plan(fp16_desc(MaskMode::none), kUnfused);
  EXPECT_EQ(plan.backend(), Backend::cuda_unfused);
  EXPECT_EQ(plan.memory_space(), MemSpace::cuda);
  EXPECT_NE(plan.describe().find("cuBLASLt unfused: GEMM + softmax kernel ("), std::string::npos) << plan.describe();
}

TEST(GpuArgs, NonexistentDeviceIsNamed) {
  QKV2CTX_REQUIRE_GPU();
  // A device this machine lacks is `unsupported` (as on a CUDA build without any GPU), not a bad field.
  const std::string msg = error_of([] { make_plan(fp16_desc(MaskMode::none), PlanOptions{Backend::cuda_unfused, 999}); },
                                   ErrorCode::unsupported);
  EXPECT_NE(msg.find("CUDA device 999 does not exist"), std::string::npos) << msg;
}

TEST(GpuArgs, MisalignedPointersAreRejectedByName) {
  QKV2CTX_REQUIRE_GPU();
  GpuCase c(fp16_desc(MaskMode::varlen), varlen_spec({5, 7}, 8));
  // Same shapes, data shifted by one FP16 element (2 bytes: element-aligned, not 16-byte aligned).
  DeviceBuffer shifted(c.qkv.buffer.bytes() + 16);
  AttentionArgs a = c.args();
  a.qkv.data = static_cast<char*>(shifted.data()) + 2;
  EXPECT_ERROR_CONTAINS(c.plan.run(a, c.ws()), "qkv.data = 0x");
  EXPECT_ERROR_CONTAINS(c.plan.run(a, c.ws()), "is not 16-byte aligned");
  a = c.args();
  a.out.data = static_cast<char*>(shifted.data()) + 2;
  EXPECT_ERROR_CONTAINS(c.plan.run(a, c.ws()), "out.data = 0x");
  DeviceBuffer big_workspace(c.workspace.bytes() + 64);
  EXPECT_ERROR_CONTAINS(c.plan.run(c.args(), Workspace{static_cast<char*>(big_workspace.data()) + 8, c.workspace.bytes()}),
                        "workspace.data must be 16-byte aligned");
}

TEST(GpuArgs, TooSmallWorkspaceIsRejected) {
  QKV2CTX_REQUIRE_GPU();
  GpuCase c(fp16_desc(MaskMode::lengths, Layout::hf), random_problem(MaskMode::lengths, 3, 40, fresh_seed()));
  const std::size_t need = c.workspace.bytes();
  EXPECT_GT(need, 3ull * 2 * 40 * 40 * 4) << "the workspace must hold B*N*S*S FP32 scores";
  EXPECT_ERROR_CONTAINS(c.plan.run(c.args(), Workspace{c.workspace.data(), need - 1}),
                        "workspace of " + std::to_string(need - 1) + " bytes is too small: this problem needs " +
                            std::to_string(need));
  EXPECT_ERROR_CONTAINS(c.plan.run(c.args(), Workspace{nullptr, need}), "workspace.data is null");
}

TEST(GpuArgs, HostTensorsOnACudaPlanAreRejected) {
  QKV2CTX_REQUIRE_GPU();
  GpuCase c(fp16_desc(MaskMode::varlen), varlen_spec({5, 7}, 8));
  AttentionArgs a = c.args();
  a.qkv = c.host.qkv.view();
  EXPECT_ERROR_CONTAINS(c.plan.run(a, c.ws()), "qkv: memory space host does not match the plan's backend, which needs cuda");
  a = c.args();
  a.cu_seqlens = c.host.cu_seqlens.view();
  EXPECT_ERROR_CONTAINS(c.plan.run(a, c.ws()), "cu_seqlens: memory space host does not match");
}

TEST(GpuArgs, WorkspaceSizesUse64BitArithmetic) {
  QKV2CTX_REQUIRE_GPU();
  AttentionDesc d = fp16_desc(MaskMode::none);
  d.num_heads = 16;
  const Plan plan = make_plan(d, kUnfused);
  // B*N*S*S = 64 * 16 * 8192^2 = 2^36 scores: FP32 scores + FP16 probabilities = 6 bytes each.
  const std::size_t bytes = plan.workspace_bytes(ProblemSize{64, 8192, 64 * 8192});
  EXPECT_GE(bytes, (std::size_t{1} << 36) * 6);
  EXPECT_ERROR_CONTAINS(plan.workspace_bytes(ProblemSize{1 << 30, 1 << 30, 0}), "problem too large");
}

// Invalid device cu_seqlens cannot be seen by the host without a sync: the run clamps every range
// (no out-of-bounds access, which compute-sanitizer checks) and read_stats() reports the first bad
// entry. A following valid run on the same workspace is clean again.
TEST(GpuArgsSanitizer, BadDeviceCuSeqlensAreReportedNeverFollowed) {
  QKV2CTX_REQUIRE_GPU();
  struct Bad {
    std::vector<std::int32_t> cu;
    int max_seqlen;
    const char* message;
  };
  // The problem below has T = 12 token rows.
  const Bad cases[] = {
      {{1, 5, 9}, 8, "cu_seqlens[0] = 1 is not allowed: it must be 0"},
      {{0, 6, 4}, 8, "cu_seqlens must be non-decreasing: cu_seqlens[2] = 4 < cu_seqlens[1] = 6"},
      {{0, 3, 12}, 8, "sequence 1 has length 9 > max_seqlen = 8 (cu_seqlens[1] = 3, cu_seqlens[2] = 12)"},
      {{0, 4, 20}, 16, "cu_seqlens[B] = cu_seqlens[2] = 20 exceeds the 12 token rows of qkv"},
      {{-7, 2147483647, -2147483647 - 1}, 16, "cu_seqlens[0] = -7 is not allowed: it must be 0"},
      {{0, -100000, 100000}, 16, "cu_seqlens must be non-decreasing: cu_seqlens[1] = -100000 < cu_seqlens[0] = 0"},
  };
  for (DType dt : {DType::fp16, DType::int8}) {
    AttentionDesc d = fp16_desc(MaskMode::varlen, dt == DType::int8 ? Layout::chw32 : Layout::trt);
    d.dtype = dt;
    for (const Bad& bad : cases) {
      GpuCase c(d, varlen_spec({5, 7}, bad.max_seqlen));
      c.cu_seqlens.buffer.upload(bad.cu.data(), bad.cu.size() * sizeof(std::int32_t));
      EXPECT_NO_THROW(c.run());
      const std::string msg = error_of([&] { c.plan.read_stats(c.ws()); });
      EXPECT_NE(msg.find("invalid device cu_seqlens"), std::string::npos) << msg;
      EXPECT_NE(msg.find(bad.message), std::string::npos) << "expected \"" << bad.message << "\" in \"" << msg << "\"";
      // Valid again: the StatsBlock is reset by every run.
      const std::vector<std::int32_t> good{0, 5, 12};
      c.cu_seqlens.buffer.upload(good.data(), good.size() * sizeof(std::int32_t));
      c.run();
      EXPECT_NO_THROW(c.plan.read_stats(c.ws()));
    }
  }
}

TEST(GpuArgs, EmptyBatchAndEmptySequencesWriteNothingElse) {
  QKV2CTX_REQUIRE_GPU();
  // B = 0 (cu_seqlens = [0]) with 4 token rows: nothing to compute, nothing written.
  GpuCase empty(fp16_desc(MaskMode::varlen), varlen_spec({}, 16, 4));
  empty.out.buffer.fill_byte(0x7f);
  empty.run();
  EXPECT_NO_THROW(empty.plan.read_stats(empty.ws()));
  const HostTensor out = empty.out.to_host();
  for (std::uint8_t b : out.bytes) ASSERT_EQ(b, 0x7f);
  // Every sequence empty, max_seqlen = 1, more sequences than tokens.
  expect_matches_reference(fp16_desc(MaskMode::varlen), varlen_spec({0, 0, 0, 0, 0}, 1, 2), kUnfused);
  expect_matches_reference(fp16_desc(MaskMode::lengths), [] {
    ProblemSpec s;
    s.batch = 4;
    s.max_seqlen = 9;
    s.lengths = {0, 0, 0, 0};
    return s;
  }(), kUnfused);
}

// run() enqueues only (no allocation, no host synchronization): it can be captured into a CUDA graph
// on a non-default stream, and the replay matches a direct run bit for bit.
TEST(GpuArgs, RunIsStreamOrderedAndGraphCapturable) {
  QKV2CTX_REQUIRE_GPU();
  for (DType dt : {DType::bf16, DType::int8}) {
    AttentionDesc d = fp16_desc(MaskMode::lengths, Layout::hf);
    d.dtype = dt;
    d.int8.qkv_scale = 0.02f;
    d.int8.ctx_scale = 0.01f;
    GpuCase c(d, random_problem(MaskMode::lengths, 5, 70, fresh_seed()));
    c.out.buffer.fill_byte(0x7f);
    c.run();
    const HostTensor direct = c.out.to_host();

    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    std::string run_error;
    try {
      c.run(stream);
    } catch (const Error& e) {
      run_error = e.what();
    }
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(run_error, "") << "run() did something a stream capture does not allow";
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    c.out.buffer.fill_byte(0xff);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const HostTensor replay = c.out.to_host();
    EXPECT_EQ(std::memcmp(direct.bytes.data(), replay.bytes.data(), direct.bytes.size()), 0);
    EXPECT_NO_THROW(c.plan.read_stats(c.ws(), stream));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

// INT8 fixed-bound counters are per run: a run whose rows under/overflow counts them, the next run on
// the same workspace (no valid keys anywhere: nothing to count) reads zeros.
TEST(GpuArgs, Int8CountersArePerRun) {
  QKV2CTX_REQUIRE_GPU();
  AttentionDesc d = fp16_desc(MaskMode::lengths);
  d.dtype = DType::int8;
  d.bound = BoundMode::guarded;
  d.int8.qkv_scale = 0.3f;  // p_max = 16129 * 0.09 / sqrt(32) = 257: rows with small logits underflow
  d.int8.ctx_scale = 0.075f;
  ProblemSpec s = random_problem(MaskMode::lengths, 3, 50, fresh_seed());
  s.int_amax = 20;
  GpuCase c(d, s);
  c.run();
  const RunStats first = c.plan.read_stats(c.ws());
  EXPECT_GT(first.repaired_rows, 0);
  EXPECT_EQ(first.repaired_rows, first.fixed_bound_underflow_rows + first.fixed_bound_overflow_rows);
  const std::vector<std::int32_t> no_keys(3, 0);
  c.seq_lens.buffer.upload(no_keys.data(), no_keys.size() * sizeof(std::int32_t));
  c.run();
  const RunStats second = c.plan.read_stats(c.ws());
  EXPECT_EQ(second.repaired_rows, 0);
  EXPECT_EQ(second.fixed_bound_underflow_rows, 0);
  EXPECT_EQ(second.fixed_bound_overflow_rows, 0);
}

}  // namespace
