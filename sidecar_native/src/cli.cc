#include "loom/cli.h"

#include <functional>
#include <map>

#include "loom/layout.h"
#include "loom/model_name.h"
#include "loom/size_parse.h"

namespace loom {
namespace {

Result<uint64_t> ParseCount(const std::string& flag, const std::string& v, uint64_t lo, uint64_t hi) {
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
    return Status::InvalidArgument(flag + " takes a number, got \"" + v + "\"");
  }
  const uint64_t n = std::stoull(v);
  if (n < lo || n > hi) {
    return Status::InvalidArgument(flag + " must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  return n;
}

}  // namespace

std::string UsageText() {
  return R"(loom-sidecar: stage safetensors models into shared memory and hand them to serving processes.

Usage:
  loom-sidecar inspect [--json] FILE...
      Validate safetensors files (as the reference parser does) and list their tensors.
  loom-sidecar stage --dir DIR [flags] NAME=URI...
      Stage each model into DIR once and exit (a model already staged from the same, unchanged
      source is kept). Prints a JSON summary on stdout.
  loom-sidecar serve --dir DIR [--listen ADDR] [--control-listen ADDR] [flags] NAME=URI...
      Stage the models, serve /healthz, /readyz, /metrics and the control API, and stay up
      until SIGTERM/SIGINT (exit 0). Models left in DIR by an earlier run are re-adopted
      without copying when their manifest and source fingerprint still match.

URI: a .safetensors file, a directory (with model.safetensors.index.json or *.safetensors),
an index .json file, file://PATH, an http(s):// URL of a file or of an index, or an object
store URI: s3://BUCKET/KEY, gs://BUCKET/KEY, hf://ORG/REPO[@REVISION][/PATH]. An object store
URI that does not end in .safetensors or .json is a prefix: its index, else every .safetensors
object directly under it. Remote objects are read with parallel Range requests pinned to the
ETag first seen. NAME: [A-Za-z0-9][A-Za-z0-9_.-]{0,127}.

Credentials (read from the environment, never printed):
  s3://  AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN]; else AWS_ROLE_ARN +
         AWS_WEB_IDENTITY_TOKEN_FILE (STS AssumeRoleWithWebIdentity at AWS_ENDPOINT_URL_STS or
         sts.REGION.amazonaws.com); else AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials),
         profile AWS_PROFILE; else unsigned.
  gs://  GCS_ACCESS_KEY_ID + GCS_SECRET_ACCESS_KEY (HMAC, S3-compatible XML API); else a bearer
         token in CLOUDSDK_AUTH_ACCESS_TOKEN_FILE; else the metadata server (GCE_METADATA_HOST,
         Workload Identity); else anonymous.
  hf://  HF_TOKEN, else the file HF_TOKEN_PATH; else anonymous.

Flags:
  --dir DIR               shared directory (a memory emptyDir); default $LOOM_MODEL_DIR
  --listen ADDR           probes, metrics and model status (default 0.0.0.0:8088; port 0 picks one)
  --control-listen ADDR   also load/unload routes (default 127.0.0.1:8089; "off" disables)
  --threads N             reader threads (default: one per CPU for files, 16 for URLs)
  --chunk-size SIZE       largest single read, e.g. 16M (default 16M)
  --alignment SIZE        alignment of each tensor in the region, power of two >= 256 (default 4K)
  --o-direct              read local files with O_DIRECT (bypasses the page cache; not on tmpfs)
  --no-preallocate        skip fallocate of the region before copying
  --populate              MAP_POPULATE the region before copying
  --cuda-register         cudaHostRegister each region (CUDA builds; useful only if this process
                          shares the GPU; consumers normally pin their own mapping)
  --reserve SIZE          refuse a model that would leave less than SIZE free in DIR (default 0)
  --http-timeout SECONDS  connect/read timeout per HTTP request (default 10/60)
  --http-retries N        retries per HTTP request on transient errors (default 3)
  --throttle-retries N    retries when the store throttles (429/503), full-jitter backoff (default 8)
  --ca-file PATH          CA bundle for https sources (default: system store)
  --s3-endpoint URL       S3-compatible endpoint (default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS)
  --s3-region REGION      signing region (default AWS_REGION, AWS_DEFAULT_REGION, us-east-1)
  --s3-addressing MODE    path, virtual or auto (default auto: virtual-hosted on AWS, path elsewhere)
  --gcs-endpoint URL      GCS XML API endpoint (default https://storage.googleapis.com)
  --hf-endpoint URL       Hugging Face hub (default HF_ENDPOINT, https://huggingface.co)
  --keep-serving-on-error serve: stay up when a configured model fails (/readyz stays 503)
  --no-adopt              serve: ignore models an earlier run left in DIR
  --termination-log PATH  where to write the failure reason (default /dev/termination-log, if present)
  --json                  inspect: machine-readable output
  -h, --help              this text
  --version               print the version

Shared directory layout (per model NAME):
  NAME.GEN.region         tensor data, each tensor at its manifest offset (aligned)
  NAME.manifest.json      name, dtype, shape, offset, nbytes per tensor + source fingerprint;
                          renamed into place last: its presence means the model is ready
  NAME.state.json         advisory: loading / loaded / failed with the reason

Exit codes:
  0   success (serve: clean shutdown on SIGTERM)
  1   internal error
  2   invalid model (not valid safetensors, bad index, duplicate tensors)
  3   source unreachable (not found, HTTP error, connection failure)
  4   no space (directory free space or memory limit too small for the model)
  5   I/O error while reading or writing
  6   not found
  7   failed precondition (e.g. O_DIRECT or CUDA not available)
  8   source changed: the object was replaced while it was being staged (a retry stages the new one)
  9   forbidden: the store refused the credentials (or there were none)
  10  throttled: the store kept throttling past --throttle-retries
  64  usage error (bad flag or argument)
The reason is printed as one line on stderr (and written to the termination log).
)";
}

Result<CliOptions> ParseArgs(const std::vector<std::string>& args, const char* env_model_dir) {
  CliOptions o;
  if (env_model_dir != nullptr) o.dir = env_model_dir;
  if (args.empty()) return o;
  const std::string& cmd = args[0];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") return o;
  if (cmd == "--version" || cmd == "version") {
    o.command = Command::kVersion;
    return o;
  }
  if (cmd == "inspect") {
    o.command = Command::kInspect;
  } else if (cmd == "stage") {
    o.command = Command::kStage;
  } else if (cmd == "serve") {
    o.command = Command::kServe;
  } else {
    return Status::InvalidArgument("unknown command \"" + cmd + "\" (use inspect, stage or serve; see --help)");
  }

  using Setter = std::function<Status(const std::string&)>;
  auto size_flag = [](uint64_t* dst) {
    return Setter([dst](const std::string& v) {
      LOOM_ASSIGN_OR_RETURN(*dst, ParseByteSize(v));
      return Status::OK();
    });
  };
  const std::map<std::string, Setter> with_value = {
      {"--dir", [&](const std::string& v) { o.dir = v; return Status::OK(); }},
      {"--listen", [&](const std::string& v) { o.listen = v; return Status::OK(); }},
      {"--control-listen", [&](const std::string& v) { o.control_listen = v; return Status::OK(); }},
      {"--threads", [&](const std::string& v) {
         LOOM_ASSIGN_OR_RETURN(uint64_t n, ParseCount("--threads", v, 1, 1024));
         o.stage.threads = static_cast<unsigned>(n);
         return Status::OK();
       }},
      {"--chunk-size", size_flag(&o.stage.chunk_bytes)},
      {"--alignment", size_flag(&o.stage.alignment)},
      {"--reserve", size_flag(&o.stage.reserve_bytes)},
      {"--http-timeout", [&](const std::string& v) {
         LOOM_ASSIGN_OR_RETURN(uint64_t n, ParseCount("--http-timeout", v, 1, 86400));
         o.http.connect_timeout_s = o.http.read_timeout_s = static_cast<int>(n);
         return Status::OK();
       }},
      {"--http-retries", [&](const std::string& v) {
         LOOM_ASSIGN_OR_RETURN(uint64_t n, ParseCount("--http-retries", v, 0, 100));
         o.http.retries = static_cast<int>(n);
         return Status::OK();
       }},
      {"--throttle-retries", [&](const std::string& v) {
         LOOM_ASSIGN_OR_RETURN(uint64_t n, ParseCount("--throttle-retries", v, 0, 100));
         o.http.throttle_retries = static_cast<int>(n);
         return Status::OK();
       }},
      {"--ca-file", [&](const std::string& v) { o.http.ca_file = v; return Status::OK(); }},
      {"--s3-endpoint", [&](const std::string& v) { o.stores.s3_endpoint = v; return Status::OK(); }},
      {"--s3-region", [&](const std::string& v) { o.stores.s3_region = v; return Status::OK(); }},
      {"--s3-addressing", [&](const std::string& v) {
         if (v != "path" && v != "virtual" && v != "auto") {
           return Status::InvalidArgument("--s3-addressing takes path, virtual or auto");
         }
         o.stores.s3_addressing = v;
         return Status::OK();
       }},
      {"--gcs-endpoint", [&](const std::string& v) { o.stores.gcs_endpoint = v; return Status::OK(); }},
      {"--hf-endpoint", [&](const std::string& v) { o.stores.hf_endpoint = v; return Status::OK(); }},
      {"--termination-log", [&](const std::string& v) { o.termination_log = v; return Status::OK(); }},
  };
  const std::map<std::string, std::function<void()>> switches = {
      {"--o-direct", [&] { o.o_direct = true; }},
      {"--no-preallocate", [&] { o.stage.preallocate = false; }},
      {"--populate", [&] { o.stage.populate = true; }},
      {"--cuda-register", [&] { o.stage.cuda_register = true; }},
      {"--keep-serving-on-error", [&] { o.exit_on_failure = false; }},
      {"--no-adopt", [&] { o.adopt_leftovers = false; }},
      {"--json", [&] { o.json = true; }},
  };

  std::vector<std::string> positional;
  bool only_positional = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (only_positional || a.empty() || a[0] != '-' || a == "-") {
      positional.push_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }
    if (a == "-h" || a == "--help") {
      o.command = Command::kHelp;
      return o;
    }
    const size_t eq = a.find('=');
    const std::string flag = a.substr(0, eq);
    if (auto it = with_value.find(flag); it != with_value.end()) {
      std::string value;
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return Status::InvalidArgument(flag + " needs a value");
      }
      LOOM_RETURN_IF_ERROR(it->second(value));
    } else if (auto sw = switches.find(flag); sw != switches.end() && eq == std::string::npos) {
      sw->second();
    } else {
      return Status::InvalidArgument("unknown flag " + a + " (see --help)");
    }
  }

