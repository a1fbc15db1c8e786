#include "bench_gpu.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#ifdef QKV2CTX_WITH_CUDA
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "cuda/common/cuda_check.hpp"
#include "cuda/common/device.hpp"
#endif

namespace qkv2ctx::cli {

#ifndef QKV2CTX_WITH_CUDA

namespace {
[[noreturn]] void no_cuda() {
  throw Error(ErrorCode::unsupported, "qkv2ctx bench needs CUDA: this CLI was built without CUDA (QKV2CTX_CUDA=OFF or no nvcc)");
}
}  // namespace
GpuInfo gpu_info(int) { no_cuda(); }
Peaks measure_peaks(int) { no_cuda(); }
Timing time_plan(const Plan&, const Problem&, int, int, double) { no_cuda(); }

#else

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A pair of events per launch, read after the last one: the host never waits between launches.
class EventTimer {
 public:
  explicit EventTimer(int launches) : start_(launches), stop_(launches) {
    for (int i = 0; i < launches; ++i) {
      QKV2CTX_CUDA_CHECK(cudaEventCreate(&start_[i]));
      QKV2CTX_CUDA_CHECK(cudaEventCreate(&stop_[i]));
    }
  }
  ~EventTimer() {
    for (auto e : start_) (void)cudaEventDestroy(e);
    for (auto e : stop_) (void)cudaEventDestroy(e);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start(int i, cudaStream_t s) { QKV2CTX_CUDA_CHECK(cudaEventRecord(start_[i], s)); }
  void stop(int i, cudaStream_t s) { QKV2CTX_CUDA_CHECK(cudaEventRecord(stop_[i], s)); }
  // Median of the launches, in milliseconds.
  double median_ms() {
    QKV2CTX_CUDA_CHECK(cudaEventSynchronize(stop_.back()));
    std::vector<double> ms;
    for (std::size_t i = 0; i < start_.size(); ++i) {
      float t = 0;
      QKV2CTX_CUDA_CHECK(cudaEventElapsedTime(&t, start_[i], stop_[i]));
      ms.push_back(t);
    }
    return median(ms);
  }

 private:
  std::vector<cudaEvent_t> start_, stop_;
};

// Random bytes of the given element kind: GEMM power (and so its clock) depends on the data.
Buffer random_device_buffer(std::size_t elements, DType dtype, std::uint64_t seed) {
  std::vector<std::uint8_t> host(elements * element_size(dtype));
  SplitMix64 rng(seed);
  fill_random(host.data(), static_cast<std::int64_t>(elements), dtype, rng);
  Buffer b(MemSpace::cuda, host.size());
  b.upload(host.data(), host.size());
  return b;
}

struct LtHandle {
  cublasLtHandle_t h = nullptr;
  LtHandle() { QKV2CTX_CUBLAS_CHECK(cublasLtCreate(&h)); }
  ~LtHandle() { (void)cublasLtDestroy(h); }
};

// D = A^T B for square n x n column-major matrices ("TN", what the INT8 kernels require), timed
// over `iters` launches after `warmup`. Returns operations per second, or 0 with *why set when
// cuBLASLt has no algorithm for the combination.
double time_gemm(cudaDataType_t in, cudaDataType_t out, cublasComputeType_t compute, cudaDataType_t scale,
                 DType in_dtype, int n, std::string* why) {
  LtHandle lt;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  const std::size_t ws_bytes = 64u << 20;
  Buffer a = random_device_buffer(static_cast<std::size_t>(n) * n, in_dtype, 1);
  Buffer b = random_device_buffer(static_cast<std::size_t>(n) * n, in_dtype, 2);
  const std::size_t out_size = out == CUDA_R_32I ? 4 : (out == CUDA_R_32F ? 4 : 2);
  Buffer c(MemSpace::cuda, static_cast<std::size_t>(n) * n * out_size);
  Buffer ws(MemSpace::cuda, ws_bytes);
  double result = 0;
  auto cleanup = [&] {
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
    if (lc) (void)cublasLtMatrixLayoutDestroy(lc);
    if (lb) (void)cublasLtMatrixLayoutDestroy(lb);
    if (la) (void)cublasLtMatrixLayoutDestroy(la);
    if (op) (void)cublasLtMatmulDescDestroy(op);
  };
  try {
    QKV2CTX_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, compute, scale));
    const cublasOperation_t transa = CUBLAS_OP_T;
    QKV2CTX_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
    QKV2CTX_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, in, n, n, n));
    QKV2CTX_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, in, n, n, n));
    QKV2CTX_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, out, n, n, n));
    QKV2CTX_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    QKV2CTX_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                              &ws_bytes, sizeof(ws_bytes)));
    cublasLtMatmulHeuristicResult_t heur{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt.h, op, la, lb, lc, lc, pref, 1, &heur, &found);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      *why = "cuBLASLt has no algorithm for it (status " + std::to_string(static_cast<int>(st)) + ")";
      cleanup();
      return 0;
    }
    const float alpha_f = 1, beta_f = 0;
    const std::int32_t alpha_i = 1, beta_i = 0;
    const void* alpha = scale == CUDA_R_32I ? static_cast<const void*>(&alpha_i) : &alpha_f;
    const void* beta = scale == CUDA_R_32I ? static_cast<const void*>(&beta_i) : &beta_f;
    auto launch = [&] {
      QKV2CTX_CUBLAS_CHECK(cublasLtMatmul(lt.h, op, alpha, a.data(), la, b.data(), lb, beta, c.data(), lc, c.data(),
                                          lc, &heur.algo, ws.data(), ws_bytes, nullptr));
    };
    for (int i = 0; i < 5; ++i) launch();
    constexpr int kIters = 20;
    EventTimer timer(kIters);
    for (int i = 0; i < kIters; ++i) {
      timer.start(i, nullptr);
      launch();
      timer.stop(i, nullptr);
    }
    result = 2.0 * n * static_cast<double>(n) * n / (timer.median_ms() * 1e-3);
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
  return result;
}

}  // namespace

