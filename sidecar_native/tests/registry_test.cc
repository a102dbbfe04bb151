#include "loom/registry.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <thread>

#include "testutil.h"

namespace loom {
namespace {

using testing::MakeSafetensors;
using testing::TempDir;

// Opens real files, but every ReadV waits until the gate opens (to observe "Loading").
class GatedOpener : public SourceOpener {
 public:
  class Gated : public Source {
   public:
    Gated(std::unique_ptr<Source> inner, GatedOpener* gate) : inner_(std::move(inner)), gate_(gate) {}
    const std::string& uri() const override { return inner_->uri(); }
    uint64_t size() const override { return inner_->size(); }
    std::string version() const override { return inner_->version(); }
    Status ReadV(uint64_t off, std::span<const std::span<uint8_t>> p) const override {
      std::unique_lock<std::mutex> lock(gate_->mu_);
      gate_->cv_.wait(lock, [&] { return gate_->open_; });
      return inner_->ReadV(off, p);
    }

   private:
    std::unique_ptr<Source> inner_;
    GatedOpener* gate_;
  };
  Result<std::unique_ptr<Source>> Open(const std::string& uri) override {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Source> s, Env::Default()->OpenFile(uri, false));
    return std::unique_ptr<Source>(new Gated(std::move(s), this));
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

class RegistryTest : public ::testing::Test {
 protected:
  std::unique_ptr<ModelRegistry> NewRegistry(SourceOpener* opener = nullptr) {
    return std::make_unique<ModelRegistry>(Env::Default(), opener ? opener : &opener_, &metrics_, shm_.path(),
                                           StageOptions{});
  }
  std::string Model(const std::string& file, const std::string& tensor, uint64_t n = 10000) {
    testing::WriteFile(src_.Join(file), MakeSafetensors({{tensor, "U8", {n}, n}}));
    return src_.Join(file);
  }
  std::vector<std::string> Files() { return *Env::Default()->ListDir(shm_.path()); }

