#include "loom/local_source.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "testutil.h"

namespace loom {
namespace {

using testing::TempDir;

std::string Pattern(size_t n) { return testing::TensorBytes("pattern", n); }

// Reads [offset, offset+sum(sizes)) scattered into pieces of the given sizes.
std::string Scatter(const Source& s, uint64_t offset, const std::vector<size_t>& sizes) {
  std::vector<std::string> bufs;
  for (size_t n : sizes) bufs.emplace_back(n, '\0');
  std::vector<std::span<uint8_t>> pieces;
  for (auto& b : bufs) pieces.emplace_back(reinterpret_cast<uint8_t*>(b.data()), b.size());
  Status st = s.ReadV(offset, pieces);
  EXPECT_TRUE(st.ok()) << st.ToString();
  std::string out;
  for (auto& b : bufs) out += b;
  return out;
}

TEST(LocalSourceTest, ReadsScatteredRanges) {
  TempDir dir;
  const std::string data = Pattern(100000);
  testing::WriteFile(dir.Join("f"), data);
  Result<std::unique_ptr<Source>> s = OpenLocalFile(dir.Join("f"), false);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->size(), data.size());
  EXPECT_EQ(Scatter(**s, 7, {1, 0, 999, 5000}), data.substr(7, 6000));
  std::vector<size_t> many(2000, 3);  // more pieces than IOV_MAX
  EXPECT_EQ(Scatter(**s, 11, many), data.substr(11, 6000));
  struct stat st;
  ASSERT_EQ(::stat(dir.Join("f").c_str(), &st), 0);
  EXPECT_EQ((*s)->version(), "mtime_ns:" + std::to_string(int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec));
}

TEST(LocalSourceTest, ConcurrentReadsAreIndependent) {
  TempDir dir;
  const std::string data = Pattern(1 << 20);
  testing::WriteFile(dir.Join("f"), data);
  std::unique_ptr<Source> s = std::move(OpenLocalFile(dir.Join("f"), false)).value();
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const uint64_t off = (t * 7919 + i * 104729) % (data.size() - 4096);
        std::string buf(4096, '\0');
        if (!s->ReadAt(off, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()}).ok() ||
            buf != data.substr(off, 4096)) {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad, 0);
}

TEST(LocalSourceTest, DirectIoReadsUnalignedRangesThroughTheBounceBuffer) {
  TempDir dir("/var/tmp");  // a disk filesystem: tmpfs has no O_DIRECT
  const std::string data = Pattern((9 << 20) + 1234);  // more than one 8 MiB bounce block
  testing::WriteFile(dir.Join("f"), data);
  Result<std::unique_ptr<Source>> s = OpenLocalFile(dir.Join("f"), true);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(Scatter(**s, 3, {10, 4093, 1}), data.substr(3, 4104));
  EXPECT_EQ(Scatter(**s, 4095, {(9 << 20) - 7000, 5}), data.substr(4095, (9 << 20) - 6995));
  EXPECT_EQ(Scatter(**s, data.size() - 17, {17}), data.substr(data.size() - 17));  // up to EOF
}

TEST(LocalSourceTest, DirectIoOnTmpfsWorksOrIsAClearError) {
  // tmpfs accepts O_DIRECT since Linux 6.6; older kernels refuse it at open.
  TempDir dir("/dev/shm");
  testing::WriteFile(dir.Join("f"), Pattern(10000));
  Result<std::unique_ptr<Source>> s = OpenLocalFile(dir.Join("f"), true);
  if (s.ok()) {
    EXPECT_EQ(Scatter(**s, 5, {3, 9000}), Pattern(10000).substr(5, 9003));
  } else {
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("does not support O_DIRECT"), std::string::npos);
  }
}

TEST(LocalSourceTest, MissingFileDirectoryAndShrinkingFile) {
  TempDir dir;
  Result<std::unique_ptr<Source>> missing = OpenLocalFile(dir.Join("nope"), false);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
  Result<std::unique_ptr<Source>> d = OpenLocalFile(dir.path(), false);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidModel);

  testing::WriteFile(dir.Join("f"), Pattern(10000));
  std::unique_ptr<Source> s = std::move(OpenLocalFile(dir.Join("f"), false)).value();
  ASSERT_EQ(::truncate(dir.Join("f").c_str(), 100), 0);
  std::string buf(1000, '\0');
  Status st = s->ReadAt(5000, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()});
  EXPECT_EQ(st.code(), StatusCode::kIOError);
  EXPECT_NE(st.message().find("unexpected end of file"), std::string::npos);
}

}  // namespace
}  // namespace loom
