// PyTorch SDPA baselines for `qkv2ctx bench`: bench/torch_baselines.py runs in a subprocess on the
// same CSV (same lengths, iterations and buffer rotation) and prints one JSON object per line.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace qkv2ctx::cli {

struct TorchResult {
  std::string name;     // shape name
  std::string backend;  // torch-flash | torch-cudnn | torch-efficient
  double us = -1;       // median µs; < 0: not available (note says why)
  std::string note;     // e.g. "padded + key mask", "nested (jagged)", "n/a: ..."
};

struct TorchBaselines {
  std::vector<TorchResult> results;
  std::string info;   // versions and device, from the script
  std::string error;  // non-empty when the script could not run
};

struct TorchRequest {
  std::string python = "python3";
  std::string script;
  std::string shapes_csv;
  std::string filter;
  int iters = 50;
  int warmup = 10;
  std::uint64_t seed = 1234;
};
TorchBaselines run_torch_baselines(const TorchRequest& request);

// One flat JSON object ({"k": "v", "n": 1.5, "x": null}) as key -> raw text (strings unescaped,
// numbers as written, null as "null"). Returns false on anything else.
bool parse_flat_json(const std::string& line, std::map<std::string, std::string>* out);

}  // namespace qkv2ctx::cli
