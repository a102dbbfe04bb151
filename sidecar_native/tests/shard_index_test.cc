#include "loom/shard_index.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(ShardIndexTest, ParsesWeightMap) {
  Result<ShardIndex> i = ParseShardIndex(
      R"({"metadata":{"total_size":10},"weight_map":{"b":"m-2.safetensors","a":"m-1.safetensors","c":"m-1.safetensors"}})");
  ASSERT_TRUE(i.ok()) << i.status().ToString();
  EXPECT_EQ(i->shards, (std::vector<std::string>{"m-1.safetensors", "m-2.safetensors"}));
  EXPECT_EQ(i->weight_map.at("b"), "m-2.safetensors");
}

TEST(ShardIndexTest, RejectsBadIndexes) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {R"({"metadata":{}})", "no \"weight_map\""},
      {R"({"weight_map":{}})", "empty weight_map"},
      {R"({"weight_map":{"a":1}})", "must be a shard file name"},
      {R"({"weight_map":{"a":"../x.safetensors"}})", "not a plain file name"},
      {R"({"weight_map":{"a":"/etc/passwd"}})", "not a plain file name"},
      {R"({"weight_map":{"a":".."}})", "not a plain file name"},
      {R"({"weight_map":{"a":""}})", "not a plain file name"},
      {"{\"weight_map\":{\"\xff\":\"x\"}}", "not valid UTF-8"},
  };
  for (const auto& [json, fragment] : cases) {
    Result<ShardIndex> r = ParseShardIndex(json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidModel);
    EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace loom
