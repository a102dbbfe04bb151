#include "loom/layout.h"

#include <gtest/gtest.h>

#include "testutil.h"

namespace loom {
namespace {

SafetensorsHeader Header(const std::string& file) {
  Result<SafetensorsHeader> h =
      ParseSafetensors({reinterpret_cast<const uint8_t*>(file.data()), file.size()}, file.size());
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return *h;
}

TEST(LayoutTest, AlignsEveryTensorAndRoundsTheRegionToPages) {
  std::vector<SafetensorsHeader> shards = {
      Header(testing::MakeSafetensors({{"a", "U8", {10}, 10}, {"b", "F32", {3}, 12}, {"e", "U8", {0}, 0}})),
      Header(testing::MakeSafetensors({{"c", "U8", {5000}, 5000}}))};
  Result<Layout> l = PlanLayout(shards, 4096);
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->tensors.size(), 4u);
  EXPECT_EQ(l->tensors[0].offset, 0u);
  EXPECT_EQ(l->tensors[1].offset, 4096u);
  EXPECT_EQ(l->tensors[2].offset, 8192u);  // zero-sized still gets an aligned offset
  EXPECT_EQ(l->tensors[3].name, "c");
  EXPECT_EQ(l->tensors[3].shard, 1u);
  EXPECT_EQ(l->tensors[3].offset, 8192u);
  EXPECT_EQ(l->tensors[3].src_offset, shards[1].data_offset());
  EXPECT_EQ(l->data_bytes, 5022u);
  EXPECT_EQ(l->region_bytes, 16384u);
  for (const PlacedTensor& t : l->tensors) EXPECT_EQ(t.offset % 4096, 0u);
}

TEST(LayoutTest, SmallerAlignmentPacksTighter) {
  std::vector<SafetensorsHeader> shards = {Header(testing::MakeSafetensors({{"a", "U8", {10}, 10}, {"b", "U8", {3}, 3}}))};
  Result<Layout> l = PlanLayout(shards, 256);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->tensors[1].offset, 256u);
  EXPECT_EQ(l->region_bytes, 4096u);
}

TEST(LayoutTest, EmptyModelHasAnEmptyRegion) {
  std::vector<SafetensorsHeader> shards = {Header(testing::RawSafetensors("{}"))};
  Result<Layout> l = PlanLayout(shards, 4096);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->region_bytes, 0u);
  EXPECT_TRUE(PlanCopies(*l, 1 << 20).empty());
}

TEST(LayoutTest, RejectsDuplicateNamesAcrossShardsAndBadAlignment) {
  std::vector<SafetensorsHeader> shards = {Header(testing::MakeSafetensors({{"a", "U8", {1}, 1}})),
                                           Header(testing::MakeSafetensors({{"a", "U8", {1}, 1}}))};
  Result<Layout> l = PlanLayout(shards, 4096);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), StatusCode::kInvalidModel);
  for (uint64_t bad : {0ull, 100ull, 128ull, 3000ull, 1ull << 31}) {
    EXPECT_EQ(ValidateAlignment(bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(ValidateAlignment(256).ok());
}

TEST(LayoutTest, CopyPlanCoversEveryByteOnceWithinLimits) {
  std::vector<SafetensorsHeader> shards = {
      Header(testing::MakeSafetensors({{"big", "U8", {10000}, 10000}, {"s1", "U8", {10}, 10}, {"s2", "U8", {20}, 20},
                                       {"z", "U8", {0}, 0}, {"s3", "U8", {30}, 30}})),
      Header(testing::MakeSafetensors({{"t", "U8", {100}, 100}}))};
  Result<Layout> l = PlanLayout(shards, 256);
  ASSERT_TRUE(l.ok());
  const std::vector<CopyTask> tasks = PlanCopies(*l, 4096, /*max_pieces=*/2);
  uint64_t total = 0;
  std::vector<std::pair<uint64_t, uint64_t>> dst;
  for (const CopyTask& t : tasks) {
    EXPECT_LE(t.len, 4096u);
    EXPECT_LE(t.pieces.size(), 2u);
    uint64_t sum = 0;
    for (const CopyPiece& p : t.pieces) sum += p.len, dst.emplace_back(p.dst_offset, p.len);
    EXPECT_EQ(sum, t.len);
    total += t.len;
  }
  EXPECT_EQ(total, l->data_bytes);
  std::sort(dst.begin(), dst.end());
  for (size_t i = 1; i < dst.size(); ++i) EXPECT_LE(dst[i - 1].first + dst[i - 1].second, dst[i].first);
  // The 10000-byte tensor is split into 3 reads; small neighbours share reads; shards never mix.
  EXPECT_EQ(tasks[0].len, 4096u);
  EXPECT_EQ(tasks.back().shard, 1u);
  EXPECT_EQ(tasks.back().pieces.size(), 1u);
}

}  // namespace
}  // namespace loom
