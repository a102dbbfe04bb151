#include "loom/metrics.h"

#include <cstdio>
#include <sstream>

namespace loom {
namespace {

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

std::string EscapeLabel(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

Metrics::Metrics()
    : bucket_bounds_{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
      bucket_counts_(bucket_bounds_.size(), 0) {}

void Metrics::RecordStage(const std::string& model, uint64_t bytes, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  bytes_staged_total_ += bytes;
  ++stages_total_;
  seconds_sum_ += seconds;
  ++seconds_count_;
  for (size_t i = 0; i < bucket_bounds_.size(); ++i) {
    if (seconds <= bucket_bounds_[i]) {
      ++bucket_counts_[i];
      break;
    }
  }
  models_[model].last_throughput = seconds > 0 ? static_cast<double>(bytes) / seconds : 0;
}

void Metrics::RecordAdopted(const std::string&) {
  std::lock_guard<std::mutex> lock(mu_);
  ++adopted_total_;
}

void Metrics::RecordFailure(std::string_view reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = failures_.find(reason);
  if (it == failures_.end()) it = failures_.emplace(std::string(reason), 0).first;
  ++it->second;
}

void Metrics::SetModel(const std::string& model, bool ready, uint64_t region_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelGauge& g = models_[model];
  g.ready = ready;
  g.region_bytes = region_bytes;
}

void Metrics::RemoveModel(const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  models_.erase(model);
}

std::string Metrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream o;
  o << "# HELP loom_sidecar_bytes_staged_total Tensor bytes copied into shared memory.\n"
    << "# TYPE loom_sidecar_bytes_staged_total counter\n"
    << "loom_sidecar_bytes_staged_total " << bytes_staged_total_ << "\n";
  o << "# HELP loom_sidecar_stage_seconds Time to stage one model, from resolving its source to publishing it.\n"
    << "# TYPE loom_sidecar_stage_seconds histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bucket_bounds_.size(); ++i) {
    cumulative += bucket_counts_[i];
    o << "loom_sidecar_stage_seconds_bucket{le=\"" << Num(bucket_bounds_[i]) << "\"} " << cumulative << "\n";
  }
  o << "loom_sidecar_stage_seconds_bucket{le=\"+Inf\"} " << seconds_count_ << "\n"
    << "loom_sidecar_stage_seconds_sum " << Num(seconds_sum_) << "\n"
    << "loom_sidecar_stage_seconds_count " << seconds_count_ << "\n";
  o << "# HELP loom_sidecar_stage_throughput_bytes_per_second Copy throughput of the last staging of each model.\n"
    << "# TYPE loom_sidecar_stage_throughput_bytes_per_second gauge\n";
  for (const auto& [name, g] : models_) {
    if (g.last_throughput > 0) {
      o << "loom_sidecar_stage_throughput_bytes_per_second{model=\"" << EscapeLabel(name) << "\"} "
        << Num(g.last_throughput) << "\n";
    }
  }
  o << "# HELP loom_sidecar_stages_total Models staged by copying.\n"
    << "# TYPE loom_sidecar_stages_total counter\n"
    << "loom_sidecar_stages_total " << stages_total_ << "\n";
  o << "# HELP loom_sidecar_models_adopted_total Models taken over from an earlier run without copying.\n"
    << "# TYPE loom_sidecar_models_adopted_total counter\n"
    << "loom_sidecar_models_adopted_total " << adopted_total_ << "\n";
  o << "# HELP loom_sidecar_load_failures_total Loads that failed, by reason.\n"
    << "# TYPE loom_sidecar_load_failures_total counter\n";
  for (const auto& [reason, n] : failures_) {
    o << "loom_sidecar_load_failures_total{reason=\"" << EscapeLabel(reason) << "\"} " << n << "\n";
  }
  uint64_t resident = 0, resident_bytes = 0;
  o << "# HELP loom_sidecar_model_ready Whether a model is staged and published (1) or not (0).\n"
    << "# TYPE loom_sidecar_model_ready gauge\n";
  for (const auto& [name, g] : models_) {
    o << "loom_sidecar_model_ready{model=\"" << EscapeLabel(name) << "\"} " << (g.ready ? 1 : 0) << "\n";
    if (g.ready) ++resident, resident_bytes += g.region_bytes;
  }
  o << "# HELP loom_sidecar_resident_models Models resident in shared memory.\n"
    << "# TYPE loom_sidecar_resident_models gauge\n"
    << "loom_sidecar_resident_models " << resident << "\n";
  o << "# HELP loom_sidecar_resident_bytes Bytes of shared memory held by resident models.\n"
    << "# TYPE loom_sidecar_resident_bytes gauge\n"
    << "loom_sidecar_resident_bytes " << resident_bytes << "\n";
  return o.str();
}

}  // namespace loom
