// loom-sidecar entry point: inspect, stage and serve (see `loom-sidecar --help`).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "loom/cli.h"
#include "loom/cuda_host.h"
#include "loom/env.h"
#include "loom/metrics.h"
#include "loom/model_resolver.h"
#include "loom/registry.h"
#include "loom/server.h"
#include "loom/source_opener.h"

namespace loom {
namespace {

using json = nlohmann::json;

// The reason the operator shows for FailedToLoad: one line on stderr and, in a pod, the
// container's termination message.
int Fail(const CliOptions& o, const Status& s) {
  const std::string line = s.ToString();
  std::fprintf(stderr, "loom-sidecar: error: %s\n", line.c_str());
  if (!o.termination_log.empty()) {
    const bool is_default = o.termination_log == "/dev/termination-log";
    const int fd = ::open(o.termination_log.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | (is_default ? 0 : O_CREAT), 0644);
    if (fd >= 0) {
      const std::string msg = line + "\n";
      (void)!::write(fd, msg.data(), msg.size());
      ::close(fd);
    }
  }
  return ExitCodeFor(s);
}

json TensorsJson(const SafetensorsHeader& h) {
  json tensors = json::array();
  for (const TensorInfo& t : h.tensors) {
    tensors.push_back({{"name", t.name}, {"dtype", DtypeName(t.dtype)}, {"shape", t.shape},
                       {"data_offsets", {t.begin, t.end}}});
  }
  return tensors;
}

int Inspect(const CliOptions& o) {
  DefaultSourceOpener opener(Env::Default(), false, o.http, o.stores);
  Status first_error;
  json results = json::array();
  for (const std::string& file : o.files) {
    Result<std::unique_ptr<Source>> source = opener.Open(file);
    Result<SafetensorsHeader> header = source.ok() ? ReadHeader(**source) : Result<SafetensorsHeader>(source.status());
    if (!header.ok()) {
      if (first_error.ok()) first_error = header.status().Annotate(file);
      if (o.json) {
        results.push_back({{"file", file}, {"ok", false}, {"error", header.status().ToString()},
                           {"exit_code", ExitCodeFor(header.status())}});
      } else {
        std::fprintf(stderr, "loom-sidecar: %s: %s\n", file.c_str(), header.status().ToString().c_str());
      }
      continue;
    }
    if (o.json) {
      json r = {{"file", file}, {"ok", true}, {"header_bytes", header->header_len},
                {"data_bytes", header->data_len()}, {"tensors", TensorsJson(*header)}};
      if (header->metadata) r["metadata"] = *header->metadata;
      results.push_back(std::move(r));
      continue;
    }
    std::printf("%s: ok, %zu tensors, %llu data bytes\n", file.c_str(), header->tensors.size(),
                static_cast<unsigned long long>(header->data_len()));
    for (const TensorInfo& t : header->tensors) {
      std::string shape;
      for (uint64_t d : t.shape) shape += (shape.empty() ? "" : ",") + std::to_string(d);
      std::printf("  %-60s %-11s [%s] %llu bytes\n", t.name.c_str(), std::string(DtypeName(t.dtype)).c_str(),
                  shape.c_str(), static_cast<unsigned long long>(t.nbytes()));
    }
  }
  if (o.json) std::cout << results.dump(1, ' ', false, json::error_handler_t::replace) << std::endl;
  return ExitCodeFor(first_error);
}

json ModelJson(const ModelInfo& info) {
  json j = {{"name", info.name}, {"uri", info.uri}, {"state", StateName(info.state)}, {"adopted", info.adopted},
            {"bytes", info.bytes_copied}, {"seconds", info.seconds}};
  if (info.manifest) {
    j["region_bytes"] = info.manifest->region_bytes;
    j["stage_seconds"] = info.manifest->stage_seconds;
    j["fingerprint"] = info.manifest->fingerprint;
  }
  if (!info.error.ok()) j["reason"] = info.error.ToString();
  return j;
}

Status PrepareDir(const CliOptions& o) {
  Result<FileStat> st = Env::Default()->Stat(o.dir);
  if (!st.ok()) return Status::InvalidArgument("--dir " + o.dir + " does not exist");
  if (!st->is_dir) return Status::InvalidArgument("--dir " + o.dir + " is not a directory");
  if (o.stage.cuda_register && !CudaSupportCompiledIn()) {
    return Status::FailedPrecondition("--cuda-register: this loom-sidecar was built without CUDA");
  }
  return Status::OK();
}

int Stage(const CliOptions& o) {
  if (Status s = PrepareDir(o); !s.ok()) return Fail(o, s);
  Metrics metrics;
  DefaultSourceOpener opener(Env::Default(), o.o_direct, o.http, o.stores);
  ModelRegistry registry(Env::Default(), &opener, &metrics, o.dir, o.stage);
  Status first_error;
  json out = json::array();
  for (const ModelSpec& m : o.models) {
    Status s = registry.Load(m.name, m.uri);
    if (!s.ok() && first_error.ok()) first_error = s;
    if (std::optional<ModelInfo> info = registry.Get(m.name)) out.push_back(ModelJson(*info));
  }
  std::cout << json{{"models", out}}.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
  return first_error.ok() ? 0 : Fail(o, first_error);
}

int Serve(const CliOptions& o) {
  if (Status s = PrepareDir(o); !s.ok()) return Fail(o, s);
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // before any thread starts: all inherit it
  signal(SIGPIPE, SIG_IGN);

  Metrics metrics;
  DefaultSourceOpener opener(Env::Default(), o.o_direct, o.http, o.stores);
  ModelRegistry registry(Env::Default(), &opener, &metrics, o.dir, o.stage);
  std::vector<std::string> names;
  for (const ModelSpec& m : o.models) names.push_back(m.name);
  HttpService http(&registry, &metrics, names);
  Result<std::string> bound = http.Listen(o.listen, /*control=*/false);
  if (!bound.ok()) return Fail(o, bound.status());
  json event = {{"event", "listening"}, {"listen", *bound}};
  if (o.control_listen != "off") {
    Result<std::string> control = http.Listen(o.control_listen, /*control=*/true);
    if (!control.ok()) return Fail(o, control.status());
    event["control"] = *control;
  }
  std::cout << event.dump() << std::endl;

  if (o.adopt_leftovers) registry.AdoptLeftovers(std::set<std::string>(names.begin(), names.end()));
  for (const ModelSpec& m : o.models) {
    if (Status s = registry.StartLoad(m.name, m.uri); !s.ok()) return Fail(o, s);
  }
  bool announced = false;
  Status fatal;
  while (true) {
    timespec tick{0, 100'000'000};
    const int sig = sigtimedwait(&sigs, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) {
      std::fprintf(stderr, "loom-sidecar: %s, shutting down\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      break;
    }
    if (!announced && registry.AllLoaded(names)) {
      announced = true;
      std::cout << json{{"event", "ready"}}.dump() << std::endl;
    }
    if (o.exit_on_failure) {
      for (const std::string& n : names) {
        std::optional<ModelInfo> info = registry.Get(n);
        if (info && info->state == ModelState::kFailedToLoad) fatal = info->error;
      }
      if (!fatal.ok()) break;
    }
  }
  // Cancel first: a control-API load with "wait": true blocks its handler until the staging ends,
  // and stopping the HTTP server waits for its handlers.
  registry.Cancel();
  http.Stop();
  registry.Shutdown();
  return fatal.ok() ? 0 : Fail(o, fatal);
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  Result<CliOptions> parsed = ParseArgs(args, std::getenv("LOOM_MODEL_DIR"));
  if (!parsed.ok()) {
    std::fprintf(stderr, "loom-sidecar: error: %s\n", parsed.status().ToString().c_str());
    return ExitCodeFor(parsed.status());
  }
  const CliOptions& o = *parsed;
  switch (o.command) {
    case Command::kHelp:
      std::fputs(UsageText().c_str(), stdout);
      return 0;
    case Command::kVersion:
      std::printf("loom-sidecar %s (cuda %s)\n", kVersion, CudaSupportCompiledIn() ? "on" : "off");
      return 0;
    case Command::kInspect: return Inspect(o);
    case Command::kStage: return Stage(o);
    case Command::kServe: return Serve(o);
  }
  return 1;
}

}  // namespace
}  // namespace loom

int main(int argc, char** argv) { return loom::Main(argc, argv); }
