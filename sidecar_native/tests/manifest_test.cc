#include "loom/manifest.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace loom {
namespace {

Manifest Sample() {
  Manifest m;
  m.name = "ranker";
  m.uri = "/models/ranker";
  m.generation = "00ff12";
  m.region_file = RegionFileName(m.name, m.generation);
  m.region_bytes = 3 * 4096;
  m.alignment = 4096;
  m.created_unix_ms = 1700000000000;
  m.stage_seconds = 0.25;
  m.sources = {{"/models/ranker/a.safetensors", 100, "mtime_ns:1", std::string(64, 'a')}};
  m.fingerprint = ModelFingerprint(m.sources);
  m.metadata = {{"format", "pt"}};
  m.tensors = {{"w", Dtype::kF16, {2, 2}, 0, 8}, {"b", Dtype::kF4, {4}, 4096, 2}, {"z", Dtype::kU8, {0}, 8192, 0}};
  return m;
}

std::string Mutate(const std::function<void(nlohmann::json&)>& f) {
  nlohmann::json j = nlohmann::json::parse(SerializeManifest(Sample()));
  f(j);
  return j.dump();
}

TEST(ManifestTest, RoundTrips) {
  const Manifest m = Sample();
  EXPECT_EQ(RegionFileName("ranker", "00ff12"), "ranker.00ff12.region");
  EXPECT_EQ(ManifestFileName("ranker"), "ranker.manifest.json");
  Result<Manifest> back = ParseManifest(SerializeManifest(m));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, m);
}

TEST(ManifestTest, RejectsInconsistentManifests) {
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
      {[](auto& j) { j["format"] = "loom-shm/2"; }, "unsupported format"},
      {[](auto& j) { j.erase("tensors"); }, "\"tensors\""},
      {[](auto& j) { j["name"] = "../x"; }, "model name"},
      {[](auto& j) { j["region_file"] = "other.00ff12.region"; }, "does not belong"},
      {[](auto& j) { j["generation"] = "XYZ"; }, "generation"},
      {[](auto& j) { j["alignment"] = 100; }, "alignment"},
      {[](auto& j) { j["region_bytes"] = 1000; }, "multiple of 4096"},
      {[](auto& j) { j["fingerprint"] = "sha256:00"; }, "fingerprint does not match"},
      {[](auto& j) { j["sources"] = nlohmann::json::array(); }, "no sources"},
      {[](auto& j) { j["tensors"][0]["offset"] = 12288; }, "outside the region"},
      {[](auto& j) { j["tensors"][0]["offset"] = 100; }, "misaligned"},
      {[](auto& j) { j["tensors"][0]["offset"] = 18446744073709547520ull; }, "outside the region"},
      {[](auto& j) { j["tensors"][0]["nbytes"] = 7; }, "nbytes does not match"},
      {[](auto& j) { j["tensors"][0]["dtype"] = "F128"; }, "unknown dtype"},
      {[](auto& j) { j["tensors"][1]["name"] = "w"; }, "listed twice"},
      {[](auto& j) { j["tensors"][1]["offset"] = 0; j["tensors"][1]["name"] = "c"; }, "overlap"},
      {[](auto& j) { j["created_unix_ms"] = 9223372036854775808ull; }, "64-bit integer"},
      {[](auto& j) { j["metadata"]["k"] = 1; }, "metadata values"},
  };
  for (const auto& [mutate, fragment] : cases) {
    Result<Manifest> r = ParseManifest(Mutate(mutate));
    ASSERT_FALSE(r.ok()) << fragment;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidModel);
    EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status().message();
  }
  EXPECT_FALSE(ParseManifest("").ok());
  EXPECT_FALSE(ParseManifest("[1]").ok());
  EXPECT_FALSE(ParseManifest("{\"\xff\":1}").ok());
}

}  // namespace
}  // namespace loom
