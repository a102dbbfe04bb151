#include "loom/env.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>

#include "testutil.h"

namespace loom {
namespace {

using testing::TempDir;

TEST(EnvTest, CreateRegionMapsAPreallocatedSharedFile) {
  TempDir dir;
  Env* env = Env::Default();
  Result<std::unique_ptr<WritableRegion>> r = env->CreateRegion(dir.Join("r"), 3 * 4096, {true, false});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::memcpy((*r)->data() + 4096, "hello", 5);
  struct stat st;
  ASSERT_EQ(::stat(dir.Join("r").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 3 * 4096);
  EXPECT_GE(st.st_blocks * 512, 3 * 4096);  // fallocate'd, not sparse
  EXPECT_TRUE((*r)->Sync().ok());
  r->reset();
  EXPECT_EQ(testing::ReadFile(dir.Join("r")).substr(4096, 5), "hello");
  // O_EXCL: never reuse a name.
  EXPECT_FALSE(env->CreateRegion(dir.Join("r"), 4096, {}).ok());
  // Zero bytes: no mapping.
  Result<std::unique_ptr<WritableRegion>> empty = env->CreateRegion(dir.Join("e"), 0, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ((*empty)->data(), nullptr);
}

TEST(EnvTest, WriteFileAtomicReplacesWholeFiles) {
  TempDir dir;
  Env* env = Env::Default();
  ASSERT_TRUE(env->WriteFileAtomic(dir.Join("m.json"), "one").ok());
  ASSERT_TRUE(env->WriteFileAtomic(dir.Join("m.json"), "two").ok());
  EXPECT_EQ(testing::ReadFile(dir.Join("m.json")), "two");
  EXPECT_EQ(*env->ListDir(dir.path()), std::vector<std::string>{"m.json"});  // no temporaries left
  EXPECT_EQ(env->WriteFileAtomic(dir.Join("no/such/dir/x"), "x").code(), StatusCode::kUnavailable);
}

TEST(EnvTest, FilesystemFacts) {
  Env* env = Env::Default();
  EXPECT_TRUE(env->IsMemoryBacked("/dev/shm"));
  TempDir disk("/var/tmp");
  EXPECT_FALSE(env->IsMemoryBacked(disk.path()));
  Result<uint64_t> free_bytes = env->FreeBytes("/dev/shm");
  ASSERT_TRUE(free_bytes.ok());
  EXPECT_GT(*free_bytes, 0u);
  EXPECT_FALSE(env->FreeBytes("/no/such/dir").ok());
  EXPECT_TRUE(env->Stat("/dev/shm")->is_dir);
  EXPECT_EQ(DirName("/a/b/c"), "/a/b");
  EXPECT_EQ(DirName("c"), ".");
  EXPECT_EQ(JoinPath("/a/", "b"), "/a/b");
}

TEST(EnvTest, ReadFileEnforcesTheLimit) {
  TempDir dir;
  testing::WriteFile(dir.Join("f"), std::string(100, 'x'));
  EXPECT_EQ(Env::Default()->ReadFile(dir.Join("f"), 100)->size(), 100u);
  EXPECT_EQ(Env::Default()->ReadFile(dir.Join("f"), 99).status().code(), StatusCode::kInvalidModel);
}

}  // namespace
}  // namespace loom