  LOOM_RETURN_IF_ERROR(ValidateAlignment(o.stage.alignment));
  if (o.stage.chunk_bytes < 4096) return Status::InvalidArgument("--chunk-size must be at least 4K");
  if (o.command == Command::kInspect) {
    if (positional.empty()) return Status::InvalidArgument("inspect needs at least one FILE");
    o.files = std::move(positional);
    return o;
  }
  if (o.dir.empty()) return Status::InvalidArgument("--dir is required (or set LOOM_MODEL_DIR)");
  for (const std::string& p : positional) {
    const size_t eq = p.find('=');
    if (eq == std::string::npos) return Status::InvalidArgument("\"" + p + "\" is not NAME=URI");
    ModelSpec m{p.substr(0, eq), p.substr(eq + 1)};
    LOOM_RETURN_IF_ERROR(ValidateModelName(m.name));
    if (m.uri.empty()) return Status::InvalidArgument("model " + m.name + " has an empty URI");
    for (const ModelSpec& other : o.models) {
      if (other.name == m.name) return Status::InvalidArgument("model " + m.name + " is given twice");
    }
    o.models.push_back(std::move(m));
  }
  if (o.command == Command::kStage && o.models.empty()) {
    return Status::InvalidArgument("stage needs at least one NAME=URI");
  }
  return o;
}

}  // namespace loom
