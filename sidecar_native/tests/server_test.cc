#include "loom/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "testutil.h"

namespace loom {
namespace {

using json = nlohmann::json;
using testing::TempDir;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteFile(src_.Join("a.safetensors"), testing::MakeSafetensors({{"w", "F32", {4, 4}, 64}}));
    testing::WriteFile(src_.Join("bad.safetensors"), testing::RawSafetensors("{}", "junk"));
    public_ = *http_.Listen("127.0.0.1:0", false);
    control_ = *http_.Listen("127.0.0.1:0", true);
  }
  httplib::Client Client(const std::string& hostport) { return httplib::Client("http://" + hostport); }
  json Body(const httplib::Result& r) { return json::parse(r->body); }

  TempDir src_{"/tmp"};
  TempDir shm_;
  Metrics metrics_;
  DefaultSourceOpener opener_{Env::Default(), false, HttpOptions{}};
  ModelRegistry registry_{Env::Default(), &opener_, &metrics_, shm_.path(), StageOptions{}};
  HttpService http_{&registry_, &metrics_, {"a"}};
  std::string public_, control_;
};

TEST_F(ServerTest, ProbesFollowTheConfiguredModels) {
  auto pub = Client(public_);
  auto health = pub.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = pub.Get("/readyz");
  EXPECT_EQ(ready->status, 503);
  EXPECT_EQ(Body(ready)["waiting"], json::array({"a"}));

  auto ctl = Client(control_);
  auto load = ctl.Post("/v1/models/a/load", json{{"uri", src_.Join("a.safetensors")}, {"wait", true}}.dump(),
                       "application/json");
  ASSERT_TRUE(load);
  EXPECT_EQ(load->status, 200) << load->body;
  EXPECT_EQ(Body(load)["state"], "Loaded");
  EXPECT_EQ(pub.Get("/readyz")->status, 200);
}

TEST_F(ServerTest, ModelStatusLooksLikeTritonSharedMemoryStatus) {
  ASSERT_TRUE(registry_.Load("a", src_.Join("a.safetensors")).ok());
  auto pub = Client(public_);
  json list = Body(pub.Get("/v1/models"));
  ASSERT_EQ(list["models"].size(), 1u);
  json a = list["models"][0];
  EXPECT_EQ(a["name"], "a");
  EXPECT_EQ(a["state"], "Loaded");
  EXPECT_EQ(a["offset"], 0);
  EXPECT_EQ(a["byte_size"], 4096);
  EXPECT_EQ(a["key"].get<std::string>().rfind(shm_.path() + "/a.", 0), 0u);
  EXPECT_EQ(a["tensors"], 1);
  EXPECT_EQ(pub.Get("/v1/models/a")->status, 200);
  auto missing = pub.Get("/v1/models/zzz");
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(Body(missing)["code"], "not_found");
}

TEST_F(ServerTest, ControlRoutesOnlyOnTheControlListener) {
  auto pub = Client(public_);
  auto r = pub.Post("/v1/models/a/load", json{{"uri", src_.Join("a.safetensors")}}.dump(), "application/json");
  EXPECT_EQ(r->status, 404);
  EXPECT_FALSE(registry_.Get("a").has_value());
  EXPECT_EQ(pub.Post("/v1/models/a/unload", "", "application/json")->status, 404);
}

TEST_F(ServerTest, LoadErrorsMapToHttpStatusesWithExitCodes) {
  auto ctl = Client(control_);
  EXPECT_EQ(ctl.Post("/v1/models/a/load", "not json", "application/json")->status, 400);
  EXPECT_EQ(ctl.Post("/v1/models/a/load", R"({"uri":"/x","wait":"yes"})", "application/json")->status, 400);
  EXPECT_EQ(ctl.Post("/v1/models/..x/load", R"({"uri":"/x"})", "application/json")->status, 400);
  auto bad = ctl.Post("/v1/models/bad/load", json{{"uri", src_.Join("bad.safetensors")}, {"wait", true}}.dump(),
                      "application/json");
  EXPECT_EQ(bad->status, 422);
  EXPECT_EQ(Body(bad)["exit_code"], 2);
  auto missing = ctl.Post("/v1/models/m/load", json{{"uri", src_.Join("nope")}, {"wait", true}}.dump(),
                          "application/json");
  EXPECT_EQ(missing->status, 502);
  EXPECT_EQ(Body(missing)["exit_code"], 3);
  EXPECT_EQ(Body(Client(public_).Get("/v1/models/bad"))["state"], "FailedToLoad");
}

