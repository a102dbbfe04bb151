// AWS credentials the way the AWS SDKs find them, in this order:
//   1. environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
//   2. web identity (IRSA): AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, exchanged through STS
//      AssumeRoleWithWebIdentity (endpoint AWS_ENDPOINT_URL_STS, else the regional
//      https://sts.REGION.amazonaws.com), cached until five minutes before they expire and the
//      token file re-read for each exchange (the kubelet rotates it);
//   3. the shared credentials file: AWS_SHARED_CREDENTIALS_FILE (default ~/.aws/credentials),
//      profile AWS_PROFILE (default "default"); a missing file is skipped.
// With none of them, requests go unsigned (public buckets). Nothing here ever puts a secret, a
// session token or a web-identity token into a Status message.
// Thread-safety: ParseCredentialsFile is pure; AwsCredentialChain::Get may be called concurrently.
#ifndef LOOM_AWS_CREDENTIALS_H_
#define LOOM_AWS_CREDENTIALS_H_

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "loom/curl_http.h"
#include "loom/status.h"

namespace loom {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  std::string source;  // where they came from, for messages: "environment", "web identity (ROLE_ARN)", ...
  std::optional<std::chrono::system_clock::time_point> expiration;
  bool empty() const { return access_key_id.empty(); }
};

// Looks up an environment variable; std::nullopt when unset. Tests pass their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup ProcessEnv();

// One profile of an AWS shared credentials file (INI: `[profile]`, `key = value`, `#`/`;`
// comments). InvalidArgument on malformed lines; NotFound when the profile is absent or lacks
// aws_access_key_id / aws_secret_access_key. Messages never include values.
Result<AwsCredentials> ParseCredentialsFile(std::string_view text, std::string_view profile);

// "2026-01-01T00:00:00Z" (fractional seconds allowed; years 1970-2200) -> time point.
std::optional<std::chrono::system_clock::time_point> ParseIso8601(std::string_view s);

class AwsCredentialChain {
 public:
  // `client` performs the STS call; `region` picks the regional STS endpoint.
  AwsCredentialChain(EnvLookup env, std::shared_ptr<const HttpClient> client, std::string region);

  // The current credentials (empty: none configured, sign nothing).
  Result<AwsCredentials> Get();

 private:
  Result<AwsCredentials> AssumeRoleWithWebIdentity(const std::string& role_arn, const std::string& token_file);

  EnvLookup env_;
  std::shared_ptr<const HttpClient> client_;
  std::string region_;
  std::mutex mu_;
  std::optional<AwsCredentials> cached_;  // web identity only
};

}  // namespace loom

#endif  // LOOM_AWS_CREDENTIALS_H_
