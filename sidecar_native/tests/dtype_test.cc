#include "loom/dtype.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(DtypeTest, ExactlyTheReferenceSetWithWidths) {
  const std::vector<std::pair<std::string, uint32_t>> expected = {
      {"BOOL", 8},        {"F4", 4},          {"F6_E2M3", 6},     {"F6_E3M2", 6}, {"U8", 8},   {"I8", 8},
      {"F8_E5M2", 8},     {"F8_E4M3", 8},     {"F8_E8M0", 8},     {"F8_E4M3FNUZ", 8},          {"F8_E5M2FNUZ", 8},
      {"I16", 16},        {"U16", 16},        {"F16", 16},        {"BF16", 16},   {"I32", 32}, {"U32", 32},
      {"F32", 32},        {"C64", 64},        {"F64", 64},        {"I64", 64},    {"U64", 64}};
  ASSERT_EQ(AllDtypes().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    Dtype d = AllDtypes()[i];
    EXPECT_EQ(DtypeName(d), expected[i].first);
    EXPECT_EQ(DtypeBits(d), expected[i].second) << expected[i].first;
    EXPECT_EQ(ParseDtype(expected[i].first), d);
  }
}

TEST(DtypeTest, ParseIsExactAndCaseSensitive) {
  EXPECT_FALSE(ParseDtype("f32"));
  EXPECT_FALSE(ParseDtype("F32 "));
  EXPECT_FALSE(ParseDtype(""));
  EXPECT_FALSE(ParseDtype("F128"));
  EXPECT_FALSE(ParseDtype("FP8"));
}

}  // namespace
}  // namespace loom
