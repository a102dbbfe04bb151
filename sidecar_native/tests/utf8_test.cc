#include "loom/utf8.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(Utf8Test, AcceptsWellFormed) {
  EXPECT_FALSE(FindInvalidUtf8(""));
  EXPECT_FALSE(FindInvalidUtf8("plain ascii"));
  EXPECT_FALSE(FindInvalidUtf8("caf\xC3\xA9"));                // U+00E9
  EXPECT_FALSE(FindInvalidUtf8("\xE2\x82\xAC"));               // U+20AC
  EXPECT_FALSE(FindInvalidUtf8("\xEF\xBF\xBE"));               // U+FFFE (noncharacter, still valid)
  EXPECT_FALSE(FindInvalidUtf8("\xF0\x9F\x98\x80"));           // U+1F600
  EXPECT_FALSE(FindInvalidUtf8("\xF4\x8F\xBF\xBF"));           // U+10FFFF
  EXPECT_FALSE(FindInvalidUtf8(std::string_view("a\0b", 3)));  // NUL is valid UTF-8
}

TEST(Utf8Test, RejectsWhatRustRejects) {
  EXPECT_EQ(FindInvalidUtf8("ab\xFF"), 2u);                // invalid byte
  EXPECT_EQ(FindInvalidUtf8("\xC0\xAF"), 0u);              // overlong
  EXPECT_EQ(FindInvalidUtf8("\xE0\x80\xAF"), 0u);          // overlong 3-byte
  EXPECT_EQ(FindInvalidUtf8("\xED\xA0\x80"), 0u);          // surrogate U+D800
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);      // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("x\xC3"), 1u);                 // truncated
  EXPECT_EQ(FindInvalidUtf8("\x80"), 0u);                  // lone continuation
  EXPECT_EQ(FindInvalidUtf8("\xE2\x82" "A"), 0u);          // bad continuation
  EXPECT_EQ(FindInvalidUtf8("\xF5\x80\x80\x80"), 0u);      // F5 never valid
}

TEST(Utf8Test, SanitizeReplacesOnlyBrokenSequences) {
  EXPECT_EQ(SanitizeUtf8("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(SanitizeUtf8("a\xEF\xBF"), "a\xEF\xBF\xBD\xEF\xBF\xBD");  // a cut U+FFFD: two bad bytes
  EXPECT_EQ(SanitizeUtf8("\xFFx"), "\xEF\xBF\xBDx");
  EXPECT_FALSE(FindInvalidUtf8(SanitizeUtf8("\xC0\xAF\xED\xA0\x80z")));
}

}  // namespace
}  // namespace loom
