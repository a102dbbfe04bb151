#include "loom/object_store.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "loom/manifest.h"
#include "loom/model_resolver.h"
#include "loom/source_opener.h"
#include "loom/stager.h"
#include "testutil.h"

namespace loom {
namespace {

using testing::MakeSafetensors;
using testing::S3Server;
using testing::TempDir;

// Stages `model` into a fresh directory and checks every tensor's bytes (testutil's pattern).
void ExpectStages(const ResolvedModel& model) {
  TempDir dir;
  Result<StagedModel> staged = StageModel(Env::Default(), dir.path(), "m", model, StageOptions{});
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  Result<Manifest> manifest = ParseManifest(testing::ReadFile(dir.Join(ManifestFileName("m"))));
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  const std::string region = testing::ReadFile(dir.Join(manifest->region_file));
  for (const ManifestTensor& t : manifest->tensors) {
    EXPECT_EQ(region.substr(t.offset, t.nbytes), testing::TensorBytes(t.name, t.nbytes)) << t.name;
  }
}

TEST(ObjectStoreTest, BucketUris) {
  Result<BucketUri> u = ParseBucketUri("s3://models/ranker/v1/model.safetensors");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->scheme, "s3");
  EXPECT_EQ(u->bucket, "models");
  EXPECT_EQ(u->key, "ranker/v1/model.safetensors");
  EXPECT_EQ(ParseBucketUri("gs://b-1.x/").value().key, "");
  EXPECT_FALSE(ParseBucketUri("s3://UPPER/x").ok());
  EXPECT_FALSE(ParseBucketUri("s3://ab/x").ok());
  EXPECT_FALSE(ParseBucketUri("s3://models//x").ok());
  EXPECT_FALSE(ParseBucketUri("az://c/x").ok());
}

TEST(ObjectStoreTest, HfUris) {
  Result<HfUri> u = ParseHfUri("hf://meta-llama/Llama-3.2-1B@v1.0/sub/model.safetensors");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->repo, "meta-llama/Llama-3.2-1B");
  EXPECT_EQ(u->revision, "v1.0");
  EXPECT_EQ(u->path, "sub/model.safetensors");
  EXPECT_EQ(ParseHfUri("hf://org/repo").value().revision, "main");
  EXPECT_EQ(FormatHfUri(ParseHfUri("hf://org/repo/x").value()), "hf://org/repo@main/x");
  EXPECT_FALSE(ParseHfUri("hf://org").ok());
  EXPECT_FALSE(ParseHfUri("hf://org/re po").ok());
  EXPECT_FALSE(ParseHfUri("hf://org/repo@").ok());
  EXPECT_FALSE(ParseHfUri("hf://org/repo/../x").ok());
}

TEST(ObjectStoreTest, SiblingsAndChildren) {
  EXPECT_EQ(SiblingUri("s3://b/p/model.safetensors.index.json", "a.safetensors"), "s3://b/p/a.safetensors");
  EXPECT_EQ(SiblingUri("s3://b/index.json", "a"), "s3://b/a");
  EXPECT_EQ(SiblingUri("hf://o/r@abc/index.json", "a"), "hf://o/r@abc/a");
  EXPECT_EQ(ChildUri("s3://b/p/", "a"), "s3://b/p/a");
  EXPECT_EQ(ChildUri("hf://o/r@abc", "a"), "hf://o/r@abc/a");
  EXPECT_TRUE(NamesObject("s3://b/m.safetensors"));
  EXPECT_FALSE(NamesObject("s3://b/ranker"));
  EXPECT_EQ(CheckUriScheme("pvc://claim/x").code(), StatusCode::kInvalidArgument);
  EXPECT_NE(CheckUriScheme("az://x").message().find("s3://, gs:// or hf://"), std::string::npos);
}

EnvLookup Vars(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

class VersityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!s3_.available()) GTEST_SKIP() << "LOOM_VERSITYGW is not set (scripts/test.sh builds and sets it)";
    s3_.MakeBucket("models");
  }
  std::unique_ptr<DefaultSourceOpener> Opener(const std::string& secret = S3Server::kSecret) {
    StoreOptions stores;
    stores.s3_endpoint = s3_.endpoint();
    return std::make_unique<DefaultSourceOpener>(
        Env::Default(), false, Http(), stores,
        Vars({{"AWS_ACCESS_KEY_ID", S3Server::kAccess}, {"AWS_SECRET_ACCESS_KEY", secret}}));
  }
  static HttpOptions Http() {
    HttpOptions http;
    http.retries = 1;
    http.backoff_base_ms = 5;
    return http;
  }
  S3Server s3_;
};

