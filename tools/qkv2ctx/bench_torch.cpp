#include "bench_torch.hpp"

#include <cstdio>
#include <cstdlib>
#include <sys/wait.h>

namespace qkv2ctx::cli {
namespace {

// POSIX shell single quotes: everything literal except ', written as '\''.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

void skip_space(const std::string& s, std::size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i;
}

bool parse_string(const std::string& s, std::size_t& i, std::string* out) {
  if (i >= s.size() || s[i] != '"') return false;
  ++i;
  out->clear();
  while (i < s.size() && s[i] != '"') {
    char c = s[i++];
    if (c == '\\') {
      if (i >= s.size()) return false;
      const char e = s[i++];
      switch (e) {
        case 'n': c = '\n'; break;
        case 't': c = '\t'; break;
        case 'u':  // \uXXXX: keep ASCII, replace the rest (the script writes ASCII)
          if (i + 4 > s.size()) return false;
          c = static_cast<char>(std::strtol(s.substr(i, 4).c_str(), nullptr, 16));
          if (static_cast<unsigned char>(c) > 127 || c == 0) c = '?';
          i += 4;
          break;
        default: c = e;  // \" \\ \/
      }
    }
    out->push_back(c);
  }
  if (i >= s.size()) return false;
  ++i;
  return true;
}

}  // namespace

bool parse_flat_json(const std::string& s, std::map<std::string, std::string>* out) {
  std::size_t i = 0;
  skip_space(s, i);
  if (i >= s.size() || s[i++] != '{') return false;
  out->clear();
  skip_space(s, i);
  if (i < s.size() && s[i] == '}') return true;
  while (true) {
    std::string key, value;
    skip_space(s, i);
    if (!parse_string(s, i, &key)) return false;
    skip_space(s, i);
    if (i >= s.size() || s[i++] != ':') return false;
    skip_space(s, i);
    if (i < s.size() && s[i] == '"') {
      if (!parse_string(s, i, &value)) return false;
    } else {
      const std::size_t b = i;
      while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ' ') ++i;
      value = s.substr(b, i - b);
      if (value.empty()) return false;
    }
    (*out)[key] = value;
    skip_space(s, i);
    if (i >= s.size()) return false;
    if (s[i] == '}') return true;
    if (s[i++] != ',') return false;
  }
}

TorchBaselines run_torch_baselines(const TorchRequest& r) {
  TorchBaselines tb;
  std::string cmd = shell_quote(r.python) + " " + shell_quote(r.script) + " --shapes " + shell_quote(r.shapes_csv) +
                    " --iters " + std::to_string(r.iters) + " --warmup " + std::to_string(r.warmup) + " --seed " +
                    std::to_string(r.seed);
  if (!r.filter.empty()) cmd += " --filter " + shell_quote(r.filter);
  std::fflush(stdout);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) {
    tb.error = "cannot start: " + cmd;
    return tb;
  }
  auto take = [&tb](const std::string& line) {
    std::map<std::string, std::string> obj;
    if (line.empty()) return;
    if (!parse_flat_json(line, &obj)) {
      std::printf("  torch_baselines.py: %s\n", line.c_str());
    } else if (obj.count("error")) {
      tb.error = obj["error"];
    } else if (obj.count("info")) {
      tb.info = obj["info"];
    } else if (obj.count("name") && obj.count("backend")) {
      TorchResult t;
      t.name = obj["name"];
      t.backend = obj["backend"];
      t.note = obj.count("note") ? obj["note"] : "";
      if (obj.count("us") && obj["us"] != "null") t.us = std::strtod(obj["us"].c_str(), nullptr);
      tb.results.push_back(t);
    }
  };
  std::string line;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe)) {
    line += buf;
    if (line.back() != '\n') continue;  // the rest of a long line follows
    line.pop_back();
    take(line);
    line.clear();
  }
  take(line);  // a last line without a newline
  const int status = pclose(pipe);
  if (status != 0 && tb.error.empty())
    tb.error = "exited with status " +
               std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : status) + " (" + cmd + ")";
  return tb;
}

}  // namespace qkv2ctx::cli
