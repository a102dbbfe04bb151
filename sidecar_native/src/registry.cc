#include "loom/registry.h"

#include <chrono>
#include <cstdio>

#include "loom/cuda_host.h"
#include "loom/model_name.h"
#include "loom/model_resolver.h"

namespace loom {

std::string_view StateName(ModelState state) {
  switch (state) {
    case ModelState::kLoading: return "Loading";
    case ModelState::kLoaded: return "Loaded";
    case ModelState::kFailedToLoad: return "FailedToLoad";
  }
  return "Unknown";
}

ModelRegistry::ModelRegistry(Env* env, SourceOpener* opener, Metrics* metrics, std::string dir, StageOptions options)
    : env_(env), opener_(opener), metrics_(metrics), dir_(std::move(dir)), options_(options) {}

ModelRegistry::~ModelRegistry() { Shutdown(); }

void ModelRegistry::Cancel() { cancel_ = true; }

void ModelRegistry::Shutdown() {
  Cancel();
  std::map<std::string, std::thread> loaders;
  {
    std::lock_guard<std::mutex> lock(mu_);
    loaders.swap(loaders_);
  }
  for (auto& [name, t] : loaders) {
    if (t.joinable()) t.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, e] : models_) {
    if (e->pinned && e->pinned->data()) (void)CudaHostUnregister(e->pinned->data());
    e->pinned.reset();
  }
}

Status ModelRegistry::Begin(const std::string& name, const std::string& uri, std::shared_ptr<Entry>* entry) {
  LOOM_RETURN_IF_ERROR(ValidateModelName(name));
  if (uri.empty()) return Status::InvalidArgument("model " + name + ": empty URI");
  std::lock_guard<std::mutex> lock(mu_);
  if (cancel_) return Status::FailedPrecondition("the sidecar is shutting down");
  auto it = models_.find(name);
  if (it != models_.end() && it->second->info.state == ModelState::kLoading) {
    return Status::FailedPrecondition("model " + name + " is already loading");
  }
  auto e = std::make_shared<Entry>();
  e->info.name = name;
  e->info.uri = uri;
  e->info.state = ModelState::kLoading;
  if (it != models_.end()) {
    // Keep serving the previous version's facts until the new one is published.
    e->info.manifest = it->second->info.manifest;
    e->pinned = std::move(it->second->pinned);
  }
  models_[name] = e;
  *entry = std::move(e);
  metrics_->SetModel(name, false, 0);
  return Status::OK();
}

Status ModelRegistry::Load(const std::string& name, const std::string& uri) {
  std::shared_ptr<Entry> entry;
  LOOM_RETURN_IF_ERROR(Begin(name, uri, &entry));
  return Run(name, uri, entry.get(), /*log_failure=*/false);
}

Status ModelRegistry::StartLoad(const std::string& name, const std::string& uri) {
  std::shared_ptr<Entry> entry;
  LOOM_RETURN_IF_ERROR(Begin(name, uri, &entry));
  std::thread previous;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = loaders_.find(name); it != loaders_.end()) previous = std::move(it->second);
  loaders_[name] = std::thread([this, name, uri, entry, prev = std::move(previous)]() mutable {
    if (prev.joinable()) prev.join();  // finished: its entry is no longer Loading
    (void)Run(name, uri, entry.get(), /*log_failure=*/true);
  });
  return Status::OK();
}

bool ModelRegistry::TryAdopt(const std::string& name, const std::string& uri, const ResolvedModel& model,
                             Entry* entry) {
  Result<std::string> text = env_->ReadFile(JoinPath(dir_, ManifestFileName(name)), 1 << 30);
  if (!text.ok()) return false;
  Result<Manifest> manifest = ParseManifest(*text);
  if (!manifest.ok() || manifest->name != name || manifest->uri != uri || manifest->alignment != options_.alignment) {
    return false;
  }
  Result<FileStat> region = env_->Stat(JoinPath(dir_, manifest->region_file));
  if (!region.ok() || !region->is_regular || region->size != manifest->region_bytes) return false;
  if (manifest->sources.size() != model.shards.size()) return false;
  for (size_t i = 0; i < model.shards.size(); ++i) {
    Result<SourceFingerprint> f = ComputeFingerprint(*model.shards[i], model.headers[i].data_offset());
    if (!f.ok() || !(*f == manifest->sources[i])) return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  entry->info.manifest = std::move(manifest).value();
  entry->info.adopted = true;
  return true;
}

Status ModelRegistry::Run(const std::string& name, const std::string& uri, Entry* entry, bool log_failure) {
  const auto start = std::chrono::steady_clock::now();
  (void)WriteModelState(env_, dir_, name, "loading", uri, Status::OK());
  Status status;
  bool adopted = false;
  std::optional<StagedModel> staged;
  Result<ResolvedModel> model = ResolveModel(uri, *opener_, env_);
  if (!model.ok()) {
    status = model.status();
  } else if (TryAdopt(name, uri, *model, entry)) {
    adopted = true;
  } else {
    Result<StagedModel> r = StageModel(env_, dir_, name, *model, options_, &entry->progress, &cancel_);
    if (r.ok()) {
      staged = std::move(r).value();
    } else {
      status = r.status();
    }
  }
  // Time to ready: up to the publication, without tearing down the writable mapping.
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::unique_ptr<WritableRegion> unmap_later;
  if (staged && !staged->pinned) unmap_later = std::move(staged->region);
  status = status.Annotate("model " + name);
  uint64_t region_bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry->info.seconds = seconds;
    entry->info.bytes_copied = entry->progress.load();
    if (!status.ok()) {
      entry->info.state = ModelState::kFailedToLoad;
      entry->info.error = status;
    } else {
      entry->info.state = ModelState::kLoaded;
      if (staged) {
        entry->info.manifest = std::move(staged->manifest);
        if (entry->pinned && entry->pinned->data()) (void)CudaHostUnregister(entry->pinned->data());
        if (staged->pinned) entry->pinned = std::move(staged->region);
      }
      region_bytes = entry->info.manifest->region_bytes;
    }
  }
  if (!status.ok()) {
    metrics_->RecordFailure(CodeName(status.code()));
    (void)WriteModelState(env_, dir_, name, "failed", uri, status);
    if (log_failure) std::fprintf(stderr, "loom-sidecar: %s\n", status.ToString().c_str());
    return status;
  }
  (void)WriteModelState(env_, dir_, name, "loaded", uri, Status::OK());
  if (adopted) {
    metrics_->RecordAdopted(name);
    std::fprintf(stderr, "loom-sidecar: adopted %s from an earlier run (%llu bytes, fingerprint unchanged)\n",
                 name.c_str(), static_cast<unsigned long long>(region_bytes));
  } else {
    metrics_->RecordStage(name, staged->bytes, staged->seconds);
    std::fprintf(stderr, "loom-sidecar: staged %s: %llu bytes in %.3f s (%.2f GB/s)\n", name.c_str(),
                 static_cast<unsigned long long>(staged->bytes), staged->seconds,
                 staged->seconds > 0 ? static_cast<double>(staged->bytes) / staged->seconds / 1e9 : 0.0);
  }
  metrics_->SetModel(name, true, region_bytes);
  return Status::OK();
}

