#include "loom/stager.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include "loom/unique_fd.h"
#include "testutil.h"

namespace loom {
namespace {

using testing::MakeSafetensors;
using testing::MemorySource;
using testing::TempDir;
using testing::TestTensor;

// Adds a shard held in memory to `m`; returns the source so a test can inject failures.
MemorySource* AddShard(ResolvedModel& m, const std::string& uri, const std::vector<TestTensor>& tensors) {
  const std::string bytes = MakeSafetensors(tensors, {{"shard", uri}});
  auto src = std::make_unique<MemorySource>(uri, bytes);
  MemorySource* raw = src.get();
  Result<SafetensorsHeader> h = ReadHeader(*src);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  m.headers.push_back(*h);
  m.shards.push_back(std::move(src));
  return raw;
}

ResolvedModel TwoShards() {
  ResolvedModel m;
  m.uri = "mem://model";
  AddShard(m, "mem://s1", {{"emb", "F16", {1000, 8}, 16000}, {"bias", "F32", {3}, 12}, {"empty", "U8", {0}, 0}});
  AddShard(m, "mem://s2", {{"head", "BF16", {77, 100}, 15400}, {"q", "F4", {6}, 3}});
  return m;
}

// Checks the published files: manifest parses, every tensor's bytes are at its offset.
Manifest ExpectPublished(const std::string& dir, const std::string& name, const ResolvedModel& m) {
  const std::string text = testing::ReadFile(dir + "/" + ManifestFileName(name));
  Result<Manifest> manifest = ParseManifest(text);
  EXPECT_TRUE(manifest.ok()) << manifest.status().ToString();
  if (!manifest.ok()) return {};
  const std::string region = testing::ReadFile(dir + "/" + manifest->region_file);
  EXPECT_EQ(region.size(), manifest->region_bytes);
  size_t n = 0;
  for (const SafetensorsHeader& h : m.headers) n += h.tensors.size();
  EXPECT_EQ(manifest->tensors.size(), n);
  for (const ManifestTensor& t : manifest->tensors) {
    EXPECT_EQ(t.offset % manifest->alignment, 0u) << t.name;
    EXPECT_EQ(region.substr(t.offset, t.nbytes), testing::TensorBytes(t.name, t.nbytes)) << t.name;
  }
  EXPECT_EQ(manifest->sources.size(), m.shards.size());
  EXPECT_EQ(manifest->fingerprint, ModelFingerprint(manifest->sources));
  EXPECT_EQ(manifest->metadata.at("shard"), "mem://s1");  // merged: the first shard wins
  return *manifest;
}

std::vector<std::string> List(const std::string& dir) { return *Env::Default()->ListDir(dir); }

TEST(StagerTest, StagesAlignedTensorsAndPublishesAtomically) {
  TempDir dir;
  ResolvedModel m = TwoShards();
  std::atomic<uint64_t> progress{0};
  Result<StagedModel> r = StageModel(Env::Default(), dir.path(), "m", m, StageOptions{}, &progress);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->bytes, 16000u + 12 + 15400 + 3);
  EXPECT_EQ(progress, r->bytes);
  const Manifest manifest = ExpectPublished(dir.path(), "m", m);
  EXPECT_EQ(manifest.region_bytes, 10u * 4096);  // emb 4 pages, bias, empty+head 4, q
  EXPECT_EQ(List(dir.path()), (std::vector<std::string>{manifest.region_file, "m.manifest.json"}));
}

TEST(StagerTest, ThreadsChunksAndAlignmentOnlyChangeSpeed) {
  for (unsigned threads : {1u, 3u, 8u}) {
    for (uint64_t chunk : {uint64_t{4096}, uint64_t{1} << 20}) {
      TempDir dir;
      ResolvedModel m = TwoShards();
      StageOptions o;
      o.threads = threads;
      o.chunk_bytes = chunk;
      o.alignment = 256;
      o.preallocate = threads != 3;
      o.populate = threads == 8;
      Result<StagedModel> r = StageModel(Env::Default(), dir.path(), "m", m, o);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(ExpectPublished(dir.path(), "m", m).alignment, 256u);
    }
  }
}

class SmallDiskEnv : public PosixEnv {
 public:
  Result<uint64_t> FreeBytes(const std::string&) override { return free_bytes; }
  std::optional<uint64_t> MemoryHeadroom() override { return headroom; }
  uint64_t free_bytes = 1ull << 40;
  std::optional<uint64_t> headroom;
};

TEST(StagerTest, RefusesBeforeWritingWhenSpaceIsShort) {
  TempDir dir;
  ResolvedModel m = TwoShards();
  SmallDiskEnv env;
  env.free_bytes = 100000;  // the model needs 40 KiB + 1 MiB slack
  Result<StagedModel> r = StageModel(&env, dir.path(), "m", m, StageOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNoSpace);
  EXPECT_NE(r.status().message().find("needs 40960 bytes"), std::string::npos) << r.status().message();
  EXPECT_TRUE(List(dir.path()).empty());

  env.free_bytes = 1ull << 40;
  StageOptions reserve;
  reserve.reserve_bytes = (1ull << 40) - 10000;
  r = StageModel(&env, dir.path(), "m", m, reserve);
  EXPECT_EQ(r.status().code(), StatusCode::kNoSpace);
  EXPECT_NE(r.status().message().find("reserve"), std::string::npos);

  env.headroom = 4096;  // /dev/shm is memory-backed: the cgroup limit counts
  r = StageModel(&env, dir.path(), "m", m, StageOptions{});
  EXPECT_EQ(r.status().code(), StatusCode::kNoSpace);
  EXPECT_NE(r.status().message().find("memory limit"), std::string::npos);
  EXPECT_TRUE(List(dir.path()).empty());
}

TEST(StagerTest, ReadFailureMidwayLeavesNothingBehind) {
  TempDir dir;
  ResolvedModel m;
  m.uri = "mem://x";
  MemorySource* src = AddShard(m, "mem://s", {{"a", "U8", {50000}, 50000}, {"b", "U8", {50000}, 50000}});
  src->fail_on_read = src->reads + 6;  // after the fingerprint reads, during the copy
  StageOptions o;
  o.chunk_bytes = 8192;
  o.threads = 2;
  Result<StagedModel> r = StageModel(Env::Default(), dir.path(), "m", m, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_TRUE(List(dir.path()).empty());
}

class FailingRenameEnv : public PosixEnv {
 public:
  Status WriteFileAtomic(const std::string& path, std::string_view contents) override {
    if (path.ends_with(".manifest.json")) return Status::IOError("injected: cannot publish");
    return PosixEnv::WriteFileAtomic(path, contents);
  }
};

TEST(StagerTest, FailedPublishRemovesTheRegion) {
  TempDir dir;
  ResolvedModel m = TwoShards();
  FailingRenameEnv env;
  Result<StagedModel> r = StageModel(&env, dir.path(), "m", m, StageOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "injected: cannot publish");
  EXPECT_TRUE(List(dir.path()).empty());
}

TEST(StagerTest, RestagingReplacesTheRegionWhileOldMappingsStayValid) {
  TempDir dir;
  ResolvedModel m1;
  m1.uri = "mem://v1";
  AddShard(m1, "mem://s2", {{"w", "U8", {4096}, 4096}});
  ASSERT_TRUE(StageModel(Env::Default(), dir.path(), "m", m1, StageOptions{}).ok());
  const Manifest first = *ParseManifest(testing::ReadFile(dir.Join("m.manifest.json")));
  UniqueFd fd(::open(dir.Join(first.region_file).c_str(), O_RDONLY));
  ASSERT_TRUE(fd.valid());
  Mapping old(::mmap(nullptr, first.region_bytes, PROT_READ, MAP_SHARED, fd.get(), 0), first.region_bytes);

  ResolvedModel m2;
  m2.uri = "mem://v2";
  AddShard(m2, "mem://s2", {{"other", "U8", {10}, 10}});
  ASSERT_TRUE(StageModel(Env::Default(), dir.path(), "m", m2, StageOptions{}).ok());
  const Manifest second = *ParseManifest(testing::ReadFile(dir.Join("m.manifest.json")));
  EXPECT_NE(second.generation, first.generation);
  EXPECT_EQ(second.tensors[0].name, "other");
  EXPECT_EQ(List(dir.path()), (std::vector<std::string>{second.region_file, "m.manifest.json"}));
  // The consumer that mapped generation 1 still reads it.
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(old.data()), 4096), testing::TensorBytes("w", 4096));
}

