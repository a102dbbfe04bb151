#include "loom/aws_credentials.h"

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>

#include "loom/s3_xml.h"

namespace loom {
namespace {

std::optional<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::string out(max_bytes + 1, '\0');
  f.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<size_t>(f.gcount()));
  if (out.size() > max_bytes) return std::nullopt;
  return out;
}

constexpr auto kRefreshMargin = std::chrono::minutes(5);

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

AwsCredentialChain::AwsCredentialChain(EnvLookup env, std::shared_ptr<const HttpClient> client, std::string region)
    : env_(std::move(env)), client_(std::move(client)), region_(std::move(region)) {}

Result<AwsCredentials> AwsCredentialChain::Get() {
  auto get = [&](const char* name) { return env_(name).value_or(""); };
  const std::string key = get("AWS_ACCESS_KEY_ID"), secret = get("AWS_SECRET_ACCESS_KEY");
  if (!key.empty() || !secret.empty()) {
    if (key.empty() || secret.empty()) {
      return Status::PermissionDenied("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    }
    return AwsCredentials{key, secret, get("AWS_SESSION_TOKEN"), "environment", std::nullopt};
  }
  const std::string role = get("AWS_ROLE_ARN"), token_file = get("AWS_WEB_IDENTITY_TOKEN_FILE");
  if (!role.empty() && !token_file.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::system_clock::now();
    if (cached_ && (!cached_->expiration || *cached_->expiration - kRefreshMargin > now)) return *cached_;
    LOOM_ASSIGN_OR_RETURN(AwsCredentials fresh, AssumeRoleWithWebIdentity(role, token_file));
    cached_ = fresh;
    return fresh;
  }
  std::string file = get("AWS_SHARED_CREDENTIALS_FILE");
  const bool explicit_file = !file.empty();
  if (file.empty() && !get("HOME").empty()) file = get("HOME") + "/.aws/credentials";
  if (!file.empty()) {
    std::optional<std::string> text = ReadSmallFile(file, 1 << 20);
    if (text) {
      std::string profile = get("AWS_PROFILE");
      if (profile.empty()) profile = "default";
      Result<AwsCredentials> c = ParseCredentialsFile(*text, profile);
      if (!c.ok()) {
        if (c.status().code() == StatusCode::kNotFound && !explicit_file) return AwsCredentials{};
        return Status::PermissionDenied("credentials file " + file + ": " + c.status().message());
      }
      c->source = "credentials file " + file + " [" + profile + "]";
      return c;
    }
  }
  return AwsCredentials{};  // anonymous
}

Result<AwsCredentials> AwsCredentialChain::AssumeRoleWithWebIdentity(const std::string& role_arn,
                                                                    const std::string& token_file) {
  std::optional<std::string> token = ReadSmallFile(token_file, 64 << 10);
  if (!token) {
    return Status::PermissionDenied("AWS_WEB_IDENTITY_TOKEN_FILE " + token_file +
                                    " cannot be read (is the projected service-account token mounted?)");
  }
  while (!token->empty() && (token->back() == '\n' || token->back() == '\r' || token->back() == ' ')) token->pop_back();
  std::string endpoint = env_("AWS_ENDPOINT_URL_STS").value_or("");
  if (endpoint.empty()) {
    endpoint = region_.empty() ? "https://sts.amazonaws.com" : "https://sts." + region_ + ".amazonaws.com";
  }
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  std::string session = env_("AWS_ROLE_SESSION_NAME").value_or("");
  if (session.empty()) session = "loom-sidecar-" + std::to_string(std::time(nullptr));
  const std::string what = "STS AssumeRoleWithWebIdentity for " + role_arn + " at " + endpoint;
  HttpRequest req;
  req.method = "POST";
  req.url = endpoint + "/";
  // The token goes in the body, never in a URL that a proxy or server might log.
  req.body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&DurationSeconds=3600&RoleArn=" +
             UriEncode(role_arn, false) + "&RoleSessionName=" + UriEncode(session, false) +
             "&WebIdentityToken=" + UriEncode(*token, false);
  req.headers.push_back("Content-Type: application/x-www-form-urlencoded");
  req.headers.push_back("Accept: application/xml");
  Result<std::string> body = FetchSmallObject(*client_, [&]() -> Result<HttpRequest> { return req; }, what, 1 << 20);
  if (!body.ok()) {
    if (body.status().code() == StatusCode::kUnavailable || body.status().code() == StatusCode::kPermissionDenied) {
      return Status::PermissionDenied(body.status().message());
    }
    return body.status();
  }
  Result<StsCredentials> sts = ParseAssumeRoleWithWebIdentity(*body);
  if (!sts.ok()) return Status::PermissionDenied(what + ": " + sts.status().message());
  AwsCredentials out{sts->access_key_id, sts->secret_access_key, sts->session_token,
                     "web identity (" + role_arn + ")", ParseIso8601(sts->expiration)};
  return out;
}

}  // namespace loom
