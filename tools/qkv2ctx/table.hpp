// Plain-text tables with aligned columns (the CLI's side-by-side and benchmark summaries).
#pragma once
#include <string>
#include <vector>

namespace qkv2ctx::cli {

class Table {
 public:
  // align: one letter per column, 'l' (left) or 'r' (right); missing letters mean 'l'.
  Table(std::vector<std::string> header, std::string align);
  void add(std::vector<std::string> row);
  bool empty() const { return rows_.empty(); }
  std::string str() const;  // header, a rule, the rows; every line ends with '\n'

 private:
  std::vector<std::string> header_;
  std::string align_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace qkv2ctx::cli