TEST(StagerTest, EmptyModelAndCancellation) {
  TempDir dir;
  ResolvedModel empty;
  empty.uri = "mem://e";
  auto src = std::make_unique<MemorySource>("mem://e", testing::RawSafetensors("{}"));
  empty.headers.push_back(*ReadHeader(*src));
  empty.shards.push_back(std::move(src));
  Result<StagedModel> r = StageModel(Env::Default(), dir.path(), "e", empty, StageOptions{});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->manifest.region_bytes, 0u);
  EXPECT_TRUE(r->manifest.tensors.empty());

  ResolvedModel m = TwoShards();
  std::atomic<bool> cancel{true};
  r = StageModel(Env::Default(), dir.path(), "m", m, StageOptions{}, nullptr, &cancel);
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(List(dir.path()).size(), 2u);  // only e's files
}

TEST(StagerTest, CudaRegistrationWithoutCudaIsAClearError) {
  TempDir dir;
  ResolvedModel m = TwoShards();
  StageOptions o;
  o.cuda_register = true;
  Result<StagedModel> r = StageModel(Env::Default(), dir.path(), "m", m, o);
#ifdef LOOM_WITH_CUDA
  GTEST_SKIP() << "CUDA build: covered by gpu_check.sh";
#else
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("without CUDA"), std::string::npos);
  EXPECT_TRUE(List(dir.path()).empty());
#endif
}

TEST(StagerTest, StateFiles) {
  TempDir dir;
  ASSERT_TRUE(WriteModelState(Env::Default(), dir.path(), "m", "failed", "/x", Status::NoSpace("full")).ok());
  const std::string s = testing::ReadFile(dir.Join("m.state.json"));
  EXPECT_NE(s.find("\"state\":\"failed\""), std::string::npos);
  EXPECT_NE(s.find("\"exit_code\":4"), std::string::npos);
  EXPECT_NE(s.find("no space: full"), std::string::npos);
}

}  // namespace
}  // namespace loom
