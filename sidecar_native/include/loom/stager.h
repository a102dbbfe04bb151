// Staging: copies one resolved model into a fresh shared-memory region in the shared directory
// with several reader threads (one positional read per work item, straight into the mapping at
// the tensor's aligned offset), then publishes it atomically:
//   .NAME.GEN.region.tmp  --copy-->  rename to NAME.GEN.region  -->  NAME.manifest.json (atomic)
// The manifest rename is the commit point; a reader never sees a half-written model. Space is
// checked (statvfs, cgroup memory limit for tmpfs) before anything is written.
// Thread-safety: StageModel is reentrant for different model names; callers serialize stagings
// of one name (ModelRegistry does).
#ifndef LOOM_STAGER_H_
#define LOOM_STAGER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "loom/env.h"
#include "loom/layout.h"
#include "loom/manifest.h"
#include "loom/model_resolver.h"

namespace loom {

struct StageOptions {
  unsigned threads = 0;              // reader threads; 0: one per CPU for files, 16 for URLs
  uint64_t chunk_bytes = 16 << 20;   // largest single read
  uint64_t alignment = kDefaultAlignment;
  bool preallocate = true;           // fallocate the region before copying
  bool populate = false;             // MAP_POPULATE the region before copying
  bool cuda_register = false;        // cudaHostRegister the region (CUDA builds only)
  uint64_t reserve_bytes = 0;        // leave at least this much free in the directory
};

struct StagedModel {
  Manifest manifest;
  uint64_t bytes = 0;      // tensor bytes copied
  double seconds = 0;      // from the start of StageModel to the manifest rename
  // The writable mapping, still mapped: unmapping gigabytes takes a while, so the caller drops
  // it after the model is announced (or keeps it while it is registered with CUDA).
  std::unique_ptr<WritableRegion> region;
  bool pinned = false;     // region is registered with CUDA
};

Result<StagedModel> StageModel(Env* env, const std::string& dir, const std::string& name,
                               const ResolvedModel& model, const StageOptions& options,
                               std::atomic<uint64_t>* progress_bytes = nullptr,
                               const std::atomic<bool>* cancel = nullptr);

// Removes NAME.*.region files other than `keep_generation` and NAME's leftover temp files.
void RemoveStaleFiles(Env* env, const std::string& dir, const std::string& name, const std::string& keep_generation);

// NAME.state.json: {"state": "loading"|"failed", "uri", "reason", "exit_code"}, advisory, so a
// consumer can tell "still loading" and "failed" from "unknown"; the manifest is authoritative.
std::string StateFileName(const std::string& name);
Status WriteModelState(Env* env, const std::string& dir, const std::string& name, const std::string& state,
                       const std::string& uri, const Status& error);

}  // namespace loom

#endif  // LOOM_STAGER_H_
