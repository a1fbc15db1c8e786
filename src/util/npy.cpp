#include "util/npy.hpp"

#include <cstring>
#include <fstream>
#include <regex>

#include "qkv2ctx/error.hpp"

namespace qkv2ctx::util {
namespace {
[[noreturn]] void io_fail(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::io_error, path + ": " + what);
}
}  // namespace

std::int64_t NpyArray::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::size_t NpyArray::item_size() const {
  return descr.size() >= 3 ? static_cast<std::size_t>(std::stoi(descr.substr(2))) : 0;
}

NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) io_fail(path, "cannot open");
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) io_fail(path, "not a .npy file");
  std::uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2)) io_fail(path, "truncated header");
    header_len = b[0] | (b[1] << 8);
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4)) io_fail(path, "truncated header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
  } else {
    io_fail(path, "unsupported .npy version " + std::to_string(magic[6]));
  }
  if (header_len > (1u << 20)) io_fail(path, "header too large");
  std::string header(header_len, '\0');
  if (!f.read(header.data(), header_len)) io_fail(path, "truncated header");
  std::smatch m;
  NpyArray a;
  if (!std::regex_search(header, m, std::regex("'descr'\\s*:\\s*'([^']+)'"))) io_fail(path, "no descr");
  a.descr = m[1];
  if (std::regex_search(header, m, std::regex("'fortran_order'\\s*:\\s*True")))
    io_fail(path, "Fortran-ordered arrays are not supported");
  if (!std::regex_search(header, m, std::regex("'shape'\\s*:\\s*\\(([^)]*)\\)"))) io_fail(path, "no shape");
  const std::string dims = m[1];
  const std::regex digits("\\d+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), digits), end; it != end; ++it)
    a.shape.push_back(std::stoll(it->str()));
  if (a.descr.size() < 3 || (a.descr[0] != '<' && a.descr[0] != '|'))
    io_fail(path, "unsupported dtype '" + a.descr + "' (little-endian only)");
  const std::size_t bytes = static_cast<std::size_t>(a.numel()) * a.item_size();
  a.bytes.resize(bytes);
  if (bytes && !f.read(reinterpret_cast<char*>(a.bytes.data()), static_cast<std::streamsize>(bytes)))
    io_fail(path, "truncated data: expected " + std::to_string(bytes) + " bytes");
  return a;
}

void write_npy(const std::string& path, const std::string& descr, const std::vector<std::int64_t>& shape,
               const void* data, std::size_t bytes) {
  std::string dims;
  for (auto d : shape) dims += std::to_string(d) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  if (!f) io_fail(path, "cannot create");
  const std::uint16_t len = static_cast<std::uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  const char lb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(lb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!f) io_fail(path, "write failed");
}

}  // namespace qkv2ctx::util
