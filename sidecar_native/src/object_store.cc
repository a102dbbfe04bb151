#include "loom/object_store.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "loom/http_source.h"
#include "loom/s3_xml.h"

namespace loom {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxListPages = 100;  // 100,000 objects under one prefix is plenty for a model

std::string Get(const EnvLookup& env, const char* name) { return env(name).value_or(""); }

std::optional<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.empty() || s.size() > (64 << 10)) return std::nullopt;
  return s;
}

std::string StripSlashes(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

bool ValidBucket(std::string_view b) {
  if (b.size() < 3 || b.size() > 222) return false;
  return b.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-_") == std::string_view::npos;
}

// Where a bucket's objects are: the endpoint and how the bucket goes into the URL.
struct BucketEndpoint {
  std::string scheme;  // http or https
  std::string host;    // host[:port]
  bool virtual_hosted = false;

  std::string BucketUrl(const std::string& bucket) const {
    return virtual_hosted ? scheme + "://" + bucket + "." + host + "/" : scheme + "://" + host + "/" + bucket + "/";
  }
};

Result<BucketEndpoint> ParseEndpoint(const std::string& endpoint, const std::string& what) {
  Result<ParsedUrl> u = ParseUrl(StripSlashes(endpoint));
  if (!u.ok()) return Status::InvalidArgument(what + " \"" + endpoint + "\" is not an http(s) URL");
  if (u->path != "/") return Status::InvalidArgument(what + " \"" + endpoint + "\" must not have a path");
  BucketEndpoint e;
  e.scheme = u->scheme;
  e.host = u->host_port.substr(u->scheme.size() + 3);
  return e;
}

using Authorizer = std::function<Result<HttpAuth>()>;

// s3:// and gs://: the same XML API, different endpoints and credentials.
class BucketStore final : public ObjectStore {
 public:
  BucketStore(std::string scheme, Result<BucketEndpoint> endpoint, bool aws_default, Authorizer auth,
              std::shared_ptr<const HttpClient> client)
      : scheme_(std::move(scheme)), endpoint_(std::move(endpoint)), aws_default_(aws_default),
        auth_(std::move(auth)), client_(std::move(client)) {}

  Result<std::unique_ptr<Source>> Open(const std::string& uri) override {
    LOOM_ASSIGN_OR_RETURN(BucketUri u, Parse(uri));
    if (u.key.empty() || u.key.ends_with("/")) return Status::InvalidArgument(uri + " names a prefix, not an object");
    LOOM_ASSIGN_OR_RETURN(std::string base, BucketUrl(u.bucket));
    RemoteObject o;
    o.uri = uri;
    o.url = base + UriEncode(u.key, true);
    o.auth = auth_;
    o.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD"};
    return OpenRemoteObject(std::move(o), client_);
  }

  Result<std::vector<std::string>> List(const std::string& uri) override {
    LOOM_ASSIGN_OR_RETURN(BucketUri u, Parse(uri));
    std::string prefix = u.key;
    if (!prefix.empty() && !prefix.ends_with("/")) prefix += "/";
    LOOM_ASSIGN_OR_RETURN(std::string base, BucketUrl(u.bucket));
    std::vector<std::string> names;
    std::string token;
    for (int page = 0; page < kMaxListPages; ++page) {
      // Query parameters in SigV4's canonical order (sorted, RFC 3986-encoded), so the URL as sent
      // is the canonical query that libcurl signs.
      std::string query;
      if (!token.empty()) query += "continuation-token=" + UriEncode(token, false) + "&";
      query += "delimiter=%2F&list-type=2&prefix=" + UriEncode(prefix, false);
      const std::string url = base + "?" + query;
      Result<std::string> body = FetchSmallObject(
          *client_,
          [&]() -> Result<HttpRequest> {
            HttpRequest r;
            r.url = url;
            r.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD"};
            LOOM_ASSIGN_OR_RETURN(r.auth, auth_());
            return r;
          },
          "listing " + scheme_ + "://" + u.bucket + "/" + prefix, 16 << 20);
      LOOM_RETURN_IF_ERROR(body.status());
      Result<ListPage> parsed = ParseListObjects(*body);
      if (!parsed.ok()) return Status::Unavailable("listing " + uri + ": " + parsed.status().message());
      for (const ListedObject& obj : parsed->objects) {
        if (!obj.key.starts_with(prefix)) continue;
        const std::string name = obj.key.substr(prefix.size());
        if (!name.empty() && name.find('/') == std::string::npos) names.push_back(name);
      }
      if (!parsed->truncated) {
        std::sort(names.begin(), names.end());
        return names;
      }
      token = parsed->next_token;
    }
    return Status::InvalidModel(uri + " holds more than " + std::to_string(kMaxListPages * 1000) + " objects");
  }

 private:
  Result<BucketUri> Parse(const std::string& uri) const {
    LOOM_ASSIGN_OR_RETURN(BucketUri u, ParseBucketUri(uri));
    if (u.scheme != scheme_) return Status::Internal(uri + " given to the " + scheme_ + ":// store");
    return u;
  }

  Result<std::string> BucketUrl(const std::string& bucket) const {
    LOOM_RETURN_IF_ERROR(endpoint_.status());
    BucketEndpoint e = *endpoint_;
    // Dotted bucket names do not match the wildcard certificate of virtual-hosted AWS endpoints.
    if (aws_default_ && bucket.find('.') != std::string::npos) e.virtual_hosted = false;
    return e.BucketUrl(bucket);
  }

  std::string scheme_;
  Result<BucketEndpoint> endpoint_;
  bool aws_default_;
  Authorizer auth_;
  std::shared_ptr<const HttpClient> client_;
};

HttpAuth SigV4(const AwsCredentials& c, const std::string& region) {
  HttpAuth a;
  if (c.empty()) return a;
  a.kind = HttpAuth::Kind::kSigV4;
  a.access_key_id = c.access_key_id;
  a.secret_access_key = c.secret_access_key;
  a.session_token = c.session_token;
  a.region = region;
  a.service = "s3";
  return a;
}

// GCS OAuth tokens from the metadata server (Workload Identity), cached until shortly before expiry.
class MetadataTokens {
 public:
  MetadataTokens(std::string host, std::shared_ptr<const HttpClient> probe_client)
      : host_(std::move(host)), client_(std::move(probe_client)) {}

  // The token, "" when there is no metadata server (remembered), or an error when it answers badly.
  Result<std::string> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    if (absent_) return std::string();
    if (!token_.empty() && Clock::now() < expires_) return token_;
    const std::string what = "the GCE metadata server at " + host_;
    HttpRequest r;
    r.url = "http://" + host_ + "/computeMetadata/v1/instance/service-accounts/default/token";
    r.headers = {"Metadata-Flavor: Google"};
    r.follow_redirects = false;
    HttpResponse resp = client_->Perform(r);
    if (resp.status == 0) {
      absent_ = true;  // not on GCP: anonymous from here on
      return std::string();
    }
    if (resp.status != 200) {
      return Status::PermissionDenied(what + " answered HTTP " + std::to_string(resp.status) +
                                      " for a token (is Workload Identity set up for the pod's service account?)");
    }
    nlohmann::json j = nlohmann::json::parse(resp.body, nullptr, false);
    if (!j.is_object() || !j.contains("access_token") || !j["access_token"].is_string()) {
      return Status::PermissionDenied(what + " answered without an access_token");
    }
    token_ = j["access_token"].get<std::string>();
    int64_t ttl = j.contains("expires_in") && j["expires_in"].is_number_integer() ? j["expires_in"].get<int64_t>() : 300;
    expires_ = Clock::now() + std::chrono::seconds(std::max<int64_t>(ttl - 300, 10));
    return token_;
  }

 private:
  std::string host_;
  std::shared_ptr<const HttpClient> client_;
  std::mutex mu_;
  bool absent_ = false;
  std::string token_;
  Clock::time_point expires_;
};