TEST_F(VersityTest, SignedRangeReadsListingAndRefusedCredentials) {
  const std::string a = testing::MakeSafetensors({{"w", "F32", {4, 1000}, 16000}});
  s3_.Put("models", "ranker/model.safetensors", a);
  s3_.Put("models", "ranker/notes.txt", "x");
  s3_.Put("models", "ranker/old/model.safetensors", a);
  auto opener = Opener();
  Result<std::unique_ptr<Source>> s = opener->Open("s3://models/ranker/model.safetensors");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->size(), a.size());
  EXPECT_EQ((*s)->version().rfind("etag:\"", 0), 0u) << (*s)->version();
  std::string buf(100, '\0');
  ASSERT_TRUE((*s)->ReadAt(1000, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()}).ok());
  EXPECT_EQ(buf, a.substr(1000, 100));
  Result<std::vector<std::string>> names = opener->List("s3://models/ranker");
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(*names, (std::vector<std::string>{"model.safetensors", "notes.txt"}));
  Result<ResolvedModel> model = ResolveModel("s3://models/ranker/", *opener, Env::Default());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(model->shards.size(), 1u);

  Result<std::unique_ptr<Source>> missing = opener->Open("s3://models/ranker/nope.safetensors");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(missing.status().message().find("not found"), std::string::npos) << missing.status().message();

  const std::string wrong = "not-the-secret-key-0000000000";
  auto refused = Opener(wrong)->Open("s3://models/ranker/model.safetensors");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied) << refused.status().ToString();
  EXPECT_EQ(refused.status().message().find(wrong), std::string::npos);
  Result<std::vector<std::string>> refused_list = Opener(wrong)->List("s3://models/ranker");
  ASSERT_FALSE(refused_list.ok());
  EXPECT_EQ(refused_list.status().code(), StatusCode::kPermissionDenied) << refused_list.status().ToString();
  EXPECT_NE(refused_list.status().message().find("SignatureDoesNotMatch"), std::string::npos)
      << refused_list.status().message();
}

TEST_F(VersityTest, AnOverwriteFailsTheNextRangeWithSourceChanged) {
  s3_.Put("models", "m.safetensors", std::string(50000, 'a'));
  auto opener = Opener();
  std::unique_ptr<Source> s = std::move(opener->Open("s3://models/m.safetensors")).value();
  s3_.Put("models", "m.safetensors", std::string(50000, 'b'));
  std::string buf(10, '\0');
  Status st = s->ReadAt(0, {reinterpret_cast<uint8_t*>(buf.data()), buf.size()});
  EXPECT_EQ(st.code(), StatusCode::kSourceChanged) << st.ToString();
  EXPECT_NE(st.message().find("s3://models/m.safetensors"), std::string::npos) << st.message();
}

TEST_F(VersityTest, StagesAPrefixOfShardsThroughItsIndex) {
  const std::string s1 = MakeSafetensors({{"emb", "F16", {1000, 8}, 16000}, {"bias", "F32", {3}, 12}});
  const std::string s2 = MakeSafetensors({{"head", "BF16", {77, 100}, 15400}});
  s3_.Put("models", "ranker/v2/model-00001-of-00002.safetensors", s1);
  s3_.Put("models", "ranker/v2/model-00002-of-00002.safetensors", s2);
  s3_.Put("models", "ranker/v2/model.safetensors.index.json",
          R"({"weight_map":{"emb":"model-00001-of-00002.safetensors","bias":"model-00001-of-00002.safetensors",)"
          R"("head":"model-00002-of-00002.safetensors"}})");
  auto opener = Opener();
  Result<ResolvedModel> model = ResolveModel("s3://models/ranker/v2", *opener, Env::Default());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ASSERT_EQ(model->shards.size(), 2u);
  EXPECT_EQ(model->shards[1]->uri(), "s3://models/ranker/v2/model-00002-of-00002.safetensors");
  ExpectStages(*model);
}

