#include "loom/stager.h"

#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "loom/cuda_host.h"
#include "loom/fingerprint.h"
#include "loom/source_opener.h"

namespace loom {
namespace {

using Clock = std::chrono::steady_clock;

std::string NewGeneration() {
  std::random_device rd;
  const uint64_t hi = rd(), lo = rd();
  const uint64_t ns = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>((hi << 32 | lo) ^ ns));
  return buf;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Gb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(bytes) / 1e9);
  return buf;
}

Status CheckSpace(Env* env, const std::string& dir, const std::string& name, uint64_t need, uint64_t reserve) {
  constexpr uint64_t kManifestSlack = 1 << 20;
  LOOM_ASSIGN_OR_RETURN(uint64_t free_bytes, env->FreeBytes(dir));
  const uint64_t usable = free_bytes > reserve ? free_bytes - reserve : 0;
  if (need + kManifestSlack > usable) {
    return Status::NoSpace("model " + name + " needs " + std::to_string(need) + " bytes (" + Gb(need) + ") in " + dir +
                           " but only " + std::to_string(usable) + " are free" +
                           (reserve ? " after the " + std::to_string(reserve) + "-byte reserve" : std::string()) +
                           "; raise the volume's sizeLimit or unload another model");
  }
  if (env->IsMemoryBacked(dir)) {
    if (std::optional<uint64_t> headroom = env->MemoryHeadroom(); headroom && need > *headroom) {
      return Status::NoSpace("model " + name + " needs " + std::to_string(need) + " bytes (" + Gb(need) +
                             ") of memory but the container's memory limit leaves " + std::to_string(*headroom) +
                             "; raise the sidecar's memory limit");
    }
  }
  return Status::OK();
}

Status CopyAll(const ResolvedModel& model, const std::vector<CopyTask>& tasks, uint8_t* base, unsigned threads,
               std::atomic<uint64_t>* progress, const std::atomic<bool>* cancel) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first_error;
  auto worker = [&] {
    std::vector<std::span<uint8_t>> spans;
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= tasks.size()) return;
      const CopyTask& t = tasks[i];
      if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = Status::FailedPrecondition("staging cancelled (shutting down)");
        failed = true;
        return;
      }
      spans.clear();
      for (const CopyPiece& p : t.pieces) spans.emplace_back(base + p.dst_offset, p.len);
      Status s = model.shards[t.shard]->ReadV(t.src_offset, spans);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = std::move(s);
        failed = true;
        return;
      }
      if (progress) progress->fetch_add(t.len, std::memory_order_relaxed);
    }
  };
  const size_t n = std::max<size_t>(1, std::min<size_t>(threads, tasks.size()));
  std::vector<std::thread> pool;
  pool.reserve(n - 1);
  for (size_t i = 1; i < n; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  return first_error;
}

// Removes what a failed staging left behind unless disarmed.
class Cleanup {
 public:
  Cleanup(Env* env) : env_(env) {}
  ~Cleanup() {
    for (const std::string& p : paths_) (void)env_->Remove(p);
  }
  void Add(std::string path) { paths_.push_back(std::move(path)); }
  void Disarm() { paths_.clear(); }

 private:
  Env* env_;
  std::vector<std::string> paths_;
};

}  // namespace

std::string StateFileName(const std::string& name) { return name + ".state.json"; }