Result<HttpAuth> HfAuth(const EnvLookup& env) {
  HttpAuth a;
  std::string token = Get(env, "HF_TOKEN");
  if (token.empty()) {
    const std::string path = Get(env, "HF_TOKEN_PATH");
    if (!path.empty()) token = ReadTokenFile(path).value_or("");
  }
  if (!token.empty()) {
    a.kind = HttpAuth::Kind::kBearer;
    a.bearer_token = token;
  }
  return a;
}

class HfStore final : public ObjectStore {
 public:
  HfStore(std::string endpoint, EnvLookup env, std::shared_ptr<const HttpClient> client)
      : endpoint_(StripSlashes(std::move(endpoint))), env_(std::move(env)), client_(std::move(client)) {}

  Result<std::string> Pin(const std::string& uri) override {
    LOOM_ASSIGN_OR_RETURN(HfUri u, ParseHfUri(uri));
    LOOM_ASSIGN_OR_RETURN(Commit c, Resolve(u));
    u.revision = c.sha;
    return FormatHfUri(u);
  }

  Result<std::unique_ptr<Source>> Open(const std::string& uri) override {
    LOOM_ASSIGN_OR_RETURN(HfUri u, ParseHfUri(uri));
    if (u.path.empty() || u.path.ends_with("/")) return Status::InvalidArgument(uri + " names a directory, not a file");
    LOOM_ASSIGN_OR_RETURN(Commit c, Resolve(u));
    RemoteObject o;
    o.uri = uri;
    o.url = endpoint_ + "/" + u.repo + "/resolve/" + UriEncode(c.sha, false) + "/" + UriEncode(u.path, true);
    o.auth = [env = env_]() -> Result<HttpAuth> { return HfAuth(env); };  // outlives the store
    o.version_prefix = "hf-commit:" + c.sha + " ";
    return OpenRemoteObject(std::move(o), client_);
  }