GpuInfo gpu_info(int device) {
  const cuda::DeviceCaps caps = cuda::query_device(device);
  QKV2CTX_CUDA_CHECK(cudaSetDevice(device));
  std::size_t free_b = 0, total_b = 0;
  QKV2CTX_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  GpuInfo g;
  g.name = caps.name;
  g.sm = caps.sm;
  g.num_sms = caps.num_sms;
  g.l2_bytes = caps.l2_bytes;
  g.free_bytes = static_cast<double>(free_b);
  return g;
}

Peaks measure_peaks(int device) {
  QKV2CTX_CUDA_CHECK(cudaSetDevice(device));
  Peaks p;
  constexpr int kGemmN = 8192;
  std::string why;
  p.fp16_flops = time_gemm(CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, CUDA_R_32F, DType::fp16, kGemmN, &why);
  if (p.fp16_flops == 0) throw Error(ErrorCode::cuda_error, "the FP16 peak GEMM could not run: " + why);
  p.int8_ops = time_gemm(CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUDA_R_32I, DType::int8, kGemmN, &why);
  if (p.int8_ops == 0) p.int8_note = "INT8 GEMM: " + why;

  // HBM: a 1 GiB device-to-device copy moves 2 GiB (read + write).
  const std::size_t bytes = 1ull << 30;
  Buffer src(MemSpace::cuda, bytes), dst(MemSpace::cuda, bytes);
  src.fill_byte(0x5A);
  for (int i = 0; i < 3; ++i)
    QKV2CTX_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, nullptr));
  constexpr int kIters = 10;
  EventTimer timer(kIters);
  for (int i = 0; i < kIters; ++i) {
    timer.start(i, nullptr);
    QKV2CTX_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, nullptr));
    timer.stop(i, nullptr);
  }
  p.hbm_bytes = 2.0 * static_cast<double>(bytes) / (timer.median_ms() * 1e-3);
  return p;
}

Timing time_plan(const Plan& plan, const Problem& p, int iters, int warmup, double l2_bytes) {
  if (plan.memory_space() != MemSpace::cuda)
    throw Error(ErrorCode::invalid_argument, "bench times CUDA backends only, not " + std::string(to_string(plan.backend())));
  const double set_bytes = static_cast<double>(p.qkv.size() + p.out_bytes());
  std::size_t free_b = 0, total_b = 0;
  QKV2CTX_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  // Enough sets that the L2 (and any set touched in the last 2 launches) holds none of the next one.
  int sets = std::max(4, static_cast<int>(std::ceil(2.0 * l2_bytes / std::max(set_bytes, 1.0))) + 1);
  sets = std::min(sets, 4096);
  const int fit = static_cast<int>(0.7 * static_cast<double>(free_b) / std::max(set_bytes, 1.0));
  if (fit < 2)
    throw Error(ErrorCode::unsupported, "two input/output sets of " + std::to_string(static_cast<long long>(set_bytes / (1 << 20))) +
                                            " MiB do not fit in the free device memory");
  sets = std::min(sets, fit);

  ProblemBuffers first = make_buffers(plan, p);  // lengths + workspace shared by every set
  std::vector<Buffer> qkv, out;
  std::vector<AttentionArgs> args;
  for (int s = 0; s < sets; ++s) {
    AttentionArgs a = first.args;
    if (s > 0) {
      qkv.emplace_back(MemSpace::cuda, p.qkv.size());
      qkv.back().upload(p.qkv.data(), p.qkv.size());
      out.emplace_back(MemSpace::cuda, p.out_bytes());
      a.qkv.data = qkv.back().data();
      a.out.data = out.back().data();
    }
    args.push_back(a);
  }
  QKV2CTX_CUDA_CHECK(cudaDeviceSynchronize());
  int next = 0;
  for (int i = 0; i < warmup; ++i) plan.run(args[next++ % sets], first.ws, nullptr);
  EventTimer timer(iters);
  for (int i = 0; i < iters; ++i) {
    timer.start(i, nullptr);
    plan.run(args[next++ % sets], first.ws, nullptr);
    timer.stop(i, nullptr);
  }
  Timing t;
  t.median_us = timer.median_ms() * 1e3;
  t.sets = sets;
  t.sets_bytes = set_bytes * sets;
  QKV2CTX_CUDA_CHECK(cudaDeviceSynchronize());  // surfaces asynchronous kernel faults here
  return t;
}

#endif

}  // namespace qkv2ctx::cli
