// The CLI's subcommands. Each add_*_command registers its flags on the root app and returns the
// action main() calls after a successful parse; actions return the process exit code
// (0 ok, 1 a check over its tolerance) and report errors by throwing (main prints them, exit 2).
#pragma once
#include <functional>

namespace CLI {
class App;
}

namespace qkv2ctx::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_run_command(CLI::App& root);
Command add_check_command(CLI::App& root);
Command add_info_command(CLI::App& root);
Command add_bench_command(CLI::App& root);
Command add_accuracy_command(CLI::App& root);

}  // namespace qkv2ctx::cli