TEST_F(ServerTest, AsyncLoadThenUnload) {
  auto ctl = Client(control_);
  auto r = ctl.Post("/v1/models/a/load", json{{"uri", src_.Join("a.safetensors")}}.dump(), "application/json");
  EXPECT_EQ(r->status, 202);
  std::string state;
  for (int i = 0; i < 500; ++i) {
    state = Body(ctl.Get("/v1/models/a"))["state"];
    if (state != "Loading") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(state, "Loaded");
  EXPECT_EQ(ctl.Post("/v1/models/a/unload", "", "application/json")->status, 200);
  EXPECT_EQ(ctl.Post("/v1/models/a/unload", "", "application/json")->status, 404);
  EXPECT_EQ(ctl.Get("/readyz")->status, 503);
}

TEST_F(ServerTest, MetricsEndpoint) {
  ASSERT_TRUE(registry_.Load("a", src_.Join("a.safetensors")).ok());
  auto m = Client(public_).Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  EXPECT_NE(m->body.find("loom_sidecar_bytes_staged_total 64\n"), std::string::npos);
  EXPECT_NE(m->body.find("loom_sidecar_resident_models 1\n"), std::string::npos);
}

TEST(ServerShutdownTest, CancellingFirstEndsAWaitingLoadAtOnce) {
  // SIGTERM during POST load {"wait": true}: the sidecar cancels, then stops the HTTP server,
  // whose Stop() waits for the handler that waits for the staging.
  testing::FileServer files;
  files.delay_ms = 100;  // each range read: 64 KiB in 0.1 s, so staging 4 MiB takes 6 s or more
  files.Put("slow.safetensors", testing::MakeSafetensors({{"w", "U8", {4 << 20}, 4 << 20}}));
  TempDir shm;
  Metrics metrics;
  DefaultSourceOpener opener{Env::Default(), false, HttpOptions{}};
  StageOptions options;
  options.threads = 1;
  options.chunk_bytes = 64 << 10;
  ModelRegistry registry{Env::Default(), &opener, &metrics, shm.path(), options};
  HttpService http{&registry, &metrics, {}};
  const std::string control = *http.Listen("127.0.0.1:0", true);
  int status = 0;
  std::string body;
  std::thread client([&] {
    httplib::Client c("http://" + control);
    c.set_read_timeout(60, 0);
    httplib::Result r = c.Post("/v1/models/slow/load",
                               json{{"uri", files.Url("slow.safetensors")}, {"wait", true}}.dump(), "application/json");
    if (r) status = r->status, body = r->body;
  });
  for (int i = 0; i < 500 && files.ranged_gets < 4; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_GE(files.ranged_gets, 4) << "staging never started";
  const auto start = std::chrono::steady_clock::now();
  registry.Cancel();
  http.Stop();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  client.join();
  EXPECT_LT(seconds, 2.0) << "Stop() waited for the staging";
  EXPECT_EQ(status, 409) << body;
  EXPECT_NE(body.find("cancelled"), std::string::npos) << body;
  registry.Shutdown();
}

TEST(ListenAddressTest, Parsing) {
  EXPECT_EQ(ParseListenAddress("0.0.0.0:8088")->port, 8088);
  EXPECT_EQ(ParseListenAddress(":9")->host, "0.0.0.0");
  EXPECT_EQ(ParseListenAddress("[::1]:80")->host, "::1");
  for (const char* bad : {"8088", "h:", "h:x", "h:70000", "h:123456"}) EXPECT_FALSE(ParseListenAddress(bad).ok()) << bad;
  EXPECT_EQ(HttpStatusFor(Status::NoSpace("x")), 507);
}

}  // namespace
}  // namespace loom
