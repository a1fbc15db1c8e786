// Runs a tiny FP32 problem on the CPU reference through the installed public API.
#include <qkv2ctx/qkv2ctx.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  qkv2ctx::AttentionDesc desc;
  desc.dtype = qkv2ctx::DType::fp32;
  desc.num_heads = 2;
  desc.head_size = 8;
  const int S = 3, B = 2, E = 16;
  std::vector<float> qkv(S * B * 3 * E), out(S * B * E, NAN);
  for (std::size_t i = 0; i < qkv.size(); ++i) qkv[i] = std::sin(0.37f * static_cast<float>(i));
  qkv2ctx::Plan plan = qkv2ctx::make_plan(desc, {qkv2ctx::Backend::cpu});
  qkv2ctx::AttentionArgs args;
  args.qkv = {qkv.data(), qkv2ctx::DType::fp32, qkv2ctx::MemSpace::host, {S, B, 3 * E}};
  args.out = {out.data(), qkv2ctx::DType::fp32, qkv2ctx::MemSpace::host, {S, B, E}};
  alignas(16) static unsigned char workspace[1 << 16];
  plan.run(args, {workspace, plan.workspace_bytes(plan.problem_size(args))});
  for (float v : out)
    if (!std::isfinite(v)) return 1;
  std::printf("consumer ok: %s\n", plan.describe().c_str());
  return 0;
}
