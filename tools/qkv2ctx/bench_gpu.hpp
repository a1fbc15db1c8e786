// The GPU side of `qkv2ctx bench`: the chip's peaks measured in the same run, and the timing of a
// plan with inputs rotated over enough buffers that every launch starts with a cold L2.
// Built without CUDA, every function throws Error(unsupported).
#pragma once
#include <string>

#include "problem.hpp"

namespace qkv2ctx::cli {

// MUFU ex2 throughput measured on the H100 SXM (docs: shared/docs/H100.md), a stated constant: the
// exponential unit is not measured in this run.
inline constexpr double kExpPeakPerSecond = 4.18e12;

struct GpuInfo {
  std::string name;
  int sm = 0;
  int num_sms = 0;
  double l2_bytes = 0;
  double free_bytes = 0;
};
GpuInfo gpu_info(int device);

struct Peaks {
  double fp16_flops = 0;   // cuBLASLt FP16 GEMM 8192^3, FP32 accumulation, flop/s
  double int8_ops = 0;     // cuBLASLt INT8 GEMM 8192^3, int32 accumulation, op/s (0: not available)
  std::string int8_note;   // why the INT8 GEMM is not available
  double hbm_bytes = 0;    // device-to-device copy, read + write bytes/s
};
Peaks measure_peaks(int device);

struct Timing {
  double median_us = 0;
  int sets = 0;            // input/output sets rotated over
  double sets_bytes = 0;   // their total size
};
// Times plan.run on `p` with CUDA events around each launch: `warmup` untimed launches, then the
// median of `iters`. Inputs/outputs rotate over >= 4 sets whose total exceeds 2x the L2 size.
Timing time_plan(const Plan& plan, const Problem& p, int iters, int warmup, double l2_bytes);

}  // namespace qkv2ctx::cli