Status ModelRegistry::Unload(const std::string& name) {
  LOOM_RETURN_IF_ERROR(ValidateModelName(name));
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(name);
    if (it == models_.end()) return Status::NotFound("model " + name + " is not loaded");
    if (it->second->info.state == ModelState::kLoading) {
      return Status::FailedPrecondition("model " + name + " is loading; unload it when the load finishes");
    }
    entry = it->second;
    models_.erase(it);
  }
  if (entry->pinned && entry->pinned->data()) (void)CudaHostUnregister(entry->pinned->data());
  entry->pinned.reset();
  LOOM_RETURN_IF_ERROR(env_->Remove(JoinPath(dir_, ManifestFileName(name))));
  (void)env_->SyncDir(dir_);
  RemoveStaleFiles(env_, dir_, name, /*keep_generation=*/"");
  (void)env_->Remove(JoinPath(dir_, StateFileName(name)));
  metrics_->RemoveModel(name);
  return Status::OK();
}

std::vector<ModelInfo> ModelRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ModelInfo> out;
  for (const auto& [name, e] : models_) {
    out.push_back(e->info);
    if (e->info.state == ModelState::kLoading) out.back().bytes_copied = e->progress.load();
  }
  return out;
}

std::optional<ModelInfo> ModelRegistry::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return std::nullopt;
  ModelInfo info = it->second->info;
  if (info.state == ModelState::kLoading) info.bytes_copied = it->second->progress.load();
  return info;
}

bool ModelRegistry::AllLoaded(const std::vector<std::string>& names) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& n : names) {
    auto it = models_.find(n);
    if (it == models_.end() || it->second->info.state != ModelState::kLoaded) return false;
  }
  return true;
}

void ModelRegistry::AdoptLeftovers(const std::set<std::string>& skip) {
  Result<std::vector<std::string>> names = env_->ListDir(dir_);
  if (!names.ok()) return;
  const std::string suffix = ".manifest.json";
  for (const std::string& f : *names) {
    // Temporaries of a crashed run: .NAME.GEN.region.tmp and NAME.*.json.tmp.PID.N
    if ((f.starts_with(".") && f.ends_with(".region.tmp")) || f.find(".json.tmp.") != std::string::npos) {
      (void)env_->Remove(JoinPath(dir_, f));
    }
  }
  for (const std::string& f : *names) {
    if (!f.ends_with(suffix)) continue;
    const std::string name = f.substr(0, f.size() - suffix.size());
    if (skip.count(name) || !ValidateModelName(name).ok()) continue;
    Result<std::string> text = env_->ReadFile(JoinPath(dir_, f), 1 << 30);
    Result<Manifest> manifest = text.ok() ? ParseManifest(*text) : Result<Manifest>(text.status());
    if (!manifest.ok() || manifest->name != name) {
      std::fprintf(stderr, "loom-sidecar: ignoring %s: %s\n", f.c_str(), manifest.status().ToString().c_str());
      continue;
    }
    std::shared_ptr<Entry> entry;
    if (!Begin(name, manifest->uri, &entry).ok()) continue;
    Result<ResolvedModel> model = ResolveModel(manifest->uri, *opener_, env_);
    const bool unreachable = !model.ok() && model.status().code() == StatusCode::kUnavailable;
    if (model.ok() && TryAdopt(name, manifest->uri, *model, entry.get())) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        entry->info.state = ModelState::kLoaded;
      }
      metrics_->RecordAdopted(name);
      metrics_->SetModel(name, true, manifest->region_bytes);
      std::fprintf(stderr, "loom-sidecar: adopted %s from an earlier run\n", name.c_str());
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      models_.erase(name);
    }
    metrics_->RemoveModel(name);
    if (unreachable) {
      std::fprintf(stderr, "loom-sidecar: left %s alone: its source is unreachable (%s)\n", name.c_str(),
                   model.status().ToString().c_str());
      continue;
    }
    std::fprintf(stderr, "loom-sidecar: removed %s: its source changed since it was staged\n", name.c_str());
    (void)env_->Remove(JoinPath(dir_, f));
    RemoveStaleFiles(env_, dir_, name, "");
    (void)env_->Remove(JoinPath(dir_, StateFileName(name)));
  }
}

}  // namespace loom