TEST_F(VersityTest, StagesAMultipartObjectPinnedToItsEtag) {
  // 5 MiB + a tail: two parts, so the ETag is a multipart one ("...-2") and If-Match carries it.
  const uint64_t n = (5 << 20) / 4 + 1000;
  const std::string bytes = MakeSafetensors({{"w", "F32", {n}, n * 4}});
  const size_t cut = 5 << 20;
  s3_.PutMultipart("models", "big/model.safetensors", {bytes.substr(0, cut), bytes.substr(cut)});
  auto opener = Opener();
  Result<ResolvedModel> model = ResolveModel("s3://models/big/model.safetensors", *opener, Env::Default());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_NE(model->shards[0]->version().find("-2\""), std::string::npos) << model->shards[0]->version();
  ExpectStages(*model);
}

TEST_F(VersityTest, GcsHmacKeysThroughTheXmlApi) {
  S3Server gcs("auto");  // GCS signs HMAC requests in region "auto"
  gcs.MakeBucket("weights");
  const std::string a = MakeSafetensors({{"w", "U8", {64}, 64}});
  gcs.Put("weights", "ranker/model.safetensors", a);
  StoreOptions stores;
  stores.gcs_endpoint = gcs.endpoint();
  DefaultSourceOpener opener(Env::Default(), false, Http(), stores,
                             Vars({{"GCS_ACCESS_KEY_ID", S3Server::kAccess},
                                   {"GCS_SECRET_ACCESS_KEY", S3Server::kSecret},
                                   {"GCE_METADATA_HOST", "127.0.0.1:1"}}));
  Result<ResolvedModel> model = ResolveModel("gs://weights/ranker/", opener, Env::Default());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ExpectStages(*model);
  DefaultSourceOpener wrong(Env::Default(), false, Http(), stores,
                            Vars({{"GCS_ACCESS_KEY_ID", S3Server::kAccess}, {"GCS_SECRET_ACCESS_KEY", "nope-nope"}}));
  EXPECT_EQ(ResolveModel("gs://weights/ranker/", wrong, Env::Default()).status().code(), StatusCode::kPermissionDenied);
}

// A loopback HTTP server (cpp-httplib) for the protocols no real server runs here: GCS's XML API
// with OAuth bearer tokens beside the GCE metadata server, and the Hugging Face hub.
class StandIn {
 public:
  StandIn() = default;
  ~StandIn() {
    server.stop();
    if (thread_.joinable()) thread_.join();
  }
  void Start() {
    port_ = server.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server.listen_after_bind(); });
    for (int i = 0; i < 1000 && !server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string url() const { return "http://" + host(); }
  httplib::Server server;
  std::map<std::string, std::string> objects;  // path -> bytes

  // Serves objects[path] (httplib answers Range and HEAD) with a content ETag.
  void Serve(const std::string& path, httplib::Response& res) const {
    auto it = objects.find(path);
    if (it == objects.end()) {
      res.status = 404;
      return;
    }
    res.set_header("ETag", "\"" + std::to_string(std::hash<std::string>{}(it->second)) + "\"");
    res.set_content(it->second, "application/octet-stream");
  }

 private:
  std::thread thread_;
  int port_ = 0;
};

// A throttling front for versitygw: answers the first `throttle` ranged GETs with S3's 503
// SlowDown and forwards the rest with the sidecar's own Host and signature, so versitygw checks
// the signature the sidecar made. Range is not a signed header: the front fetches the whole object
// and leaves the Range to httplib, as FileServer does.
class ThrottlingProxy {
 public:
  ThrottlingProxy(const S3Server& s3, int n) : throttle(n), upstream_port_(s3.port()) {
    stand_in_.server.Get(".*", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.method == "GET" && req.has_header("Range") && throttle > 0) {
        --throttle;
        ++throttled;
        res.status = 503;
        res.set_content("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                        "application/xml");
        return;
      }
      httplib::Client up("127.0.0.1", upstream_port_);
      httplib::Headers headers;
      for (const auto& [k, v] : req.headers) {
        if (k != "Range" && k != "REMOTE_ADDR" && k != "REMOTE_PORT" && k != "LOCAL_ADDR" && k != "LOCAL_PORT") {
          headers.emplace(k, v);
        }
      }
      httplib::Result r = req.method == "HEAD" ? up.Head(req.target, headers) : up.Get(req.target, headers);
      if (!r) {
        res.status = 502;
        return;
      }
      for (const char* h : {"ETag", "Last-Modified"}) {
        if (r->has_header(h)) res.set_header(h, r->get_header_value(h));
      }
      if (r->status != 200) {
        res.status = r->status;
        res.set_content(r->body, "application/xml");
        return;
      }
      const std::string body =
          req.method == "HEAD" ? std::string(std::stoull(r->get_header_value("Content-Length")), '\0') : r->body;
      res.set_content(body, "application/octet-stream");
    });
    stand_in_.Start();
  }
  std::string endpoint() const { return stand_in_.url(); }
  std::atomic<int> throttle;
  std::atomic<int> throttled{0};

 private:
  int upstream_port_;
  StandIn stand_in_;
};

