#include "loom/model_name.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(ModelNameTest, AcceptsFileSafeNames) {
  for (const char* ok : {"m", "llama-3.1-8b", "ranker_v2", "A0", "x.y"}) EXPECT_TRUE(ValidateModelName(ok).ok()) << ok;
  EXPECT_TRUE(ValidateModelName(std::string(128, 'a')).ok());
}

TEST(ModelNameTest, RejectsPathsAndOddCharacters) {
  for (const char* bad : {"", ".", "..", "a/b", "../x", ".hidden", "-x", "a..b", "a b", "a\nb", "é"}) {
    EXPECT_FALSE(ValidateModelName(bad).ok()) << bad;
  }
  EXPECT_FALSE(ValidateModelName(std::string(129, 'a')).ok());
}

}  // namespace
}  // namespace loom
