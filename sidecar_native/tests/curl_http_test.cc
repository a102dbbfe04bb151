#include "loom/curl_http.h"

#include <gtest/gtest.h>

#include "loom/http_source.h"
#include "testutil.h"

namespace loom {
namespace {

using testing::FileServer;

HttpOptions Quick() {
  HttpOptions o;
  o.connect_timeout_s = 2;
  o.read_timeout_s = 5;
  o.retries = 2;
  o.throttle_retries = 4;
  o.backoff_base_ms = 5;
  o.backoff_cap_ms = 50;
  return o;
}

TEST(CurlHttpTest, BackoffIsFullJitterBoundedAndHonoursRetryAfter) {
  HttpOptions o;
  o.backoff_base_ms = 100;
  o.backoff_cap_ms = 20000;
  EXPECT_EQ(BackoffMs(o, 1, false, "", 0.5), 100);
  EXPECT_EQ(BackoffMs(o, 3, false, "", 0.5), 400);
  EXPECT_EQ(BackoffMs(o, 30, false, "", 0.5), 20000);  // capped
  EXPECT_EQ(BackoffMs(o, 3, true, "", 0.0), 0);        // full jitter: uniform in [0, bound]
  EXPECT_EQ(BackoffMs(o, 3, true, "", 0.999), 400);
  EXPECT_EQ(BackoffMs(o, 3, true, "", 0.5), 200);
  EXPECT_EQ(BackoffMs(o, 1, true, "2", 0.1), 2000);    // Retry-After: 2 s
  EXPECT_EQ(BackoffMs(o, 1, true, "999999", 0.1), 20000);
  EXPECT_EQ(BackoffMs(o, 1, true, "Wed, 21 Oct 2015", 0.0), 0);  // HTTP dates: ignored
}

TEST(CurlHttpTest, ThrottlingIsRetriedWithJitterThenSucceeds) {
  FileServer server;
  server.Put("f", "hello world");
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("f"), Quick())).value();
  server.fail_status = 429;
  server.fail_next_gets = 3;  // within throttle_retries = 4
  std::string buf(5, '\0');
  Status st = s->ReadAt(6, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()});
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(buf, "world");
  server.fail_status = 503;
  server.fail_next_gets = 4;
  st = s->ReadAt(0, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()});
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(buf, "hello");
}

TEST(CurlHttpTest, ThrottlingPastTheBudgetIsAThrottledStatus) {
  FileServer server;
  server.Put("f", "hello world");
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("f"), Quick())).value();
  server.fail_status = 503;
  server.fail_next_gets = 100;
  const int before = server.gets;
  std::string buf(5, '\0');
  Status st = s->ReadAt(0, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()});
  EXPECT_EQ(st.code(), StatusCode::kThrottled) << st.ToString();
  EXPECT_EQ(ExitCodeFor(st), 10);
  EXPECT_EQ(server.gets - before, 5);  // the first try + throttle_retries
  EXPECT_NE(st.message().find("kept throttling"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("5 attempts"), std::string::npos) << st.message();
}

TEST(CurlHttpTest, ForbiddenAndNotFoundAreNamed) {
  FileServer server;
  server.Put("f", "x");
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("f"), Quick())).value();
  server.fail_status = 403;
  server.fail_next_gets = 1;
  std::string buf(1, '\0');
  Status st = s->ReadAt(0, {reinterpret_cast<uint8_t*>(buf.data()), 1});
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << st.ToString();
  EXPECT_EQ(ExitCodeFor(st), 9);
  EXPECT_NE(st.ToString().find("forbidden: "), std::string::npos);
  Result<std::unique_ptr<Source>> missing = OpenHttpSource(server.Url("nope"), Quick());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("not found (HTTP 404)"), std::string::npos) << missing.status().message();
}

TEST(CurlHttpTest, ConcurrentRequestsReuseConnections) {
  FileServer server;
  server.Put("f", std::string(1 << 16, 'z'));
  auto client = std::make_shared<const HttpClient>(Quick());
  std::unique_ptr<Source> s = std::move(OpenHttpSource(server.Url("f"), client)).value();
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        std::string buf(1000, '\0');
        if (!s->ReadAt(static_cast<uint64_t>(i) * 1000, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()}).ok() ||
            buf != std::string(1000, 'z')) {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(client->requests(), 41u);  // one HEAD + 40 ranges
}

TEST(CurlHttpTest, UriEncodeIsSigV4Canonical) {
  EXPECT_EQ(UriEncode("a b/c~d_e.f-g+h=&%", false), "a%20b%2Fc~d_e.f-g%2Bh%3D%26%25");
  EXPECT_EQ(UriEncode("dir/file name.safetensors", true), "dir/file%20name.safetensors");
  EXPECT_EQ(UriEncode("\xc3\xa9", true), "%C3%A9");
}

}  // namespace
}  // namespace loom
