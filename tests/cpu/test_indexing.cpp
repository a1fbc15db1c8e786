// The addressing rules of src/core/indexing.hpp: the row + column split the INT8 epilogue uses must
// give exactly out_offset, for every layout, on shapes where chw32's 32-channel groups cross heads.
#include <gtest/gtest.h>

#include "core/indexing.hpp"

namespace qkv2ctx {
namespace {

TEST(Indexing, OutOffsetIsRowPlusColumn) {
  for (Layout layout : {Layout::trt, Layout::hf, Layout::chw32})
    for (int head_size : {32, 64, 128})
      for (int heads : {1, 3, 16}) {
        const std::int64_t T = 37;  // not a multiple of anything the layouts use
        for (std::int64_t t : {std::int64_t{0}, std::int64_t{1}, std::int64_t{17}, T - 1})
          for (int n = 0; n < heads; ++n)
            for (int d = 0; d < head_size; d += 4)
              ASSERT_EQ(out_offset(layout, t, n, d, heads, head_size, T),
                        out_row_offset(layout, t, heads, head_size) + out_col_offset(layout, n, d, head_size, T))
                  << "layout " << static_cast<int>(layout) << " D " << head_size << " N " << heads << " t " << t
                  << " n " << n << " d " << d;
      }
}

}  // namespace
}  // namespace qkv2ctx