  Result<std::vector<std::string>> List(const std::string& uri) override {
    LOOM_ASSIGN_OR_RETURN(HfUri u, ParseHfUri(uri));
    LOOM_ASSIGN_OR_RETURN(Commit c, Resolve(u));
    std::string dir = u.path;
    if (!dir.empty() && !dir.ends_with("/")) dir += "/";
    std::vector<std::string> names;
    for (const std::string& f : c.files) {
      if (!f.starts_with(dir)) continue;
      const std::string name = f.substr(dir.size());
      if (!name.empty() && name.find('/') == std::string::npos) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  struct Commit {
    std::string sha;
    std::vector<std::string> files;
  };

  Result<HttpAuth> Auth() const { return HfAuth(env_); }

  // A revision (branch, tag or commit) -> its commit and file list, through the hub's API.
  Result<Commit> Resolve(const HfUri& u) {
    const std::string key = u.repo + "@" + u.revision;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = commits_.find(key); it != commits_.end()) return it->second;
    }
    const std::string what = "hf://" + u.repo + "@" + u.revision;
    const std::string url = endpoint_ + "/api/models/" + u.repo + "/revision/" + UriEncode(u.revision, false);
    Result<std::string> body = FetchSmallObject(
        *client_,
        [&]() -> Result<HttpRequest> {
          HttpRequest r;
          r.url = url;
          r.headers = {"Accept: application/json"};
          LOOM_ASSIGN_OR_RETURN(r.auth, Auth());
          return r;
        },
        what, 32 << 20);
    if (!body.ok()) {
      // The hub answers 401 for a repo that does not exist or is private when no token is given.
      return body.status();
    }
    nlohmann::json j = nlohmann::json::parse(*body, nullptr, false);
    if (!j.is_object() || !j.contains("sha") || !j["sha"].is_string()) {
      return Status::Unavailable(what + ": the hub's answer has no commit sha");
    }
    Commit c;
    c.sha = j["sha"].get<std::string>();
    if (c.sha.empty() || c.sha.size() > 64 || c.sha.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return Status::Unavailable(what + ": the hub answered an invalid commit sha");
    }
    if (j.contains("siblings") && j["siblings"].is_array()) {
      for (const auto& s : j["siblings"]) {
        if (s.is_object() && s.contains("rfilename") && s["rfilename"].is_string()) {
          c.files.push_back(s["rfilename"].get<std::string>());
        }
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    commits_[key] = c;
    HfUri pinned = u;
    pinned.revision = c.sha;
    commits_[pinned.repo + "@" + c.sha] = c;
    return c;
  }

  std::string endpoint_;
  EnvLookup env_;
  std::shared_ptr<const HttpClient> client_;
  std::mutex mu_;
  std::map<std::string, Commit> commits_;
};

}  // namespace

Result<BucketUri> ParseBucketUri(std::string_view uri) {
  BucketUri u;
  if (uri.starts_with("s3://")) u.scheme = "s3";
  else if (uri.starts_with("gs://")) u.scheme = "gs";
  else return Status::InvalidArgument("\"" + std::string(uri) + "\" is not an s3:// or gs:// URI");
  const std::string_view rest = uri.substr(5);
  const size_t slash = rest.find('/');
  u.bucket = std::string(rest.substr(0, slash));
  if (!ValidBucket(u.bucket)) {
    return Status::InvalidArgument("\"" + std::string(uri) + "\": \"" + u.bucket +
                                   "\" is not a bucket name (3-222 characters of a-z, 0-9, '.', '-', '_')");
  }
  if (slash != std::string_view::npos) u.key = std::string(rest.substr(slash + 1));
  if (u.key.find("//") != std::string::npos || u.key.starts_with("/")) {
    return Status::InvalidArgument("\"" + std::string(uri) + "\" has an empty path segment");
  }
  return u;
}

Result<HfUri> ParseHfUri(std::string_view uri) {
  if (!uri.starts_with("hf://")) return Status::InvalidArgument("\"" + std::string(uri) + "\" is not an hf:// URI");
  const std::string_view rest = uri.substr(5);
  const size_t first = rest.find('/');
  if (first == 0 || first == std::string_view::npos) {
    return Status::InvalidArgument("\"" + std::string(uri) + "\" must be hf://ORG/REPO[@REVISION][/PATH]");
  }
  const size_t second = rest.find('/', first + 1);
  std::string_view repo_rev = rest.substr(0, second);
  HfUri u;
  u.revision = "main";
  const size_t at = repo_rev.find('@');
  if (at != std::string_view::npos) {
    u.revision = std::string(repo_rev.substr(at + 1));
    repo_rev = repo_rev.substr(0, at);
  }
  u.repo = std::string(repo_rev);
  auto ok_name = [](std::string_view s) {
    return !s.empty() && s.size() <= 96 && s.front() != '.' && s.front() != '-' &&
           s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == std::string_view::npos;
  };
  const size_t slash = u.repo.find('/');
  if (!ok_name(std::string_view(u.repo).substr(0, slash)) || !ok_name(std::string_view(u.repo).substr(slash + 1))) {
    return Status::InvalidArgument("\"" + std::string(uri) + "\": \"" + u.repo + "\" is not an ORG/REPO name");
  }
  if (u.revision.empty() || u.revision.size() > 128 ||
      u.revision.find_first_of(" \t\r\n?#%") != std::string::npos) {
    return Status::InvalidArgument("\"" + std::string(uri) + "\" has an invalid revision after '@'");
  }
  if (second != std::string_view::npos) u.path = std::string(rest.substr(second + 1));
  if (u.path.find("..") != std::string::npos || u.path.find("//") != std::string::npos) {
    return Status::InvalidArgument("\"" + std::string(uri) + "\" has '..' or an empty segment in its path");
  }
  return u;
}

std::string FormatHfUri(const HfUri& u) {
  return "hf://" + u.repo + "@" + u.revision + (u.path.empty() ? "" : "/" + u.path);
}

bool IsObjectStoreUri(std::string_view uri) {
  return uri.starts_with("s3://") || uri.starts_with("gs://") || uri.starts_with("hf://");
}

bool NamesObject(std::string_view uri) { return uri.ends_with(".safetensors") || uri.ends_with(".json"); }

std::string SiblingUri(std::string_view uri, std::string_view name) {
  // s3://b/p/x.json -> s3://b/p/NAME; hf://o/r@v/x.json -> hf://o/r@v/NAME
  const size_t scheme_end = uri.find("://");
  size_t root_end = uri.find('/', scheme_end == std::string_view::npos ? 0 : scheme_end + 3);
  if (uri.starts_with("hf://") && root_end != std::string_view::npos) root_end = uri.find('/', root_end + 1);
  const size_t slash = uri.rfind('/');
  if (root_end == std::string_view::npos || slash < root_end) {
    return std::string(uri) + "/" + std::string(name);
  }
  return std::string(uri.substr(0, slash + 1)) + std::string(name);
}

std::string ChildUri(std::string_view uri, std::string_view name) {
  while (uri.ends_with("/")) uri.remove_suffix(1);
  return std::string(uri) + "/" + std::string(name);
}

std::unique_ptr<ObjectStore> NewS3Store(const StoreOptions& options, std::shared_ptr<const HttpClient> client,
                                        EnvLookup env) {
  std::string region = options.s3_region;
  if (region.empty()) region = Get(env, "AWS_REGION");
  if (region.empty()) region = Get(env, "AWS_DEFAULT_REGION");
  if (region.empty()) region = "us-east-1";
  std::string endpoint = options.s3_endpoint;
  if (endpoint.empty()) endpoint = Get(env, "AWS_ENDPOINT_URL_S3");
  if (endpoint.empty()) endpoint = Get(env, "AWS_ENDPOINT_URL");
  const bool aws_default = endpoint.empty();
  if (aws_default) endpoint = "https://s3." + region + ".amazonaws.com";
  Result<BucketEndpoint> e = ParseEndpoint(endpoint, "the S3 endpoint");
  if (e.ok()) {
    const bool on_aws = aws_default || e->host.ends_with(".amazonaws.com");
    e->virtual_hosted = options.s3_addressing == "virtual" || (options.s3_addressing == "auto" && on_aws);
  }
  auto chain = std::make_shared<AwsCredentialChain>(env, client, region);
  Authorizer auth = [chain, region]() -> Result<HttpAuth> {
    LOOM_ASSIGN_OR_RETURN(AwsCredentials c, chain->Get());
    return SigV4(c, region);
  };
  return std::make_unique<BucketStore>("s3", std::move(e), aws_default, std::move(auth), std::move(client));
}

std::unique_ptr<ObjectStore> NewGcsStore(const StoreOptions& options, std::shared_ptr<const HttpClient> client,
                                         EnvLookup env) {
  const std::string endpoint = options.gcs_endpoint.empty() ? "https://storage.googleapis.com" : options.gcs_endpoint;
  Result<BucketEndpoint> e = ParseEndpoint(endpoint, "the GCS endpoint");
  std::string metadata_host = Get(env, "GCE_METADATA_HOST");
  if (metadata_host.empty()) metadata_host = "metadata.google.internal";
  HttpOptions probe = client->options();
  probe.retries = 0;
  probe.connect_timeout_s = 2;
  auto metadata = std::make_shared<MetadataTokens>(metadata_host, std::make_shared<const HttpClient>(probe));
  Authorizer auth = [env, metadata]() -> Result<HttpAuth> {
    HttpAuth a;
    const std::string id = Get(env, "GCS_ACCESS_KEY_ID"), secret = Get(env, "GCS_SECRET_ACCESS_KEY");
    if (!id.empty() || !secret.empty()) {
      if (id.empty() || secret.empty()) {
        return Status::PermissionDenied("GCS_ACCESS_KEY_ID and GCS_SECRET_ACCESS_KEY must be set together");
      }
      return SigV4(AwsCredentials{id, secret, "", "GCS HMAC key", std::nullopt}, "auto");
    }
    const std::string token_file = Get(env, "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE");
    if (!token_file.empty()) {
      if (std::optional<std::string> t = ReadTokenFile(token_file)) {
        a.kind = HttpAuth::Kind::kBearer;
        a.bearer_token = *t;
        return a;
      }
    }
    LOOM_ASSIGN_OR_RETURN(std::string token, metadata->Get());
    if (!token.empty()) {
      a.kind = HttpAuth::Kind::kBearer;
      a.bearer_token = token;
    }
    return a;
  };
  return std::make_unique<BucketStore>("gs", std::move(e), false, std::move(auth), std::move(client));
}

std::unique_ptr<ObjectStore> NewHfStore(const StoreOptions& options, std::shared_ptr<const HttpClient> client,
                                        EnvLookup env) {
  std::string endpoint = options.hf_endpoint;
  if (endpoint.empty()) endpoint = Get(env, "HF_ENDPOINT");
  if (endpoint.empty()) endpoint = "https://huggingface.co";
  return std::make_unique<HfStore>(endpoint, std::move(env), std::move(client));
}

}  // namespace loom
