#include "loom/http_source.h"

#include <gtest/gtest.h>

#include <thread>

#include "testutil.h"

namespace loom {
namespace {

using testing::FileServer;

HttpOptions Fast() {
  HttpOptions o;
  o.connect_timeout_s = 2;
  o.read_timeout_s = 5;
  o.retries = 3;
  return o;
}

std::string Read(const Source& s, uint64_t off, std::vector<size_t> sizes) {
  std::vector<std::string> bufs;
  for (size_t n : sizes) bufs.emplace_back(n, '\0');
  std::vector<std::span<uint8_t>> pieces;
  for (auto& b : bufs) pieces.emplace_back(reinterpret_cast<uint8_t*>(b.data()), b.size());
  Status st = s.ReadV(off, pieces);
  EXPECT_TRUE(st.ok()) << st.ToString();
  std::string out;
  for (auto& b : bufs) out += b;
  return out;
}

TEST(HttpSourceTest, ReadsRangesIntoScatteredPieces) {
  FileServer server;
  const std::string data = testing::TensorBytes("x", 300000);
  server.Put("m.safetensors", data);
  Result<std::unique_ptr<Source>> s = OpenHttpSource(server.Url("m.safetensors"), Fast());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->size(), data.size());
  EXPECT_EQ((*s)->version().rfind("etag:\"", 0), 0u);
  const int before = server.ranged_gets;
  EXPECT_EQ(Read(**s, 12345, {1, 100, 0, 70000}), data.substr(12345, 70101));
  EXPECT_EQ(Read(**s, data.size() - 10, {10}), data.substr(data.size() - 10));
  EXPECT_EQ(server.ranged_gets - before, 2);  // one Range request per ReadV
}

TEST(HttpSourceTest, ParallelReadsFromManyThreads) {
  FileServer server;
  const std::string data = testing::TensorBytes("y", 1 << 20);
  server.Put("f", data);
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("f"), Fast())).value();
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        const uint64_t off = static_cast<uint64_t>(t * 8 + i) * 16384;
        std::string buf(16384, '\0');
        if (!s->ReadAt(off, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()}).ok() ||
            buf != data.substr(off, 16384)) {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad, 0);
}

TEST(HttpSourceTest, RetriesTransientFailures) {
  FileServer server;
  server.Put("f", "hello world");
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("f"), Fast())).value();
  server.fail_next_gets = 2;
  EXPECT_EQ(Read(*s, 6, {5}), "world");
  server.fail_status = 500;  // 503 is throttling, on its own budget (curl_http_test)
  server.fail_next_gets = 10;
  HttpOptions no_retry = Fast();
  no_retry.retries = 1;
  std::unique_ptr<Source> s2 = std::move(OpenHttpSource(server.Url("f"), no_retry)).value();
  std::string buf(5, '\0');
  Status st = s2->ReadAt(0, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()});
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("HTTP 500"), std::string::npos) << st.message();
}

TEST(HttpSourceTest, FallsBackToARangeProbeWhenHeadIsRefused) {
  FileServer server;
  server.refuse_head = true;
  server.Put("f", "0123456789");
  Result<std::unique_ptr<Source>> s = OpenHttpSource(server.Url("f"), Fast());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->size(), 10u);
  EXPECT_EQ(Read(**s, 3, {4}), "3456");
}

TEST(HttpSourceTest, MissingObjectsAndDeadServersAreUnavailable) {
  FileServer server;
  Result<std::unique_ptr<Source>> missing = OpenHttpSource(server.Url("nope"), Fast());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(missing.status().message().find("HTTP 404"), std::string::npos);
  EXPECT_EQ(server.heads, 1);  // the HEAD's 404 is final: not retried, no GET
  EXPECT_EQ(server.gets, 0);

  int dead_port;
  {
    FileServer gone;
    dead_port = gone.port();
  }
  HttpOptions o = Fast();
  o.retries = 0;
  Result<std::unique_ptr<Source>> dead =
      OpenHttpSource("http://127.0.0.1:" + std::to_string(dead_port) + "/files/x", o);
  ASSERT_FALSE(dead.ok());
  EXPECT_EQ(dead.status().code(), StatusCode::kUnavailable);
}

Status ReadStatus(const Source& s, uint64_t off, size_t n) {
  std::string buf(n, '\0');
  return s.ReadAt(off, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()});
}

TEST(HttpSourceTest, RangeReadsArePinnedToTheVersionFirstSeen) {
  FileServer server;
  server.Put("m", std::string(100000, 'a'));
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("m"), Fast())).value();
  EXPECT_EQ(Read(*s, 10, {5}), "aaaaa");
  EXPECT_EQ(server.if_match_gets, 1);  // If-Match: the ETag of the HEAD
  server.Put("m", std::string(100000, 'b'));  // overwritten while it stages
  const int gets = server.gets;
  Status st = ReadStatus(*s, 20, 5);
  EXPECT_EQ(st.code(), StatusCode::kSourceChanged) << st.ToString();
  EXPECT_NE(st.message().find(server.Url("m")), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("HTTP 412"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("changed while it was being read"), std::string::npos) << st.message();
  EXPECT_EQ(server.gets - gets, 1);  // not retried: it will not match again
  EXPECT_EQ(ExitCodeFor(st), 8);
}

TEST(HttpSourceTest, AChangedETagFailsWhereTheServerIgnoresIfMatch) {
  FileServer server;
  server.ignore_if_match = true;
  server.Put("m", std::string(1000, 'a'));
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("m"), Fast())).value();
  server.Put("m", std::string(1000, 'b'));
  Status st = ReadStatus(*s, 0, 10);
  EXPECT_EQ(st.code(), StatusCode::kSourceChanged) << st.ToString();
  EXPECT_NE(st.message().find(server.ETagOf(std::string(1000, 'a'))), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(server.ETagOf(std::string(1000, 'b'))), std::string::npos) << st.message();
}

TEST(HttpSourceTest, WeakETagsAreComparedNotSentAsIfMatch) {
  FileServer server;
  server.weak_etag = true;
  server.Put("m", std::string(1000, 'a'));
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("m"), Fast())).value();
  EXPECT_EQ(Read(*s, 0, {3}), "aaa");
  EXPECT_EQ(server.if_match_gets, 0);  // a weak tag never matches If-Match
  server.Put("m", std::string(1000, 'b'));
  EXPECT_EQ(ReadStatus(*s, 0, 3).code(), StatusCode::kSourceChanged);
}

TEST(HttpSourceTest, UrlParsing) {
  Result<ParsedUrl> u = ParseUrl("https://bucket.s3.amazonaws.com:8443/a/b.safetensors?X-Sig=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host_port, "https://bucket.s3.amazonaws.com:8443");
  EXPECT_EQ(u->path, "/a/b.safetensors?X-Sig=1");
  EXPECT_EQ(ParseUrl("http://h")->path, "/");
  EXPECT_EQ(*SiblingUrl("http://h/m/model.safetensors.index.json?sig=1", "m-1.safetensors"),
            "http://h/m/m-1.safetensors");
  EXPECT_FALSE(ParseUrl("ftp://h/x").ok());
  EXPECT_FALSE(ParseUrl("http:///x").ok());
  EXPECT_FALSE(ParseUrl("http://user:pw@h/x").ok());
  EXPECT_TRUE(IsHttpUrl("https://x"));
  EXPECT_FALSE(IsHttpUrl("/local/path"));
}

}  // namespace
}  // namespace loom
