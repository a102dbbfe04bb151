// Command-line parsing for loom-sidecar (inspect, stage, serve) and its --help text, which
// documents every flag and exit code. Thread-safety: pure functions.
#ifndef LOOM_CLI_H_
#define LOOM_CLI_H_

#include <string>
#include <vector>

#include "loom/http_source.h"
#include "loom/object_store.h"
#include "loom/stager.h"
#include "loom/status.h"

namespace loom {

enum class Command { kHelp, kVersion, kInspect, kStage, kServe };

struct ModelSpec {
  std::string name;
  std::string uri;
};

struct CliOptions {
  Command command = Command::kHelp;
  std::string dir;                               // --dir, default $LOOM_MODEL_DIR
  std::string listen = "0.0.0.0:8088";           // probes, metrics, read-only model status
  std::string control_listen = "127.0.0.1:8089";  // + load/unload; "off" disables
  std::vector<ModelSpec> models;                 // NAME=URI (stage, serve)
  std::vector<std::string> files;                // inspect
  StageOptions stage;
  HttpOptions http;
  StoreOptions stores;
  bool o_direct = false;
  bool json = false;
  bool exit_on_failure = true;  // serve: exit with the failure's code when a configured model fails
  bool adopt_leftovers = true;  // serve: take over models an earlier run left in --dir
  std::string termination_log = "/dev/termination-log";
};

// `args` excludes argv[0]; `env_model_dir` is $LOOM_MODEL_DIR or nullptr.
Result<CliOptions> ParseArgs(const std::vector<std::string>& args, const char* env_model_dir);
std::string UsageText();
inline constexpr char kVersion[] = "0.1.0";

}  // namespace loom

#endif  // LOOM_CLI_H_
