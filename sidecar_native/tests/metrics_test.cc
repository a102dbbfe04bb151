#include "loom/metrics.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

bool Has(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

TEST(MetricsTest, RendersPrometheusTextWithLoomNames) {
  Metrics m;
  m.RecordStage("llama", 2'000'000'000, 1.0);
  m.RecordStage("ranker", 1000, 0.2);
  m.SetModel("llama", true, 2'000'001'024);
  m.SetModel("ranker", false, 0);
  m.RecordAdopted("x");
  m.RecordFailure("invalid_model");
  m.RecordFailure("invalid_model");
  const std::string t = m.Render();
  EXPECT_TRUE(Has(t, "# TYPE loom_sidecar_bytes_staged_total counter"));
  EXPECT_TRUE(Has(t, "loom_sidecar_bytes_staged_total 2000001000"));
  EXPECT_TRUE(Has(t, "# TYPE loom_sidecar_stage_seconds histogram"));
  EXPECT_TRUE(Has(t, "loom_sidecar_stage_seconds_bucket{le=\"0.25\"} 1"));
  EXPECT_TRUE(Has(t, "loom_sidecar_stage_seconds_bucket{le=\"1\"} 2"));
  EXPECT_TRUE(Has(t, "loom_sidecar_stage_seconds_bucket{le=\"+Inf\"} 2"));
  EXPECT_TRUE(Has(t, "loom_sidecar_stage_seconds_count 2"));
  EXPECT_TRUE(Has(t, "loom_sidecar_stage_throughput_bytes_per_second{model=\"llama\"} 2000000000"));
  EXPECT_TRUE(Has(t, "loom_sidecar_resident_models 1"));
  EXPECT_TRUE(Has(t, "loom_sidecar_resident_bytes 2000001024"));
  EXPECT_TRUE(Has(t, "loom_sidecar_model_ready{model=\"ranker\"} 0"));
  EXPECT_TRUE(Has(t, "loom_sidecar_models_adopted_total 1"));
  EXPECT_TRUE(Has(t, "loom_sidecar_load_failures_total{reason=\"invalid_model\"} 2"));
  m.RemoveModel("llama");
  EXPECT_TRUE(Has(m.Render(), "loom_sidecar_resident_models 0"));
}

TEST(MetricsTest, EscapesLabelValues) { EXPECT_EQ(EscapeLabel("a\"b\\c\nd"), "a\\\"b\\\\c\\nd"); }

}  // namespace
}  // namespace loom
