#include "loom/size_parse.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(SizeParseTest, Units) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("4K"), 4096u);
  EXPECT_EQ(*ParseByteSize("4kib"), 4096u);
  EXPECT_EQ(*ParseByteSize("16M"), 16u << 20);
  EXPECT_EQ(*ParseByteSize("2GB"), 2ull << 30);
  EXPECT_EQ(*ParseByteSize("1T"), 1ull << 40);
  EXPECT_EQ(*ParseByteSize("7B"), 7u);
}

TEST(SizeParseTest, RejectsGarbageAndOverflow) {
  for (const char* bad : {"", "M", "-1", "1.5G", "12X", "99999999999999999999", "16777216T", " 4K"}) {
    Result<uint64_t> r = ParseByteSize(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace loom
