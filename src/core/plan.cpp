// Plan creation (dispatch) and the cheap per-run argument checks.
#include <sstream>
#include <string>

#include "core/backend.hpp"
#include "qkv2ctx/error.hpp"
#include "qkv2ctx/plan.hpp"

#ifndef QKV2CTX_VERSION_STRING
#define QKV2CTX_VERSION_STRING "0.0.0"
#endif

namespace qkv2ctx {
namespace {

[[noreturn]] void bad_arg(const std::string& msg) {
  throw Error(ErrorCode::invalid_argument, msg);
}

std::string shape_str(const TensorView& t) {
  std::string s = "[";
  for (int k = 0; k < t.rank; ++k) s += (k ? ", " : "") + std::to_string(t.shape[k]);
  return s + "]";
}

void check_tensor(const char* name, const TensorView& t, DType dtype, MemSpace space, int rank) {
  if (t.data == nullptr) bad_arg(std::string(name) + ": data pointer is null");
  if (t.dtype != dtype)
    bad_arg(std::string(name) + ": dtype " + std::string(to_string(t.dtype)) +
            " is not allowed, expected " + std::string(to_string(dtype)));
  if (t.space != space)
    bad_arg(std::string(name) + ": memory space " + std::string(to_string(t.space)) +
            " does not match the plan's backend, which needs " + std::string(to_string(space)));
  if (t.rank != rank)
    bad_arg(std::string(name) + ": shape " + shape_str(t) + " has rank " + std::to_string(t.rank) +
            ", expected rank " + std::to_string(rank));
  for (int k = 0; k < rank; ++k)
    if (t.shape[k] < 0) bad_arg(std::string(name) + ": shape " + shape_str(t) + " has a negative dimension");
  if (!t.is_contiguous())
    bad_arg(std::string(name) + ": only dense row-major (contiguous) tensors are supported");
}

void expect_dim(const char* name, const TensorView& t, int k, std::int64_t want, const char* what) {
  if (t.shape[k] != want)
    bad_arg(std::string(name) + ": shape " + shape_str(t) + " dimension " + std::to_string(k) +
            " must be " + what + " = " + std::to_string(want));
}

void reject_unused(const char* name, const TensorView& t, MaskMode mask) {
  if (t.data != nullptr)
    bad_arg(std::string(name) + " was given but mask mode " + std::string(to_string(mask)) +
            " does not read it");
}

// Host-resident cu_seqlens are checked completely here; device-resident ones by the backend.
void check_host_cu_seqlens(const std::int32_t* cu, int batch, std::int64_t tokens, int max_seqlen) {
  if (cu[0] != 0) bad_arg("cu_seqlens[0] = " + std::to_string(cu[0]) + " is not allowed: it must be 0");
  for (int b = 0; b < batch; ++b) {
    const std::int64_t len = static_cast<std::int64_t>(cu[b + 1]) - cu[b];
    if (len < 0)
      bad_arg("cu_seqlens must be non-decreasing: cu_seqlens[" + std::to_string(b + 1) + "] = " +
              std::to_string(cu[b + 1]) + " < cu_seqlens[" + std::to_string(b) + "] = " +
              std::to_string(cu[b]));
    if (len > max_seqlen)
      bad_arg("sequence " + std::to_string(b) + " has length " + std::to_string(len) +
              " > max_seqlen = " + std::to_string(max_seqlen));
  }
  if (cu[batch] > tokens)
    bad_arg("cu_seqlens[B] = " + std::to_string(cu[batch]) + " exceeds the " +
            std::to_string(tokens) + " token rows of qkv");
}

}  // namespace

Plan::Plan(AttentionDesc desc, std::unique_ptr<BackendImpl> impl)
    : desc_(desc), impl_(std::move(impl)) {}
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;
Plan::~Plan() = default;

const AttentionDesc& Plan::desc() const { return desc_; }
Backend Plan::backend() const { return impl_->kind(); }
MemSpace Plan::memory_space() const { return impl_->memory_space(); }

std::string Plan::describe() const {
  std::string s = "backend " + std::string(to_string(impl_->kind())) + ": " + impl_->describe() +
                  "\nproblem: " + qkv2ctx::describe(desc_);
  if (!impl_->dispatch_notes.empty()) s += "\n" + impl_->dispatch_notes;
  return s;
}

std::size_t Plan::workspace_bytes(const ProblemSize& size) const {
  if (size.batch < 0 || size.max_seqlen < 0 || size.num_tokens < 0)
    bad_arg("ProblemSize: batch, max_seqlen and num_tokens must be >= 0");
  return impl_->workspace_bytes(size);
}

ProblemSize Plan::problem_size(const AttentionArgs& a) const {
  const AttentionDesc& d = desc_;
  const MemSpace sp = impl_->memory_space();
  const std::int64_t E = d.hidden_size();
  ProblemSize p;
  if (d.mask == MaskMode::varlen) {
    check_tensor("cu_seqlens", a.cu_seqlens, DType::int32, sp, 1);
    if (a.cu_seqlens.shape[0] < 1) bad_arg("cu_seqlens: shape [0] must have at least 1 element (B + 1)");
    reject_unused("seq_lens", a.seq_lens, d.mask);
    if (a.max_seqlen < 1)
      bad_arg("max_seqlen = " + std::to_string(a.max_seqlen) +
              " is not allowed: varlen needs a host upper bound >= 1 of the sequence lengths");
    p.batch = static_cast<int>(a.cu_seqlens.shape[0] - 1);
    p.max_seqlen = a.max_seqlen;
    if (d.layout == Layout::chw32) {
      check_tensor("qkv", a.qkv, d.dtype, sp, 3);
      expect_dim("qkv", a.qkv, 0, 3 * E / 32, "3E/32");
      expect_dim("qkv", a.qkv, 2, 32, "32");
      p.num_tokens = a.qkv.shape[1];
      check_tensor("out", a.out, d.dtype, sp, 3);
      expect_dim("out", a.out, 0, E / 32, "E/32");
      expect_dim("out", a.out, 1, p.num_tokens, "T");
      expect_dim("out", a.out, 2, 32, "32");
    } else {
      check_tensor("qkv", a.qkv, d.dtype, sp, 2);
      expect_dim("qkv", a.qkv, 1, 3 * E, "3E");
      p.num_tokens = a.qkv.shape[0];
      check_tensor("out", a.out, d.dtype, sp, 2);
      expect_dim("out", a.out, 0, p.num_tokens, "T (rows of qkv)");
      expect_dim("out", a.out, 1, E, "E");
    }
  } else {
    check_tensor("qkv", a.qkv, d.dtype, sp, 3);
    expect_dim("qkv", a.qkv, 2, 3 * E, "3E");
    const bool seq_major = d.layout == Layout::trt;
    const std::int64_t S = a.qkv.shape[seq_major ? 0 : 1], B = a.qkv.shape[seq_major ? 1 : 0];
    if (S < 1 || B < 1)
      bad_arg("qkv: shape " + shape_str(a.qkv) + " needs S >= 1 and B >= 1 (" +
              (seq_major ? "[S, B, 3E] for layout trt" : "[B, S, 3E] for layout hf") + ")");
    if (S > (1 << 30) || B > (1 << 30)) bad_arg("qkv: shape " + shape_str(a.qkv) + " is too large");
    check_tensor("out", a.out, d.dtype, sp, 3);
    expect_dim("out", a.out, 0, a.qkv.shape[0], seq_major ? "S" : "B");
    expect_dim("out", a.out, 1, a.qkv.shape[1], seq_major ? "B" : "S");
    expect_dim("out", a.out, 2, E, "E");
    p.batch = static_cast<int>(B);
    p.max_seqlen = static_cast<int>(S);
    p.num_tokens = B * S;
    reject_unused("cu_seqlens", a.cu_seqlens, d.mask);
    if (d.mask == MaskMode::lengths) {
      check_tensor("seq_lens", a.seq_lens, DType::int32, sp, 1);
      expect_dim("seq_lens", a.seq_lens, 0, B, "B");
    } else {
      reject_unused("seq_lens", a.seq_lens, d.mask);
    }
  }
  return p;
}

void Plan::run(const AttentionArgs& a, const Workspace& ws, void* stream) const {
  const ProblemSize p = problem_size(a);
  const std::size_t need = impl_->workspace_bytes(p);
  if (ws.bytes < need)
    bad_arg("workspace of " + std::to_string(ws.bytes) + " bytes is too small: this problem needs " +
            std::to_string(need) + " (Plan::workspace_bytes)");
  if (need > 0 && ws.data == nullptr) bad_arg("workspace.data is null but " + std::to_string(need) + " bytes are needed");
  if (reinterpret_cast<std::uintptr_t>(ws.data) % 16 != 0) bad_arg("workspace.data must be 16-byte aligned");
  if (desc_.mask == MaskMode::varlen && impl_->memory_space() == MemSpace::host)
    check_host_cu_seqlens(static_cast<const std::int32_t*>(a.cu_seqlens.data), p.batch,
                          p.num_tokens, p.max_seqlen);
  RunParams rp;
  rp.desc = &desc_;
  rp.qkv = a.qkv.data;
  rp.out = a.out.data;
  rp.seq_lens = static_cast<const std::int32_t*>(a.seq_lens.data);
  rp.cu_seqlens = static_cast<const std::int32_t*>(a.cu_seqlens.data);
  rp.batch = p.batch;
  rp.max_seqlen = p.max_seqlen;
  rp.num_tokens = p.num_tokens;
  rp.workspace = ws.data;
  rp.workspace_bytes = ws.bytes;
  rp.stream = stream;
  impl_->run(rp);
}

RunStats Plan::read_stats(const Workspace& ws, void* stream) const {
  if (ws.data == nullptr || ws.bytes < kStatsBytes)
    bad_arg("read_stats: the workspace of the run is needed (at least " + std::to_string(kStatsBytes) + " bytes)");
  return impl_->read_stats(ws, stream);
}

Plan make_plan(const AttentionDesc& desc, const PlanOptions& opt) {
  validate(desc);
  std::string why;
  std::unique_ptr<BackendImpl> impl;
  switch (opt.backend) {
    case Backend::cpu:
      impl = make_cpu_backend(desc);
      break;
    case Backend::cuda_unfused:
      impl = make_cuda_unfused_backend(desc, opt.cuda_device, &why);
      if (!impl) throw Error(ErrorCode::unsupported, "backend cuda-unfused cannot run " + describe(desc) + ": " + why);
      break;
    case Backend::cuda_fused:
      impl = make_cuda_fused_backend(desc, opt.cuda_device, &why);
      if (!impl) throw Error(ErrorCode::unsupported, "backend cuda-fused cannot run " + describe(desc) + ": " + why);
      break;
    case Backend::automatic: {
      if (cuda_device_count() == 0) {
        impl = make_cpu_backend(desc);
        impl->dispatch_notes = cuda_built() ? "auto: no CUDA device found, running the CPU reference"
                                            : "auto: built without CUDA, running the CPU reference";
        break;
      }
      std::string notes;
      impl = make_cuda_fused_backend(desc, opt.cuda_device, &why);
      if (!impl) {
        notes = "auto: cuda-fused declined: " + why;
        impl = make_cuda_unfused_backend(desc, opt.cuda_device, &why);
        if (!impl)
          throw Error(ErrorCode::unsupported, "no CUDA backend can run " + describe(desc) + ": " + notes +
                                                  "; cuda-unfused declined: " + why);
      }
      impl->dispatch_notes = notes;
      break;
    }
    default:
      throw Error(ErrorCode::invalid_argument, "PlanOptions.backend has an unknown value");
  }
  return Plan(desc, std::move(impl));
}

SystemInfo system_info() {
  SystemInfo s;
  s.version = QKV2CTX_VERSION_STRING;
  s.cuda_built = cuda_built();
  s.cuda_device_count = cuda_device_count();
  s.cuda_devices = cuda_device_summary();
  return s;
}

}  // namespace qkv2ctx
