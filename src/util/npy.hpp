// Minimal NumPy .npy (format 1.0/2.0) reader and writer for little-endian dense arrays: the CLI's
// --save files, the conformance vectors and the tests use it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qkv2ctx::util {

struct NpyArray {
  std::string descr;                 // e.g. "<f2", "|i1", "<i4", "<f4", "<f8"
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;   // raw data, C order
  std::int64_t numel() const;
  std::size_t item_size() const;
};

// Throws qkv2ctx::Error(io_error) with the path and what is wrong.
NpyArray read_npy(const std::string& path);
void write_npy(const std::string& path, const std::string& descr, const std::vector<std::int64_t>& shape,
               const void* data, std::size_t bytes);

}  // namespace qkv2ctx::util
