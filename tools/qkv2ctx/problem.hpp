// The CLI's problems: flags -> a descriptor plus reproducible random inputs, memory buffers in the
// plan's memory space, and one timed execution of a plan.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "qkv2ctx/qkv2ctx.hpp"

namespace CLI {
class App;
}

namespace qkv2ctx::cli {

// The problem flags shared by `run` and `check`, as typed on the command line.
struct ProblemOptions {
  std::string dtype = "int8";
  int heads = 12;
  int head_size = 64;
  int seqlen = 128;  // S (padded) or max_seqlen (varlen)
  int batch = 8;
  std::string mask = "none";
  std::string bound = "row_max";
  std::string probs = "trt";    // INT8 probability quantization: trt | max_relative
  std::string layout = "trt";
  std::uint64_t seed = 1;
  double qkv_amax = 4.0;        // INT8: qkv_scale = amax / 127
  double ctx_scale = 0.0;       // INT8: 0 = same as qkv_scale (the context keeps the QKV range)
  double dq_probs = 1.0 / 127.0;
  int min_len = -1;             // -1 = S/4 (varlen) or S/2 (lengths)
  int scale_head_size = 0;      // 0 = head_size
};

// Registers --dtype ... --scale-head-size on a subcommand (values checked against the library's names).
void add_problem_flags(CLI::App& cmd, ProblemOptions& options);
// Rejects flags that the chosen dtype / mask ignore (nothing is silently dropped).
void check_flag_combinations(const CLI::App& cmd, const ProblemOptions& options);

Backend parse_backend_flag(const std::string& name);
std::string backend_names();  // "auto, cpu, cuda-unfused, cuda-fused"

// Deterministic 64-bit generator (splitmix64): the same seed gives the same lengths and inputs on
// every machine, and bench/torch_baselines.py reproduces the lengths with the same few lines.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int uniform_int(int lo, int hi) {  // [lo, hi]
    return lo + static_cast<int>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  float uniform_pm1() {  // [-1, 1): 24 random bits, exact in FP32
    return static_cast<float>(next() >> 40) * 0x1p-23f - 1.0f;
  }

 private:
  std::uint64_t state_;
};

std::uint64_t fnv1a64(const void* data, std::size_t bytes,
                      std::uint64_t hash = 0xcbf29ce484222325ull);

// A concrete problem: descriptor, sizes, per-sequence lengths and the host copy of the inputs.
struct Problem {
  AttentionDesc desc;
  int batch = 0;
  int seqlen = 0;                       // S (padded) or max_seqlen (varlen)
  int min_len = 0;                      // lower bound the lengths were drawn from
  std::uint64_t seed = 0;
  double qkv_amax = 0;                  // INT8 only
  std::vector<std::int32_t> seq_lens;   // mask lengths: [B]
  std::vector<std::int32_t> cu_seqlens; // mask varlen: [B + 1]
  std::int64_t num_tokens = 0;          // rows of qkv: B*S padded, cu_seqlens[B] varlen
  std::vector<std::uint8_t> qkv;        // host bytes in the layout the plan expects

  std::vector<std::int64_t> qkv_shape() const;
  std::vector<std::int64_t> out_shape() const;
  std::int64_t qkv_elements() const;
  std::int64_t out_elements() const;
  std::size_t out_bytes() const { return static_cast<std::size_t>(out_elements()) * element_size(desc.dtype); }
  // Valid lengths per sequence (S for mask none).
  std::vector<std::int32_t> lengths() const;
};

// Builds the descriptor from the flags (validated by the library), draws the lengths, fills qkv.
// FP inputs uniform in [-1, 1); INT8 uniform integers in [-127, 127].
Problem make_problem(const ProblemOptions& options);
// Lengths as `run` draws them: none -> empty, lengths in [min_len, S], varlen in [min_len, S].
void draw_lengths(Problem& p, SplitMix64& rng);
void fill_random_qkv(Problem& p, SplitMix64& rng);
// n random elements of dtype at dst: FP uniform in [-1, 1), INT8 uniform in [-127, 127].
void fill_random(void* dst, std::int64_t n, DType dtype, SplitMix64& rng);

// The FP32 problem on the dequantized INT8 inputs (x * qkv_scale): same lengths, layout chw32
// becomes hf (the same planar channel order); used as the FP32 attention every INT8 mode is judged by.
Problem dequantized_fp32(const Problem& int8_problem);

// Host memory (64-byte aligned) or CUDA device memory; move-only.
class Buffer {
 public:
  Buffer() = default;
  Buffer(MemSpace space, std::size_t bytes);
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  MemSpace space() const { return space_; }
  void upload(const void* host, std::size_t bytes);      // host -> this buffer
  void download(void* host, std::size_t bytes) const;    // this buffer -> host
  void fill_byte(std::uint8_t value);

 private:
  void release() noexcept;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  MemSpace space_ = MemSpace::host;
};

// A dense row-major view of any rank up to 5.
TensorView make_view(void* data, DType dtype, MemSpace space, const std::vector<std::int64_t>& shape);

// The inputs, output and workspace of one problem in one memory space.
struct ProblemBuffers {
  Buffer qkv, out, lengths, workspace;
  AttentionArgs args;
  Workspace ws;
};
ProblemBuffers make_buffers(const Plan& plan, const Problem& p);

struct RunResult {
  std::vector<std::uint8_t> out;  // host copy of the output of the last run
  double median_ms = 0;
  int repeats = 0;
  const char* clock = "";         // "CUDA events" or "steady_clock"
  RunStats stats;
};

// Runs `plan` `repeat` times (CUDA: after one untimed warm-up launch) on poisoned outputs and
// returns the last output, the median time and the INT8 counters.
RunResult execute(const Plan& plan, const Problem& p, int repeat);

}  // namespace qkv2ctx::cli
