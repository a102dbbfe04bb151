#include "loom/model_resolver.h"

#include <gtest/gtest.h>

#include "testutil.h"

namespace loom {
namespace {

using testing::MakeSafetensors;
using testing::TempDir;

class ModelResolverTest : public ::testing::Test {
 protected:
  Result<ResolvedModel> Resolve(const std::string& uri) { return ResolveModel(uri, opener_, Env::Default()); }
  static HttpOptions Quick() {
    HttpOptions o;
    o.connect_timeout_s = 2;
    o.read_timeout_s = 5;
    o.retries = 0;
    return o;
  }
  DefaultSourceOpener opener_{Env::Default(), false, Quick()};
  TempDir dir_{"/tmp"};
};

TEST_F(ModelResolverTest, SingleFileAndFileUri) {
  testing::WriteFile(dir_.Join("m.safetensors"), MakeSafetensors({{"a", "F32", {2}, 8}}));
  for (const std::string& uri : {dir_.Join("m.safetensors"), "file://" + dir_.Join("m.safetensors")}) {
    Result<ResolvedModel> m = Resolve(uri);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    ASSERT_EQ(m->shards.size(), 1u);
    EXPECT_EQ(m->headers[0].tensors[0].name, "a");
  }
}

TEST_F(ModelResolverTest, ShardedDirectoryWithIndex) {
  testing::WriteFile(dir_.Join("model-00001-of-00002.safetensors"), MakeSafetensors({{"a", "U8", {4}, 4}}));
  testing::WriteFile(dir_.Join("model-00002-of-00002.safetensors"), MakeSafetensors({{"b", "U8", {4}, 4}}));
  testing::WriteFile(dir_.Join("model.safetensors.index.json"),
                     R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  for (const std::string& uri : {dir_.path(), dir_.Join("model.safetensors.index.json")}) {
    Result<ResolvedModel> m = Resolve(uri);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    ASSERT_EQ(m->shards.size(), 2u);
    EXPECT_EQ(m->shards[1]->uri(), dir_.Join("model-00002-of-00002.safetensors"));
  }
}

TEST_F(ModelResolverTest, DirectoryWithoutIndexTakesEverySafetensorsFile) {
  testing::WriteFile(dir_.Join("b.safetensors"), MakeSafetensors({{"b", "U8", {1}, 1}}));
  testing::WriteFile(dir_.Join("a.safetensors"), MakeSafetensors({{"a", "U8", {1}, 1}}));
  testing::WriteFile(dir_.Join("README.md"), "hi");
  Result<ResolvedModel> m = Resolve(dir_.path());
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->shards.size(), 2u);
  EXPECT_EQ(m->shards[0]->uri(), dir_.Join("a.safetensors"));
}

TEST_F(ModelResolverTest, ErrorsNameTheFileAndTheRule) {
  Result<ResolvedModel> none = Resolve(dir_.path());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidModel);
  EXPECT_EQ(Resolve(dir_.Join("missing.safetensors")).status().code(), StatusCode::kUnavailable);

  testing::WriteFile(dir_.Join("bad.safetensors"), testing::RawSafetensors("{}", "trailing"));
  Result<ResolvedModel> bad = Resolve(dir_.Join("bad.safetensors"));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidModel);
  EXPECT_NE(bad.status().message().find(dir_.Join("bad.safetensors") + ": "), std::string::npos);

  testing::WriteFile(dir_.Join("s1.safetensors"), MakeSafetensors({{"a", "U8", {1}, 1}}));
  testing::WriteFile(dir_.Join("idx.json"), R"({"weight_map":{"a":"s1.safetensors","zz":"s1.safetensors"}})");
  Result<ResolvedModel> wrong = Resolve(dir_.Join("idx.json"));
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidModel);
  EXPECT_NE(wrong.status().message().find("tensor `zz`"), std::string::npos);

  testing::WriteFile(dir_.Join("idx2.json"), R"({"weight_map":{"a":"missing.safetensors"}})");
  EXPECT_EQ(Resolve(dir_.Join("idx2.json")).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(Resolve("az://bucket/x").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ModelResolverTest, HttpFileAndHttpIndex) {
  testing::FileServer server;
  server.Put("m-1.safetensors", MakeSafetensors({{"a", "U8", {3}, 3}}));
  server.Put("m-2.safetensors", MakeSafetensors({{"b", "U8", {3}, 3}}));
  server.Put("index.json", R"({"weight_map":{"a":"m-1.safetensors","b":"m-2.safetensors"}})");
  Result<ResolvedModel> one = Resolve(server.Url("m-1.safetensors"));
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->shards.size(), 1u);
  Result<ResolvedModel> sharded = Resolve(server.Url("index.json"));
  ASSERT_TRUE(sharded.ok()) << sharded.status().ToString();
  ASSERT_EQ(sharded->shards.size(), 2u);
  EXPECT_EQ(sharded->shards[1]->uri(), server.Url("m-2.safetensors"));
}

TEST_F(ModelResolverTest, LargeHeaderNeedsASecondRead) {
  std::vector<testing::TestTensor> many;
  for (int i = 0; i < 20000; ++i) many.push_back({"tensor_with_a_long_name_" + std::to_string(i), "U8", {1}, 1});
  const std::string file = MakeSafetensors(many);
  testing::MemorySource src("m", file);
  Result<SafetensorsHeader> h = ReadHeader(src);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_GT(h->header_len, 1u << 20);
  EXPECT_EQ(h->tensors.size(), 20000u);
  EXPECT_EQ(src.reads, 2);
}

}  // namespace
}  // namespace loom
