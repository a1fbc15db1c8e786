// `run --save DIR`: the problem, its inputs and the output, in files anyone can recheck
// independently (tools/recheck.py reads them with numpy alone).
#pragma once
#include <string>

#include "problem.hpp"

namespace qkv2ctx::cli {

// Writes DIR/qkv.npy, DIR/out.npy (shapes as the plan takes them; bf16 as its uint16 bit
// patterns), DIR/seq_lens.npy or DIR/cu_seqlens.npy, and DIR/problem.json. Creates DIR.
void save_run(const std::string& dir, const Problem& p, const Plan& plan, const RunResult& result);

// numpy's name for how a dtype is stored: "<f4", "<f2", "<u2" (bf16 bits), "|i1".
std::string npy_descr(DType dtype);

}  // namespace qkv2ctx::cli
