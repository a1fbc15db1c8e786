// `qkv2ctx info`: version, CUDA build and devices, and which backends take default descriptors.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.hpp"
#include "qkv2ctx/qkv2ctx.hpp"

namespace qkv2ctx::cli {
namespace {

int run_info() {
  const SystemInfo s = system_info();
  fmt::print("qkv2ctx {}\n", s.version);
  fmt::print("CUDA backends built: {}\n", s.cuda_built ? "yes" : "no");
  fmt::print("CUDA devices: {}\n", s.cuda_device_count);
  std::size_t begin = 0;  // one line per device
  while (begin < s.cuda_devices.size()) {
    std::size_t end = s.cuda_devices.find('\n', begin);
    if (end == std::string::npos) end = s.cuda_devices.size();
    fmt::print("  {}\n", s.cuda_devices.substr(begin, end - begin));
    begin = end + 1;
  }
  AttentionDesc fp16;  // the default descriptor: fp16, N=12, H=64, layout trt, no mask
  AttentionDesc int8 = fp16;
  int8.dtype = DType::int8;
  int8.int8.qkv_scale = int8.int8.ctx_scale = 4.0f / 127.0f;
  for (const AttentionDesc& d : {fp16, int8}) {
    fmt::print("backends for {}:\n", describe(d));
    for (Backend b : {Backend::cpu, Backend::cuda_unfused, Backend::cuda_fused, Backend::automatic}) {
      try {
        const Plan plan = make_plan(d, {b});
        std::string what = plan.describe();
        what = what.substr(0, what.find('\n'));
        fmt::print("  {:<13} yes: {}\n", to_string(b), what);
      } catch (const Error& e) {
        fmt::print("  {:<13} no: {}\n", to_string(b), e.what());
      }
    }
  }
  return 0;
}

}  // namespace

Command add_info_command(CLI::App& root) {
  CLI::App* cmd = root.add_subcommand("info", "version, CUDA build and devices, available backends");
  return {cmd, [] { return run_info(); }};
}

}  // namespace qkv2ctx::cli
