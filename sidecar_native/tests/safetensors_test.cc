// One test per rule of the reference parser (safetensors 0.8); the Python suite additionally
// replays the fuzz corpus and regression files against the reference itself.
#include "loom/safetensors.h"

#include <gtest/gtest.h>

#include "loom/utf8.h"
#include "testutil.h"

namespace loom {
namespace {

using testing::MakeSafetensors;
using testing::RawSafetensors;

Result<SafetensorsHeader> Parse(const std::string& file) {
  return ParseSafetensors({reinterpret_cast<const uint8_t*>(file.data()), file.size()}, file.size());
}

// Expects an InvalidModel whose message contains `fragment`.
void ExpectRejected(const std::string& file, const std::string& fragment) {
  Result<SafetensorsHeader> r = Parse(file);
  ASSERT_FALSE(r.ok()) << "accepted; expected: " << fragment;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidModel);
  EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status().message();
}

std::string One(const std::string& tensor_json, const std::string& data) {
  return RawSafetensors(R"({"a":)" + tensor_json + "}", data);
}

TEST(SafetensorsTest, ParsesTensorsMetadataAndOrdersByOffset) {
  const std::string file = MakeSafetensors(
      {{"w", "BF16", {2, 3}, 12}, {"b", "F32", {3}, 12}, {"s", "I64", {}, 8}, {"z", "U8", {0}, 0}},
      {{"format", "pt"}});
  Result<SafetensorsHeader> h = Parse(file);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_EQ(h->tensors.size(), 4u);
  EXPECT_EQ(h->tensors[0].name, "w");
  EXPECT_EQ(h->tensors[0].dtype, Dtype::kBF16);
  EXPECT_EQ(h->tensors[0].shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(h->tensors[1].name, "b");
  EXPECT_EQ(h->tensors[1].begin, 12u);
  EXPECT_EQ(h->tensors[2].name, "s");  // scalar: shape [] has one element
  EXPECT_EQ(h->data_len(), 32u);
  EXPECT_EQ(h->data_offset() + h->data_len(), file.size());
  ASSERT_TRUE(h->metadata.has_value());
  EXPECT_EQ(h->metadata->at("format"), "pt");
}

TEST(SafetensorsTest, EmptyHeaderIsAValidFile) {
  Result<SafetensorsHeader> h = Parse(RawSafetensors("{}"));
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->tensors.empty());
  EXPECT_FALSE(h->metadata.has_value());
  EXPECT_TRUE(Parse(RawSafetensors("{\"__metadata__\":null}   ")).ok());
  EXPECT_TRUE(Parse(RawSafetensors(" \t\r\n{} ")).ok());
}

TEST(SafetensorsTest, HeaderLengthRules) {
  ExpectRejected(std::string(7, '\0'), "too small for the 8-byte header length");
  ExpectRejected("", "too small");
  std::string big = RawSafetensors("{}");
  big[0] = '\x01', big[1] = '\xe1', big[2] = '\xf5', big[3] = '\x05';  // 100,000,001
  ExpectRejected(big, "exceeds the limit of 100000000 bytes");
  ExpectRejected(std::string(8, '\xff') + "{}", "exceeds the limit");
  std::string past = RawSafetensors("{}");
  past[0] = 3;  // N=3 but only 2 bytes follow
  ExpectRejected(past, "runs past the end of the file");
}

TEST(SafetensorsTest, HeaderOfExactly100MBIsAllowedByLength) {
  std::string prefix(8, '\0');
  const uint64_t n = kMaxHeaderLen;
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  const auto* p = reinterpret_cast<const uint8_t*>(prefix.data());
  EXPECT_TRUE(ParseHeaderLength({p, 8}, 8 + n).ok());
  EXPECT_FALSE(ParseHeaderLength({p, 8}, 8 + n - 1).ok());
}

TEST(SafetensorsTest, RejectsInvalidUtf8) {
  ExpectRejected(One(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})", "z").replace(10, 1, "\xff"),
                 "not valid UTF-8");
  ExpectRejected(RawSafetensors("{\"\xED\xA0\x80\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "z"),
                 "not valid UTF-8");
}

TEST(SafetensorsTest, RejectsInvalidJson) {
  ExpectRejected(RawSafetensors("{\"a\":", "z"), "invalid JSON");
  ExpectRejected(RawSafetensors("{} x"), "invalid JSON");
  ExpectRejected(RawSafetensors("   "), "invalid JSON");
  ExpectRejected(RawSafetensors(""), "invalid JSON");
  ExpectRejected(RawSafetensors("{}\x0c"), "invalid JSON");  // form feed is not JSON whitespace
  ExpectRejected(RawSafetensors("\xEF\xBB\xBF{}"), "byte order mark");
  ExpectRejected(RawSafetensors(std::string("{}\0junk", 7)), "NUL byte");
  ExpectRejected(RawSafetensors("{\"a\\ud800\":5}"), "invalid JSON");  // lone surrogate escape
  ExpectRejected(RawSafetensors("{\"x\":1e400}"), "invalid JSON");     // out of range, as serde_json
  ExpectRejected(RawSafetensors("[]"), "must be a JSON object");
  ExpectRejected(RawSafetensors("null"), "must be a JSON object");
}

TEST(SafetensorsTest, ErrorMessagesAreValidUtf8) {
  // nlohmann's message quotes the bytes last read, here half of a U+FFFD.
  Result<SafetensorsHeader> r =
      Parse(RawSafetensors("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0\xEF\xBF\xBD 2]}}", "ab"));
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(FindInvalidUtf8(r.status().message())) << r.status().message();
}

TEST(SafetensorsTest, NestingLimitMatchesSerde) {
  auto nested = [](int levels) {  // top object + tensor object + `levels` arrays
    return One(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":)" + std::string(levels, '[') +
                   std::string(levels, ']') + "}",
               "z");
  };
  EXPECT_TRUE(Parse(nested(125)).ok());  // 127 levels in all
  ExpectRejected(nested(126), "nested deeper than 127");
  // Brackets inside strings do not count.
  EXPECT_TRUE(Parse(One(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":")" + std::string(300, '[') +
                            R"(\"["})",
                        "z"))
                  .ok());
}

