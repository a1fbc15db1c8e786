// qkv2ctx: run | check | info | bench | accuracy. Every failure is one line on stderr and exit code 2
// (exit code 1 is reserved for `check` results over their tolerance).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <new>
#include <vector>

#include "commands.hpp"
#include "qkv2ctx/qkv2ctx.hpp"

namespace {

// Messages are printed on one line: embedded newlines would split the error across lines.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qkv2ctx;
  CLI::App app{"qkv2ctx: fused multi-head attention from packed QKV to context (TensorRT "
               "bertQKVToContextPlugin semantics)",
               "qkv2ctx"};
  app.require_subcommand(1);
  app.set_version_flag("--version", system_info().version);
  std::vector<cli::Command> commands = {cli::add_run_command(app), cli::add_check_command(app),
                                        cli::add_info_command(app), cli::add_bench_command(app),
                                        cli::add_accuracy_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "qkv2ctx: error: %s (see qkv2ctx --help)\n", one_line(e.what()).c_str());
    return 2;
  }
  try {
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
    return 2;  // unreachable: require_subcommand(1)
  } catch (const Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qkv2ctx: error (%s): %s\n", std::string(to_string(e.code())).c_str(),
                 one_line(e.what()).c_str());
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "qkv2ctx: error: out of host memory\n");
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qkv2ctx: error: %s\n", one_line(e.what()).c_str());
  }
  return 2;
}