TEST_F(VersityTest, ThrottlingIsSurvivedAndPastTheBudgetNamed) {
  s3_.Put("models", "t/model.safetensors", MakeSafetensors({{"w", "F32", {4, 1000}, 16000}}));
  ThrottlingProxy proxy(s3_, 3);
  StoreOptions stores;
  stores.s3_endpoint = proxy.endpoint();
  HttpOptions http = Http();
  http.throttle_retries = 4;
  http.backoff_cap_ms = 20;
  auto vars = Vars({{"AWS_ACCESS_KEY_ID", S3Server::kAccess}, {"AWS_SECRET_ACCESS_KEY", S3Server::kSecret}});
  DefaultSourceOpener opener(Env::Default(), false, http, stores, vars);
  Result<ResolvedModel> model = ResolveModel("s3://models/t/model.safetensors", opener, Env::Default());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ExpectStages(*model);
  EXPECT_EQ(proxy.throttled, 3);

  proxy.throttle = 1000;
  Result<ResolvedModel> gave_up = ResolveModel("s3://models/t/model.safetensors", opener, Env::Default());
  ASSERT_FALSE(gave_up.ok());
  EXPECT_EQ(gave_up.status().code(), StatusCode::kThrottled) << gave_up.status().ToString();
  EXPECT_NE(gave_up.status().message().find("SlowDown"), std::string::npos) << gave_up.status().message();
}

TEST(GcsStandInTest, BearerTokensFromTheMetadataServerOrAFile) {
  StandIn gcs;
  std::atomic<int> token_requests{0};
  gcs.objects["/bkt/m/model.safetensors"] = MakeSafetensors({{"w", "U8", {16}, 16}});
  gcs.server.Get("/computeMetadata/v1/instance/service-accounts/default/token",
                 [&](const httplib::Request& req, httplib::Response& res) {
                   ++token_requests;
                   if (req.get_header_value("Metadata-Flavor") != "Google") {
                     res.status = 403;
                     return;
                   }
                   res.set_content(R"({"access_token":"ya29.meta","expires_in":3599,"token_type":"Bearer"})",
                                   "application/json");
                 });
  gcs.server.Get(R"(/bkt/(.*))", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string auth = req.get_header_value("Authorization");
    if (auth != "Bearer ya29.meta" && auth != "Bearer ya29.file") {
      res.status = 401;
      res.set_content("<Error><Code>AuthenticationRequired</Code><Message>no token</Message></Error>", "text/xml");
      return;
    }
    if (req.has_param("list-type")) {
      const std::string prefix = req.get_param_value("prefix");
      std::string xml = "<ListBucketResult><IsTruncated>false</IsTruncated>";
      for (const auto& [path, bytes] : gcs.objects) {
        const std::string key = path.substr(5);
        if (key.starts_with(prefix)) xml += "<Contents><Key>" + key + "</Key><Size>" + std::to_string(bytes.size()) + "</Size></Contents>";
      }
      res.set_content(xml + "</ListBucketResult>", "application/xml");
      return;
    }
    gcs.Serve(req.path, res);
  });
  gcs.Start();
  StoreOptions stores;
  stores.gcs_endpoint = gcs.url();
  DefaultSourceOpener metadata(Env::Default(), false, HttpOptions{}, stores, Vars({{"GCE_METADATA_HOST", gcs.host()}}));
  Result<ResolvedModel> model = ResolveModel("gs://bkt/m", metadata, Env::Default());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ExpectStages(*model);
  EXPECT_EQ(token_requests, 1);  // cached until shortly before it expires

  TempDir dir("/tmp");
  testing::WriteFile(dir.Join("token"), "ya29.file\n");
  DefaultSourceOpener file(Env::Default(), false, HttpOptions{}, stores,
                           Vars({{"CLOUDSDK_AUTH_ACCESS_TOKEN_FILE", dir.Join("token")}, {"GCE_METADATA_HOST", "127.0.0.1:1"}}));
  Result<ResolvedModel> from_file = ResolveModel("gs://bkt/m/model.safetensors", file, Env::Default());
  EXPECT_TRUE(from_file.ok()) << from_file.status().ToString();

  DefaultSourceOpener anonymous(Env::Default(), false, HttpOptions{}, stores, Vars({{"GCE_METADATA_HOST", "127.0.0.1:1"}}));
  Result<ResolvedModel> refused = ResolveModel("gs://bkt/m", anonymous, Env::Default());
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("AuthenticationRequired"), std::string::npos) << refused.status().message();
}