TEST(SafetensorsTest, RejectsUnknownDtype) {
  ExpectRejected(One(R"({"dtype":"F128","shape":[1],"data_offsets":[0,16]})", std::string(16, 'x')),
                 "unknown dtype \"F128\"");
  ExpectRejected(One(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})", "abcd"), "unknown dtype \"f32\"");
  ExpectRejected(One(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})", "abcd"), "dtype must be a string");
  ExpectRejected(One(R"({"dtype":{"X":null},"shape":[1],"data_offsets":[0,1]})", "z"), "unknown dtype \"X\"");
}

TEST(SafetensorsTest, AcceptsSerdeAlternativeForms) {
  // A struct may be a 3-element array, an enum a single-key map with a null value.
  EXPECT_TRUE(Parse(One(R"(["F32",[1],[0,4]])", "abcd")).ok());
  EXPECT_TRUE(Parse(One(R"({"dtype":{"U8":null},"shape":[2],"data_offsets":[0,2]})", "ab")).ok());
  EXPECT_TRUE(Parse(One(R"([{"U8":null},[],[0,1]])", "z")).ok());
  // Unknown fields are ignored, even duplicated ones.
  EXPECT_TRUE(Parse(One(R"({"x":1,"x":[2.5],"dtype":"U8","shape":[1],"data_offsets":[0,1]})", "z")).ok());
  ExpectRejected(One(R"(["F32",[1],[0,4],1])", "abcd"), "entry must be an object");
  ExpectRejected(One(R"({"dtype":{"U8":null,"U8":null},"shape":[1],"data_offsets":[0,1]})", "z"), "single key");
  ExpectRejected(One(R"([{"U8":null,"U8":null},[1],[0,1]])", "z"), "single key");
  ExpectRejected(One(R"({"dtype":{"U8":[]},"shape":[1],"data_offsets":[0,1]})", "z"), "dtype must be a string");
}

TEST(SafetensorsTest, DuplicateRules) {
  // Duplicate tensor names: the last one wins, but every occurrence must be well-formed.
  Result<SafetensorsHeader> h = Parse(RawSafetensors(
      R"({"a":{"dtype":"U8","shape":[9],"data_offsets":[0,9]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
      "xy"));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->tensors.size(), 1u);
  EXPECT_EQ(h->tensors[0].end, 2u);
  ExpectRejected(RawSafetensors(R"({"a":5,"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "z"),
                 "entry must be an object");
  ExpectRejected(RawSafetensors(R"({"__metadata__":{},"__metadata__":{}})"), "duplicate field `__metadata__`");
  ExpectRejected(One(R"({"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]})", "z"),
                 "duplicate field `dtype`");
  ExpectRejected(One(R"({"dtype":"U8","shape":[1],"shape":[1],"data_offsets":[0,1]})", "z"),
                 "duplicate field `shape`");
}

TEST(SafetensorsTest, RejectsMissingOrMistypedFields) {
  ExpectRejected(One(R"({"dtype":"F32","data_offsets":[0,4]})", "abcd"), "missing field \"shape\"");
  ExpectRejected(One(R"({"shape":[1],"data_offsets":[0,4]})", "abcd"), "missing field \"dtype\"");
  ExpectRejected(One(R"({"dtype":"F32","shape":[1]})", "abcd"), "missing field \"data_offsets\"");
  ExpectRejected(One("5", ""), "entry must be an object");
  ExpectRejected(One(R"({"dtype":"F32","shape":null,"data_offsets":[0,4]})", "abcd"), "shape must be an array");
  ExpectRejected(One(R"({"dtype":"F32","shape":[[1]],"data_offsets":[0,4]})", "abcd"), "shape entries");
  ExpectRejected(One(R"({"dtype":"F32","shape":[true],"data_offsets":[0,4]})", "abcd"), "shape entries");
}