  TempDir src_{"/tmp"};
  TempDir shm_;
  Metrics metrics_;
  DefaultSourceOpener opener_{Env::Default(), false, HttpOptions{}};
};

TEST_F(RegistryTest, LoadStagesAndARestartAdoptsWithoutCopying) {
  const std::string uri = Model("a.safetensors", "w");
  std::string generation;
  {
    auto reg = NewRegistry();
    ASSERT_TRUE(reg->Load("a", uri).ok());
    std::optional<ModelInfo> info = reg->Get("a");
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->state, ModelState::kLoaded);
    EXPECT_FALSE(info->adopted);
    EXPECT_EQ(info->bytes_copied, 10000u);
    generation = info->manifest->generation;
    EXPECT_TRUE(reg->AllLoaded({"a"}));
    EXPECT_FALSE(reg->AllLoaded({"a", "b"}));
  }
  auto reg = NewRegistry();  // a restarted sidecar
  ASSERT_TRUE(reg->Load("a", uri).ok());
  std::optional<ModelInfo> info = reg->Get("a");
  EXPECT_TRUE(info->adopted);
  EXPECT_EQ(info->bytes_copied, 0u);
  EXPECT_EQ(info->manifest->generation, generation);
  EXPECT_NE(metrics_.Render().find("loom_sidecar_models_adopted_total 1\n"), std::string::npos);
  EXPECT_NE(testing::ReadFile(shm_.Join("a.state.json")).find("\"loaded\""), std::string::npos);
}

TEST_F(RegistryTest, ChangedSourceOrUriIsStagedAgain) {
  const std::string uri = Model("a.safetensors", "w");
  auto reg = NewRegistry();
  ASSERT_TRUE(reg->Load("a", uri).ok());
  const std::string g1 = reg->Get("a")->manifest->generation;
  Model("a.safetensors", "w2");  // same path, new content (and mtime)
  ASSERT_TRUE(reg->Load("a", uri).ok());
  EXPECT_FALSE(reg->Get("a")->adopted);
  const std::string g2 = reg->Get("a")->manifest->generation;
  EXPECT_NE(g1, g2);
  EXPECT_EQ(reg->Get("a")->manifest->tensors[0].name, "w2");
  const std::string other = Model("b.safetensors", "w2");  // same content, other URI
  ASSERT_TRUE(reg->Load("a", other).ok());
  EXPECT_NE(reg->Get("a")->manifest->generation, g2);
  EXPECT_EQ(Files().size(), 3u);  // one region, manifest, state
}

TEST_F(RegistryTest, FailuresAreRecordedWithTheReason) {
  testing::WriteFile(src_.Join("bad.safetensors"), testing::RawSafetensors("{\"a\":1}"));
  auto reg = NewRegistry();
  Status s = reg->Load("bad", src_.Join("bad.safetensors"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidModel);
  std::optional<ModelInfo> info = reg->Get("bad");
  EXPECT_EQ(info->state, ModelState::kFailedToLoad);
  EXPECT_NE(info->error.message().find("model bad: "), std::string::npos);
  EXPECT_NE(testing::ReadFile(shm_.Join("bad.state.json")).find("\"exit_code\":2"), std::string::npos);
  EXPECT_NE(metrics_.Render().find("loom_sidecar_load_failures_total{reason=\"invalid_model\"} 1"), std::string::npos);
  EXPECT_EQ(reg->Load("missing", src_.Join("nope.safetensors")).code(), StatusCode::kUnavailable);
  EXPECT_EQ(reg->Load("../x", src_.Join("nope.safetensors")).code(), StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, BackgroundLoadIsVisibleAsLoadingAndRefusesASecondLoad) {
  const std::string uri = Model("a.safetensors", "w");
  GatedOpener gate;
  auto reg = NewRegistry(&gate);
  ASSERT_TRUE(reg->StartLoad("a", uri).ok());
  EXPECT_EQ(reg->Get("a")->state, ModelState::kLoading);
  EXPECT_EQ(reg->StartLoad("a", uri).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(reg->Unload("a").code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE(reg->AllLoaded({"a"}));
  gate.Open();
  for (int i = 0; i < 500 && reg->Get("a")->state == ModelState::kLoading; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(reg->Get("a")->state, ModelState::kLoaded);
  ASSERT_TRUE(reg->StartLoad("a", uri).ok());  // a reload after the first finished
  reg->Shutdown();
  EXPECT_EQ(reg->StartLoad("b", uri).code(), StatusCode::kFailedPrecondition);
}

TEST_F(RegistryTest, UnloadRemovesEveryFile) {
  auto reg = NewRegistry();
  ASSERT_TRUE(reg->Load("a", Model("a.safetensors", "w")).ok());
  ASSERT_TRUE(reg->Load("b", Model("b.safetensors", "w")).ok());
  ASSERT_TRUE(reg->Unload("a").ok());
  EXPECT_FALSE(reg->Get("a").has_value());
  for (const std::string& f : Files()) EXPECT_EQ(f.rfind("b.", 0), 0u) << f;
  EXPECT_EQ(reg->Unload("a").code(), StatusCode::kNotFound);
  EXPECT_EQ(reg->List().size(), 1u);
}

TEST_F(RegistryTest, AdoptLeftoversKeepsMatchesDropsChangedLeavesUnreachable) {
  {
    auto reg = NewRegistry();
    ASSERT_TRUE(reg->Load("keep", Model("keep.safetensors", "w")).ok());
    ASSERT_TRUE(reg->Load("changed", Model("changed.safetensors", "w")).ok());
    ASSERT_TRUE(reg->Load("gone", Model("gone.safetensors", "w")).ok());
    ASSERT_TRUE(reg->Load("skipped", Model("skipped.safetensors", "w")).ok());
  }
  Model("changed.safetensors", "different");
  std::remove(src_.Join("gone.safetensors").c_str());
  testing::WriteFile(shm_.Join(".keep.0123.region.tmp"), "crashed staging");
  testing::WriteFile(shm_.Join("keep.manifest.json.tmp.99.0"), "crashed publish");
  auto reg = NewRegistry();
  reg->AdoptLeftovers({"skipped"});
  EXPECT_EQ(reg->Get("keep")->state, ModelState::kLoaded);
  EXPECT_TRUE(reg->Get("keep")->adopted);
  EXPECT_FALSE(reg->Get("changed").has_value());
  EXPECT_FALSE(reg->Get("gone").has_value());
  EXPECT_FALSE(reg->Get("skipped").has_value());
  const std::vector<std::string> files = Files();
  auto has_prefix = [&](const std::string& p) {
    return std::any_of(files.begin(), files.end(), [&](const std::string& f) { return f.rfind(p, 0) == 0; });
  };
  EXPECT_FALSE(has_prefix("changed."));  // stale: removed
  EXPECT_TRUE(has_prefix("gone.manifest.json"));  // unreachable source: left alone
  EXPECT_TRUE(has_prefix("skipped.manifest.json"));
  EXPECT_FALSE(has_prefix(".keep."));
  EXPECT_FALSE(has_prefix("keep.manifest.json.tmp"));
}

}  // namespace
}  // namespace loom
