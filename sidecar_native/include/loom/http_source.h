// A Source over an HTTP(S) object, read with parallel Range requests (cpp-httplib). Each
// concurrent ReadV borrows its own keep-alive connection from a small pool, so the Source is
// thread-safe. Redirects are followed; transient failures (connection errors, 5xx, short
// bodies) are retried with exponential backoff.
// Every range read is pinned to the object version seen when it was opened: If-Match with its
// strong ETag (If-Unmodified-Since with its Last-Modified when it has no ETag), and the ETag or
// Last-Modified of each response compared, for servers that ignore the precondition. A changed
// object fails the read with SourceChanged (exit 8), never retried: bytes of two versions must
// not be published as one.
#ifndef LOOM_HTTP_SOURCE_H_
#define LOOM_HTTP_SOURCE_H_

#include <memory>
#include <string>
#include <string_view>

#include "loom/source.h"

namespace loom {

struct HttpOptions {
  int connect_timeout_s = 10;
  int read_timeout_s = 60;
  int retries = 3;  // extra attempts per request after the first
  std::string ca_file;  // PEM bundle for https; empty: the system store
};

struct ParsedUrl {
  std::string scheme;       // "http" or "https"
  std::string host_port;    // "scheme://host[:port]", what httplib::Client takes
  std::string path;         // "/path?query", at least "/"
};

bool IsHttpUrl(std::string_view uri);
Result<ParsedUrl> ParseUrl(std::string_view url);
// The URL of `name` in the same "directory" as `url` (query dropped), for shards of an index.
Result<std::string> SiblingUrl(std::string_view url, std::string_view name);

// Learns the size (HEAD, or a 1-byte Range GET when HEAD is refused) and version tag.
Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, const HttpOptions& options);

}  // namespace loom

#endif  // LOOM_HTTP_SOURCE_H_