TEST(SafetensorsTest, IntegersMustBePlainNonNegative) {
  ExpectRejected(One(R"({"dtype":"F32","shape":[1],"data_offsets":[-0,4]})", "abcd"), "data_offsets must be");
  ExpectRejected(One(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4.0]})", "abcd"), "data_offsets must be");
  ExpectRejected(One(R"({"dtype":"U8","shape":[1E2],"data_offsets":[0,100]})", std::string(100, 'x')),
                 "shape entries");
  ExpectRejected(One(R"({"dtype":"U8","shape":[-1],"data_offsets":[0,1]})", "z"), "shape entries");
  ExpectRejected(One(R"({"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]})", "z"), "shape entries");
  ExpectRejected(One(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,4]})", "abcd"), "data_offsets must be");
  ExpectRejected(One(R"({"dtype":"F32","shape":[1],"data_offsets":{"0":0}})", "abcd"), "data_offsets must be");
}

TEST(SafetensorsTest, OffsetsMustTileTheBufferFromZero) {
  ExpectRejected(One(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})", "abcdefgh"),
                 "invalid offset for tensor `a`");  // gap at the start
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                                "abcdef"),
                 "invalid offset for tensor `b`");  // overlap
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                R"("b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})",
                                "abcde"),
                 "invalid offset for tensor `b`");  // gap between
  ExpectRejected(RawSafetensors(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                                R"("b":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})",
                                "abcd"),
                 "invalid offset");  // end < begin
  // Zero-sized tensors may share an offset.
  EXPECT_TRUE(Parse(RawSafetensors(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                                   R"("b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})"))
                  .ok());
}

TEST(SafetensorsTest, SizeMustEqualElementCountTimesWidth) {
  ExpectRejected(One(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", "abcd"),
                 "data_offsets span 4 bytes but F32 x [2] needs 8");
  ExpectRejected(One(R"({"dtype":"F4","shape":[3],"data_offsets":[0,2]})", "ab"), "do not end on a byte boundary");
  EXPECT_TRUE(Parse(One(R"({"dtype":"F4","shape":[4],"data_offsets":[0,2]})", "ab")).ok());
  EXPECT_TRUE(Parse(One(R"({"dtype":"F6_E3M2","shape":[4],"data_offsets":[0,3]})", "abc")).ok());
  EXPECT_TRUE(Parse(One(R"({"dtype":"C64","shape":[1],"data_offsets":[0,8]})", "abcdefgh")).ok());
}

TEST(SafetensorsTest, RejectsShapeOverflow) {
  ExpectRejected(One(R"({"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]})", "abcd"),
                 "overflow computing the size");
  ExpectRejected(One(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]})", "abcd"),
                 "overflow computing the size");
  ExpectRejected(One(R"({"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,18446744073709551615]})",
                     "z"),
                 "overflow");
}

TEST(SafetensorsTest, RejectsTrailingBytesAndTruncation) {
  ExpectRejected(One(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})", "abcde"), "trailing bytes");
  ExpectRejected(One(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})", "abc"), "file truncated");
  ExpectRejected(RawSafetensors("{}", "x"), "trailing bytes");
}

TEST(SafetensorsTest, MetadataValuesMustBeStrings) {
  ExpectRejected(RawSafetensors(R"({"__metadata__":{"a":1}})"), "must be a string");
  ExpectRejected(RawSafetensors(R"({"__metadata__":{"a":null}})"), "must be a string");
  ExpectRejected(RawSafetensors(R"({"__metadata__":[]})"), "must be an object");
  ExpectRejected(RawSafetensors(R"({"__metadata__":"x"})"), "must be an object");
  // An escaped spelling of the key is the same key.
  ExpectRejected(RawSafetensors(R"({"__metadat\u0061__":{"a":1}})"), "must be a string");
  Result<SafetensorsHeader> h = Parse(RawSafetensors(R"({"__metadata__":{"k":"v","k":"w"}})"));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->metadata->at("k"), "w");
}

TEST(SafetensorsTest, ParseNeedsTheWholeHeaderInThePrefix) {
  const std::string file = MakeSafetensors({{"a", "U8", {4}, 4}});
  const auto* p = reinterpret_cast<const uint8_t*>(file.data());
  Result<SafetensorsHeader> r = ParseSafetensors({p, 12}, file.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loom