TEST(HfStandInTest, ARevisionIsPinnedToItsCommitForEveryShard) {
  StandIn hub;
  std::string sha = "0123456789abcdef0123456789abcdef01234567";
  hub.objects["/org/ranker/" + sha + "/a.safetensors"] = MakeSafetensors({{"a", "F32", {10}, 40}});
  hub.objects["/org/ranker/" + sha + "/b.safetensors"] = MakeSafetensors({{"b", "F32", {10}, 40}});
  hub.objects["/org/ranker/" + sha + "/model.safetensors.index.json"] =
      R"({"weight_map":{"a":"a.safetensors","b":"b.safetensors"}})";
  std::atomic<int> api_calls{0};
  hub.server.Get(R"(/api/models/org/ranker/revision/([^/]+))", [&](const httplib::Request& req, httplib::Response& res) {
    ++api_calls;
    if (req.get_header_value("Authorization") != "Bearer hf_secret") {
      res.status = 401;
      return;
    }
    if (req.matches[1] != "main" && req.matches[1] != sha) {
      res.status = 404;
      return;
    }
    nlohmann::json j = {{"id", "org/ranker"}, {"sha", sha}, {"siblings", nlohmann::json::array()}};
    for (const char* f : {"a.safetensors", "b.safetensors", "model.safetensors.index.json", "README.md"}) {
      j["siblings"].push_back({{"rfilename", f}});
    }
    res.set_content(j.dump(), "application/json");
  });
  // The hub answers resolve URLs with a redirect to its CDN.
  hub.server.Get(R"(/org/ranker/resolve/([0-9a-f]+)/(.+))", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") != "Bearer hf_secret") {
      res.status = 401;
      return;
    }
    res.set_redirect("/cdn/org/ranker/" + std::string(req.matches[1]) + "/" + std::string(req.matches[2]), 302);
  });
  hub.server.Get(R"(/cdn/(.+))", [&](const httplib::Request& req, httplib::Response& res) {
    hub.Serve(req.path.substr(4), res);
  });
  hub.Start();
  StoreOptions stores;
  stores.hf_endpoint = hub.url();
  DefaultSourceOpener opener(Env::Default(), false, HttpOptions{}, stores, Vars({{"HF_TOKEN", "hf_secret"}}));
  Result<ResolvedModel> model = ResolveModel("hf://org/ranker", opener, Env::Default());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ASSERT_EQ(model->shards.size(), 2u);
  EXPECT_EQ(model->shards[0]->uri(), "hf://org/ranker@" + sha + "/a.safetensors");
  EXPECT_EQ(model->shards[0]->version().rfind("hf-commit:" + sha, 0), 0u) << model->shards[0]->version();
  ExpectStages(*model);

  DefaultSourceOpener anonymous(Env::Default(), false, HttpOptions{}, stores, Vars({}));
  Result<ResolvedModel> refused = ResolveModel("hf://org/ranker@main", anonymous, Env::Default());
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied) << refused.status().ToString();
  EXPECT_EQ(ResolveModel("hf://org/ranker@v9", opener, Env::Default()).status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace loom
