#include "bench_shapes.hpp"

#include <fstream>
#include <sstream>

namespace qkv2ctx::cli {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

}  // namespace

std::vector<BenchShape> read_shapes_csv(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(ErrorCode::io_error, "--shapes " + path + ": cannot open");
  std::vector<BenchShape> shapes;
  std::string line;
  int lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) cells.push_back(trim(cell));
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    if (cells.size() != 7)
      throw Error(ErrorCode::io_error, where + "expected 7 columns name,dtype,heads,head_size,seqlen,batch,mask, got " +
                                           std::to_string(cells.size()));
    if (cells[0] == "name") continue;  // a header row
    BenchShape s;
    s.name = cells[0];
    const auto dtype = parse_dtype(cells[1]);
    if (!dtype || *dtype == DType::int32)
      throw Error(ErrorCode::io_error, where + "dtype '" + cells[1] + "' is not one of fp32, fp16, bf16, int8");
    s.dtype = *dtype;
    const char* names[] = {"heads", "head_size", "seqlen", "batch"};
    int* fields[] = {&s.heads, &s.head_size, &s.seqlen, &s.batch};
    for (int k = 0; k < 4; ++k) {
      std::size_t used = 0;
      long v = 0;
      try {
        v = std::stol(cells[2 + k], &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != cells[2 + k].size() || v < 1 || v > (1 << 30))
        throw Error(ErrorCode::io_error, where + names[k] + " '" + cells[2 + k] + "' is not an integer in [1, 2^30]");
      *fields[k] = static_cast<int>(v);
    }
    const auto mask = parse_mask_mode(cells[6]);
    if (!mask) throw Error(ErrorCode::io_error, where + "mask '" + cells[6] + "' is not one of none, lengths, varlen");
    s.mask = *mask;
    shapes.push_back(s);
  }
  return shapes;
}

Problem make_bench_problem(const BenchShape& s, const BenchConfig& c, BoundMode bound, bool with_inputs) {
  Problem p;
  p.desc.dtype = s.dtype;
  p.desc.num_heads = s.heads;
  p.desc.head_size = s.head_size;
  p.desc.mask = s.mask;
  p.desc.layout = c.layout;
  if (s.dtype == DType::int8) {
    p.desc.bound = bound;
    p.desc.int8.qkv_scale = p.desc.int8.ctx_scale = static_cast<float>(c.int8_qkv_amax / 127.0);
    p.qkv_amax = c.int8_qkv_amax;
  }
  validate(p.desc);
  p.batch = s.batch;
  p.seqlen = s.seqlen;
  p.min_len = s.mask == MaskMode::varlen ? s.seqlen / 4 : s.seqlen / 2;
  p.seed = c.seed ^ fnv1a64(s.name.data(), s.name.size());
  SplitMix64 rng(p.seed);
  draw_lengths(p, rng);
  if (with_inputs) fill_random_qkv(p, rng);
  return p;
}

std::string list_line(const Problem& p, const std::string& name) {
  std::string lens;
  if (p.desc.mask == MaskMode::none) {
    lens = "none";
  } else {
    for (int l : p.lengths()) {
      if (!lens.empty()) lens += ',';
      lens += std::to_string(l);
    }
  }
  return name + " tokens=" + std::to_string(p.num_tokens) + " lengths=" + lens;
}

Work work_of(const Problem& p) {
  const double N = p.desc.num_heads, D = p.desc.head_size, S = p.seqlen;
  double sum_len2 = 0;
  for (int l : p.lengths()) sum_len2 += static_cast<double>(l) * l;
  Work w;
  w.flops_padded = 4.0 * p.batch * N * S * S * D;
  w.flops_true = 4.0 * N * D * sum_len2;
  w.exps = N * sum_len2;
  w.bytes = static_cast<double>(p.qkv_elements() + p.out_elements()) * element_size(p.desc.dtype);
  return w;
}

}  // namespace qkv2ctx::cli