Status WriteModelState(Env* env, const std::string& dir, const std::string& name, const std::string& state,
                       const std::string& uri, const Status& error) {
  nlohmann::json j = {{"name", name}, {"state", state}, {"uri", uri}, {"since_unix_ms", NowUnixMs()}};
  if (!error.ok()) {
    j["reason"] = error.ToString();
    j["exit_code"] = ExitCodeFor(error);
  }
  return env->WriteFileAtomic(JoinPath(dir, StateFileName(name)),
                              j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

void RemoveStaleFiles(Env* env, const std::string& dir, const std::string& name, const std::string& keep_generation) {
  Result<std::vector<std::string>> names = env->ListDir(dir);
  if (!names.ok()) return;
  const std::string prefix = name + ".";
  const std::string temp_prefix = "." + name + ".";
  auto is_hex = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  };
  for (const std::string& f : *names) {
    std::string_view v = f;
    if (v.starts_with(prefix) && v.ends_with(".region")) {
      const std::string_view gen = v.substr(prefix.size(), v.size() - prefix.size() - 7);
      if (is_hex(gen) && gen != keep_generation) (void)env->Remove(JoinPath(dir, f));
    } else if (v.starts_with(temp_prefix) && v.ends_with(".region.tmp")) {
      const std::string_view gen = v.substr(temp_prefix.size(), v.size() - temp_prefix.size() - 11);
      if (is_hex(gen)) (void)env->Remove(JoinPath(dir, f));
    }
  }
}

Result<StagedModel> StageModel(Env* env, const std::string& dir, const std::string& name, const ResolvedModel& model,
                               const StageOptions& options, std::atomic<uint64_t>* progress,
                               const std::atomic<bool>* cancel) {
  const Clock::time_point start = Clock::now();
  if (options.chunk_bytes == 0) return Status::InvalidArgument("chunk size must be > 0");
  LOOM_ASSIGN_OR_RETURN(Layout layout, PlanLayout(model.headers, options.alignment));
  LOOM_RETURN_IF_ERROR(CheckSpace(env, dir, name, layout.region_bytes, options.reserve_bytes));

  Manifest manifest;
  manifest.name = name;
  manifest.uri = model.uri;
  manifest.alignment = layout.alignment;
  manifest.region_bytes = layout.region_bytes;
  manifest.generation = NewGeneration();
  manifest.region_file = RegionFileName(name, manifest.generation);
  for (size_t i = 0; i < model.shards.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(SourceFingerprint f, ComputeFingerprint(*model.shards[i], model.headers[i].data_offset()));
    manifest.sources.push_back(std::move(f));
    if (model.headers[i].metadata) manifest.metadata.insert(model.headers[i].metadata->begin(), model.headers[i].metadata->end());
  }
  manifest.fingerprint = ModelFingerprint(manifest.sources);
  for (const PlacedTensor& t : layout.tensors) manifest.tensors.push_back({t.name, t.dtype, t.shape, t.offset, t.nbytes});

  Cleanup cleanup(env);
  const std::string temp = JoinPath(dir, "." + name + "." + manifest.generation + ".region.tmp");
  const std::string final_path = JoinPath(dir, manifest.region_file);
  RegionOptions ropts{options.preallocate, options.populate};
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<WritableRegion> region, env->CreateRegion(temp, layout.region_bytes, ropts));
  cleanup.Add(temp);

  unsigned threads = options.threads;
  if (threads == 0) {
    const bool remote = !model.shards.empty() && !IsLocalUri(model.shards[0]->uri());
    threads = remote ? 16 : std::max(1u, std::thread::hardware_concurrency());
  }
  const std::vector<CopyTask> tasks = PlanCopies(layout, options.chunk_bytes);
  LOOM_RETURN_IF_ERROR(CopyAll(model, tasks, region->data(), threads, progress, cancel));

  const bool memory = env->IsMemoryBacked(dir);
  if (!memory) LOOM_RETURN_IF_ERROR(region->Sync());
  if (options.cuda_register && region->size() > 0) {
    LOOM_RETURN_IF_ERROR(CudaHostRegister(region->data(), region->size()));
  }
  LOOM_RETURN_IF_ERROR(env->Rename(temp, final_path));
  cleanup.Disarm();
  cleanup.Add(final_path);

  manifest.created_unix_ms = NowUnixMs();
  manifest.stage_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  LOOM_RETURN_IF_ERROR(env->WriteFileAtomic(JoinPath(dir, ManifestFileName(name)), SerializeManifest(manifest)));
  cleanup.Disarm();  // committed
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  RemoveStaleFiles(env, dir, name, manifest.generation);

  StagedModel out;
  out.bytes = layout.data_bytes;
  out.seconds = seconds;
  out.manifest = std::move(manifest);
  out.pinned = options.cuda_register && region->size() > 0;
  out.region = std::move(region);
  return out;
}

}  // namespace loom
