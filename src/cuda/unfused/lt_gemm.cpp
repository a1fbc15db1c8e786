// cuBLASLt strided-batched GEMM runner. See lt_gemm.hpp.
#include "cuda/unfused/lt_gemm.hpp"

#include <limits>
#include <sstream>

#include "cuda/common/cuda_check.hpp"
#include "qkv2ctx/error.hpp"

namespace qkv2ctx::cuda {

namespace {
// Bounds the cache when a plan sees many different shapes (each entry is a few descriptors).
constexpr std::size_t kMaxCachedShapes = 256;

const char* type_name(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F: return "f32";
    case CUDA_R_16F: return "f16";
    case CUDA_R_16BF: return "bf16";
    case CUDA_R_8I: return "s8";
    case CUDA_R_32I: return "s32";
    default: return "?";
  }
}
}  // namespace

std::string GemmShape::describe() const {
  std::ostringstream os;
  os << type_name(a_type) << "x" << type_name(b_type) << "->" << type_name(d_type) << " "
     << (op_a == CUBLAS_OP_T ? "T" : "N") << (op_b == CUBLAS_OP_T ? "T" : "N") << " m=" << m
     << " n=" << n << " k=" << k << " lda=" << lda << " ldb=" << ldb << " ldd=" << ldd
     << " batch=" << batch;
  return os.str();
}

// Descriptors and algorithm of one GEMM shape (owned; destroyed with the cache).
struct LtGemmRunner::Prepared {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;
  bool int_scale = false;  // alpha/beta are int32 (CUBLAS_COMPUTE_32I) rather than float
  ~Prepared() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

LtGemmRunner::LtGemmRunner(std::size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  QKV2CTX_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

LtGemmRunner::~LtGemmRunner() {
  cache_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

namespace {
cublasLtMatrixLayout_t make_layout(cudaDataType_t type, std::int64_t rows, std::int64_t cols,
                                   std::int64_t ld, std::int64_t batch, std::int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  QKV2CTX_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<std::uint64_t>(rows),
                                                  static_cast<std::uint64_t>(cols), ld));
  const std::int32_t count = static_cast<std::int32_t>(batch);
  QKV2CTX_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                        &count, sizeof(count)));
  QKV2CTX_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
      layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  return layout;
}
}  // namespace

std::shared_ptr<const LtGemmRunner::Prepared> LtGemmRunner::prepare(const GemmShape& s) {
  const Key key{s.a_type, s.b_type, s.d_type, s.compute, s.op_a, s.op_b, s.m, s.n, s.k,
                s.lda, s.ldb, s.ldd, s.stride_a, s.stride_b, s.stride_d, s.batch};
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  if (s.batch < 1 || s.batch > std::numeric_limits<std::int32_t>::max())
    throw Error(ErrorCode::invalid_argument, "problem too large: " + std::to_string(s.batch) +
                                                 " (sequence, head) pairs exceed cuBLASLt's int32 batch count");
  auto p = std::make_shared<Prepared>();
  p->int_scale = s.compute == CUBLAS_COMPUTE_32I;
  const cudaDataType_t scale_type = p->int_scale ? CUDA_R_32I : CUDA_R_32F;
  QKV2CTX_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, s.compute, scale_type));
  QKV2CTX_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &s.op_a, sizeof(s.op_a)));
  QKV2CTX_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &s.op_b, sizeof(s.op_b)));
  const bool ta = s.op_a == CUBLAS_OP_T, tb = s.op_b == CUBLAS_OP_T;
  p->a = make_layout(s.a_type, ta ? s.k : s.m, ta ? s.m : s.k, s.lda, s.batch, s.stride_a);
  p->b = make_layout(s.b_type, tb ? s.n : s.k, tb ? s.k : s.n, s.ldb, s.batch, s.stride_b);
  p->d = make_layout(s.d_type, s.m, s.n, s.ldd, s.batch, s.stride_d);

  cublasLtMatmulPreference_t pref = nullptr;
  QKV2CTX_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const std::uint64_t ws = workspace_bytes_;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->a, p->b, p->d, p->d, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  // NOT_SUPPORTED means "no algorithm": reported as unsupported by run(); anything else is an error.
  if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED)
    throw_cublas_error(st, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
  p->has_algo = st == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (p->has_algo) p->algo = result.algo;
  if (cache_.size() >= kMaxCachedShapes) cache_.clear();
  cache_.emplace(key, p);
  return p;
}

bool LtGemmRunner::supported(const GemmShape& shape) { return prepare(shape)->has_algo; }

void LtGemmRunner::run(const GemmShape& shape, const void* A, const void* B, void* D, void* workspace,
                       cudaStream_t stream) {
  const std::shared_ptr<const Prepared> prepared = prepare(shape);
  const Prepared& p = *prepared;
  if (!p.has_algo)
    throw Error(ErrorCode::unsupported,
                "cuBLASLt offers no algorithm for the GEMM " + shape.describe() + " on this device");
  const float one_f = 1.0f, zero_f = 0.0f;
  const std::int32_t one_i = 1, zero_i = 0;
  const void* alpha = p.int_scale ? static_cast<const void*>(&one_i) : &one_f;
  const void* beta = p.int_scale ? static_cast<const void*>(&zero_i) : &zero_f;
  QKV2CTX_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, alpha, A, p.a, B, p.b, beta, D, p.d, D, p.d,
                                      &p.algo, workspace, workspace_bytes_, stream));
}

}  // namespace qkv2ctx::cuda
