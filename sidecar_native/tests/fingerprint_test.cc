#include "loom/fingerprint.h"

#include <gtest/gtest.h>

#include "loom/sha256.h"
#include "testutil.h"

namespace loom {
namespace {

TEST(FingerprintTest, RangesCoverHeaderAndThreeSamples) {
  const uint64_t s = kFingerprintSampleBytes;
  std::vector<ByteRange> r = FingerprintRanges(1000 + 10 * s, 1000);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].offset, 0u);
  EXPECT_EQ(r[0].len, 1000u);
  EXPECT_EQ(r[1].offset, 1000u);
  EXPECT_EQ(r[2].offset, 1000 + (10 * s - s) / 2);
  EXPECT_EQ(r[3].offset, 1000 + 9 * s);
  // Small data: hashed whole.
  r = FingerprintRanges(1000 + 3 * s, 1000);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].len, 3 * s);
}

TEST(FingerprintTest, SeesHeaderAndSampledDataChanges) {
  std::string bytes = testing::MakeSafetensors({{"w", "U8", {1 << 20}, 1 << 20}});
  const uint64_t data_offset = bytes.size() - (1 << 20);
  testing::MemorySource a("m", bytes);
  Result<SourceFingerprint> fa = ComputeFingerprint(a, data_offset);
  ASSERT_TRUE(fa.ok());
  EXPECT_EQ(fa->size, bytes.size());
  EXPECT_EQ(fa->version, "v1");

  std::string changed = bytes;
  changed[data_offset + 5] ^= 1;  // inside the first sample
  testing::MemorySource b("m", changed);
  EXPECT_NE(ComputeFingerprint(b, data_offset)->sample_sha256, fa->sample_sha256);

  std::string unsampled = bytes;
  unsampled[data_offset + 200000] ^= 1;  // between samples: documented blind spot
  testing::MemorySource c("m", unsampled);
  EXPECT_EQ(ComputeFingerprint(c, data_offset)->sample_sha256, fa->sample_sha256);

  testing::MemorySource d("m", bytes, "v2");
  EXPECT_NE(ModelFingerprint({*ComputeFingerprint(d, data_offset)}), ModelFingerprint({*fa}));
}

TEST(FingerprintTest, ModelFingerprintIsSha256OfShardLines) {
  SourceFingerprint f{"/m.safetensors", 10, "mtime_ns:5", "ab"};
  EXPECT_EQ(ModelFingerprint({f}), "sha256:" + Sha256Hex("/m.safetensors\t10\tmtime_ns:5\tab\n"));
}

TEST(FingerprintTest, ReadErrorsPropagate) {
  testing::MemorySource a("m", testing::MakeSafetensors({{"w", "U8", {10}, 10}}));
  a.fail_on_read = 0;
  Result<SourceFingerprint> f = ComputeFingerprint(a, 8);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kIOError);
}

}  // namespace
}  // namespace loom
