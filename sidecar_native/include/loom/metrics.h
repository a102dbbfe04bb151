// Metrics: the sidecar's Prometheus metrics, rendered in the text exposition format (0.0.4).
// Names follow Loom's conventions: `loom_` prefix, base units, `_total` for counters.
// Thread-safety: all methods are safe to call concurrently.
#ifndef LOOM_METRICS_H_
#define LOOM_METRICS_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

class Metrics {
 public:
  Metrics();

  // A staging that copied `bytes` in `seconds`.
  void RecordStage(const std::string& model, uint64_t bytes, double seconds);
  // A model taken over from a previous run without copying.
  void RecordAdopted(const std::string& model);
  // A load that failed; `reason` is a StatusCode name ("invalid_model").
  void RecordFailure(std::string_view reason);
  // Current state of one model; ready models count as resident with their region size.
  void SetModel(const std::string& model, bool ready, uint64_t region_bytes);
  void RemoveModel(const std::string& model);

  std::string Render() const;

 private:
  struct ModelGauge {
    bool ready = false;
    uint64_t region_bytes = 0;
    double last_throughput = 0;  // bytes per second of the last staging
  };
  mutable std::mutex mu_;
  uint64_t bytes_staged_total_ = 0;
  uint64_t stages_total_ = 0;
  uint64_t adopted_total_ = 0;
  std::map<std::string, uint64_t, std::less<>> failures_;
  std::vector<double> bucket_bounds_;
  std::vector<uint64_t> bucket_counts_;  // cumulative counts are computed on render
  double seconds_sum_ = 0;
  uint64_t seconds_count_ = 0;
  std::map<std::string, ModelGauge> models_;
};

// Escapes a label value for the exposition format (backslash, quote, newline).
std::string EscapeLabel(std::string_view value);

}  // namespace loom

#endif  // LOOM_METRICS_H_
