// ModelRegistry: the models one sidecar manages in its shared directory: loads (re-adopting a
// region from an earlier run when its manifest and source fingerprint still match, staging
// otherwise), unloads, states for the control API and /readyz, and the metrics that go with
// them. Thread-safety: all public methods are safe to call concurrently; loads of different
// names run in parallel, a second load of a name that is loading is refused.
#ifndef LOOM_REGISTRY_H_
#define LOOM_REGISTRY_H_

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "loom/env.h"
#include "loom/manifest.h"
#include "loom/metrics.h"
#include "loom/source_opener.h"
#include "loom/stager.h"

namespace loom {

// KServe's model states.
enum class ModelState { kLoading, kLoaded, kFailedToLoad };
std::string_view StateName(ModelState state);  // "Loading", "Loaded", "FailedToLoad"

struct ModelInfo {
  std::string name;
  std::string uri;
  ModelState state = ModelState::kLoading;
  Status error;                       // why it failed (kFailedToLoad)
  std::optional<Manifest> manifest;   // when loaded
  bool adopted = false;               // taken over from an earlier run without copying
  uint64_t bytes_copied = 0;          // progress of the current or last staging
  double seconds = 0;                 // duration of the last load
};

class ModelRegistry {
 public:
  ModelRegistry(Env* env, SourceOpener* opener, Metrics* metrics, std::string dir, StageOptions options);
  ~ModelRegistry();  // Shutdown()
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // Makes `uri` available as `name` and blocks until it is Loaded or failed. A model already
  // loaded from the same URI with a matching fingerprint is kept (adopted) rather than copied.
  Status Load(const std::string& name, const std::string& uri);
  // Load on a background thread; returns at once (FailedPrecondition if `name` is loading).
  Status StartLoad(const std::string& name, const std::string& uri);
  // Unpublishes the manifest, then removes the region. Mappings held by consumers stay valid.
  Status Unload(const std::string& name);

  std::vector<ModelInfo> List() const;
  std::optional<ModelInfo> Get(const std::string& name) const;
  // True when every name is Loaded.
  bool AllLoaded(const std::vector<std::string>& names) const;

  // Startup: removes temporary files of crashed stagings, then adopts models an earlier run
  // left in the directory (except `skip`, which the caller loads itself) whose sources still
  // match; regions whose sources changed are removed, unreachable ones left alone.
  void AdoptLeftovers(const std::set<std::string>& skip);

  // Makes stagings in progress fail (and clean up) as soon as their current reads return, and
  // refuses new loads; returns at once. A Load() waiting in a control-API handler then returns,
  // so call this before stopping the HTTP server (whose Stop() waits for its handlers).
  void Cancel();
  // Cancel(), then waits for background loads.
  void Shutdown();

  const std::string& dir() const { return dir_; }

 private:
  struct Entry {
    ModelInfo info;
    std::atomic<uint64_t> progress{0};
    std::unique_ptr<WritableRegion> pinned;
  };

  Status Begin(const std::string& name, const std::string& uri, std::shared_ptr<Entry>* entry);
  // Background loads log their failure (nobody else sees it); synchronous ones leave it to the caller.
  Status Run(const std::string& name, const std::string& uri, Entry* entry, bool log_failure);
  // Adopts when the manifest on disk matches `uri`, the options and the sources' fingerprints.
  bool TryAdopt(const std::string& name, const std::string& uri, const ResolvedModel& model, Entry* entry);

  Env* env_;
  SourceOpener* opener_;
  Metrics* metrics_;
  const std::string dir_;
  const StageOptions options_;

  std::atomic<bool> cancel_{false};
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> models_;
  std::map<std::string, std::thread> loaders_;
};

}  // namespace loom

#endif  // LOOM_REGISTRY_H_
