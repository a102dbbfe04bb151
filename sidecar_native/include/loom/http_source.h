// A Source over one remote object (an http(s) URL, an S3 / GCS object, a Hugging Face file), read
// with Range requests through the shared libcurl HttpClient: each concurrent ReadV performs on its
// own pooled handle and keep-alive connection, so the stager's reader threads fetch ranges in
// parallel. Redirects are followed; transport errors and 5xx are retried with exponential
// backoff, throttling (429/503) with full jitter (see curl_http.h).
// Every range read is pinned to the object version seen when it was opened: If-Match with its
// strong ETag (If-Unmodified-Since with its Last-Modified when it has no ETag), and the ETag or
// Last-Modified of each response compared, for servers that ignore the precondition. A changed
// object fails the read with SourceChanged (exit 8), never retried: bytes of two versions must
// not be published as one. Messages name the object as the user wrote it (s3://bucket/key), never
// the request URL, which may carry a signature.
// Thread-safety: the Source is safe for concurrent ReadV.
#ifndef LOOM_HTTP_SOURCE_H_
#define LOOM_HTTP_SOURCE_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "loom/curl_http.h"
#include "loom/source.h"

namespace loom {

struct ParsedUrl {
  std::string scheme;       // "http" or "https"
  std::string host_port;    // "scheme://host[:port]"
  std::string path;         // "/path?query", at least "/"
};

bool IsHttpUrl(std::string_view uri);
Result<ParsedUrl> ParseUrl(std::string_view url);
// The URL of `name` in the same "directory" as `url` (query dropped), for shards of an index.
Result<std::string> SiblingUrl(std::string_view url, std::string_view name);

// What a remote Source reads and how it authenticates.
struct RemoteObject {
  std::string uri;                          // as the user named it: messages, fingerprints
  std::string url;                          // what is requested
  std::function<Result<HttpAuth>()> auth;   // called per request (credentials may refresh); empty: none
  std::vector<std::string> headers;         // extra request headers ("Name: value")
  std::string version_prefix;               // prepended to version(), e.g. "hf-commit:<sha> "
};

// Learns the size (HEAD, or a 1-byte Range GET when HEAD is refused) and the version tag.
Result<std::unique_ptr<Source>> OpenRemoteObject(RemoteObject object, std::shared_ptr<const HttpClient> client);

// A plain http(s) URL, no credentials.
Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, std::shared_ptr<const HttpClient> client);
Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, const HttpOptions& options);

}  // namespace loom

#endif  // LOOM_HTTP_SOURCE_H_
