// The CPU reference backend: splits a run into (sequence, head, block of query rows) work items and
// runs them on std::threads. Each query row is computed independently and in a fixed order, so the
// result is bit-identical whatever the thread count or schedule.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "core/backend.hpp"
#include "cpu/reference.hpp"
#include "qkv2ctx/int8.hpp"

namespace qkv2ctx {
namespace {

// A work item holds at least this many query rows when heads are split into row blocks (so that
// loading a head's K and V, O(keys * H), stays small next to the rows' O(rows * keys * H)).
constexpr int kMinRowsPerItem = 64;
// Work items per thread to aim for: enough to even out ragged sequences.
constexpr int kItemsPerThread = 4;

class CpuBackend final : public BackendImpl {
 public:
  explicit CpuBackend(const AttentionDesc& desc)
      : desc_(desc), threads_(std::max(1u, std::thread::hardware_concurrency())) {
    if (desc_.dtype == DType::int8) int8_ = derive_int8_scales(desc_.int8, desc_.effective_scale_head_size());
  }

  Backend kind() const override { return Backend::cpu; }
  MemSpace memory_space() const override { return MemSpace::host; }

  std::string describe() const override {
    const std::string threads = std::to_string(threads_) + (threads_ == 1 ? " thread" : " threads");
    if (desc_.dtype == DType::int8)
      return "CPU reference (exact INT8 emulation, bound=" + std::string(to_string(desc_.bound)) +
             ", probs=" + std::string(to_string(desc_.probs)) + ", " + threads + ")";
    return "CPU reference (double precision, " + threads + ")";
  }

  // Only the StatsBlock: the reference keeps its scratch per thread.
  std::size_t workspace_bytes(const ProblemSize&) const override { return kStatsBytes; }

  void run(const RunParams& p) const override;

  RunStats read_stats(const Workspace& ws, void*) const override {
    StatsBlock block;
    std::memcpy(&block, ws.data, sizeof(block));
    RunStats s;
    s.fixed_bound_underflow_rows = static_cast<std::int64_t>(block.fixed_bound_underflow_rows);
    s.fixed_bound_overflow_rows = static_cast<std::int64_t>(block.fixed_bound_overflow_rows);
    s.repaired_rows = static_cast<std::int64_t>(block.repaired_rows);
    return s;
  }

 private:
  AttentionDesc desc_;
  Int8Derived int8_{};
  unsigned threads_;
};

void CpuBackend::run(const RunParams& p) const {
  StatsBlock stats{};
  std::memcpy(p.workspace, &stats, sizeof(stats));  // counters start at zero for every run

  // Items: (b, n, row block). Rows of a head are split only when there are too few heads to keep
  // every thread busy.
  const std::int64_t heads = static_cast<std::int64_t>(p.batch) * desc_.num_heads;
  if (heads == 0) return;
  const std::int64_t wanted_blocks = (static_cast<std::int64_t>(threads_) * kItemsPerThread + heads - 1) / heads;
  const std::int64_t max_blocks = std::max<std::int64_t>(1, (p.max_seqlen + kMinRowsPerItem - 1) / kMinRowsPerItem);
  const int blocks = static_cast<int>(std::clamp<std::int64_t>(wanted_blocks, 1, max_blocks));
  const int rows_per_block = (p.max_seqlen + blocks - 1) / blocks;
  const std::int64_t total = heads * blocks;
  const unsigned workers = static_cast<unsigned>(std::min<std::int64_t>(threads_, total));

  std::atomic<std::int64_t> next{0};
  std::vector<cpu::Int8RowCounters> counters(workers);
  std::vector<std::exception_ptr> errors(workers);
  auto work = [&](unsigned w) {
    try {
      cpu::FloatScratch float_scratch;
      cpu::Int8Scratch int8_scratch;
      for (std::int64_t idx = next++; idx < total; idx = next++) {
        cpu::WorkItem item;
        item.b = static_cast<int>(idx / (static_cast<std::int64_t>(desc_.num_heads) * blocks));
        const std::int64_t rest = idx % (static_cast<std::int64_t>(desc_.num_heads) * blocks);
        item.n = static_cast<int>(rest / blocks);
        item.row_begin = static_cast<int>(rest % blocks) * rows_per_block;
        item.row_end = item.row_begin + rows_per_block;
        if (desc_.dtype == DType::int8) cpu::run_int8_item(p, int8_, item, int8_scratch, counters[w]);
        else cpu::run_float_item(p, item, float_scratch);
      }
    } catch (...) {
      errors[w] = std::current_exception();
      next = total;  // stop the other workers early
    }
  };

  std::vector<std::thread> pool;
  pool.reserve(workers);
  for (unsigned w = 1; w < workers; ++w) {
    try {
      pool.emplace_back(work, w);
    } catch (const std::system_error&) {
      break;  // fewer threads: the calling thread and those started still cover every item
    }
  }
  work(0);
  for (auto& t : pool) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);

  cpu::Int8RowCounters total_counts;
  for (const auto& c : counters) total_counts += c;
  stats.fixed_bound_underflow_rows = static_cast<unsigned long long>(total_counts.underflow);
  stats.fixed_bound_overflow_rows = static_cast<unsigned long long>(total_counts.overflow);
  stats.repaired_rows = static_cast<unsigned long long>(total_counts.repaired);
  std::memcpy(p.workspace, &stats, sizeof(stats));
}

}  // namespace

std::unique_ptr<BackendImpl> make_cpu_backend(const AttentionDesc& desc) {
  return std::make_unique<CpuBackend>(desc);
}

}  // namespace qkv2ctx
