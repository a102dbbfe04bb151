// HttpClient: the sidecar's one HTTP client, on Debian's libcurl. It keeps a pool of easy handles
// (each keeps its keep-alive connections across requests), so concurrent Perform calls from the
// stager's reader threads each get their own handle and run in parallel. SigV4 signing is
// libcurl's (CURLOPT_AWS_SIGV4), bearer tokens go through CURLOPT_XOAUTH2_BEARER (neither is sent
// to another host on a redirect). FetchWithRetries adds the retry policy every remote source shares:
// transport errors and 5xx retried with exponential backoff, throttling (429, 503, S3 SlowDown)
// with full-jitter backoff honouring Retry-After, on its own larger budget.
// Thread-safety: HttpClient is safe to share; Perform may be called concurrently.
#ifndef LOOM_CURL_HTTP_H_
#define LOOM_CURL_HTTP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/status.h"

namespace loom {

struct HttpOptions {
  int connect_timeout_s = 10;
  int read_timeout_s = 60;     // a transfer with no byte for this long fails (and is retried)
  int retries = 3;             // extra attempts after transport errors and 5xx
  int throttle_retries = 8;    // extra attempts after 429 / 503 SlowDown (full jitter)
  int backoff_base_ms = 100;   // first backoff; doubles per attempt
  int backoff_cap_ms = 20000;  // longest single wait
  std::string ca_file;         // PEM bundle for https; empty: the system store
};

struct HttpAuth {
  enum class Kind { kNone, kSigV4, kBearer };
  Kind kind = Kind::kNone;
  std::string access_key_id;      // SigV4
  std::string secret_access_key;  // SigV4
  std::string session_token;      // SigV4, optional (sent as x-amz-security-token)
  std::string region;             // SigV4 scope, e.g. us-east-1 ("auto" for GCS)
  std::string service = "s3";     // SigV4 scope
  std::string bearer_token;       // Bearer
};

struct HttpRequest {
  std::string method = "GET";                          // GET, HEAD, POST or PUT (tests)
  std::string url;
  std::vector<std::string> headers;                    // "Name: value"
  std::optional<std::pair<uint64_t, uint64_t>> range;  // inclusive [first, last]
  HttpAuth auth;
  std::string body;  // POST / PUT body (POST: application/x-www-form-urlencoded unless a header says)
  bool follow_redirects = true;
};

struct HttpResponse {
  long status = 0;     // 0: no HTTP answer; see error
  std::string error;   // transport failure (connect, timeout, TLS); "" when an answer came
  bool aborted = false;  // a HeadersCheck or BodySink stopped the transfer
  std::map<std::string, std::string> headers;  // of the final answer; names lower-cased
  std::string body;    // error bodies (first 64 KiB) and bodies with no sink (up to kMaxBufferedBody)
  uint64_t body_bytes = 0;  // body bytes received (streamed or buffered)
  std::string Header(std::string_view lower_name) const;
};

inline constexpr size_t kMaxBufferedBody = 64 << 20;

// Called once the final answer's status and headers are in, before its body: false aborts.
using HeadersCheck = std::function<bool(const HttpResponse&)>;
// Receives the body of a 2xx answer; false aborts.
using BodySink = std::function<bool(const char* data, size_t len)>;

class HttpClient {
 public:
  explicit HttpClient(HttpOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  const HttpOptions& options() const { return options_; }
  HttpResponse Perform(const HttpRequest& request, const HeadersCheck& check = {}, const BodySink& sink = {}) const;

  // Every Perform so far, for tests and metrics.
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }

 private:
  struct Handle;
  std::unique_ptr<Handle> Borrow() const;
  void Return(std::unique_ptr<Handle> h) const;

  HttpOptions options_;
  mutable std::mutex mu_;
  mutable std::vector<std::unique_ptr<Handle>> pool_;
  mutable std::atomic<uint64_t> requests_{0};
};

// Is this answer throttling (429, or 503 / S3 "SlowDown")? Retried on the throttle budget.
bool IsThrottled(const HttpResponse& r);
// Transport errors, 408, 5xx: retried on the ordinary budget.
bool IsTransient(const HttpResponse& r);

// The wait before retry `attempt` (1-based): full jitter, uniform in [0, min(cap, base * 2^(n-1))]
// for throttling, or that bound itself otherwise; a Retry-After of N seconds raises it to N s (at
// most the cap). `unit` in [0, 1) is the random draw (tests pass their own).
int64_t BackoffMs(const HttpOptions& o, int attempt, bool jitter, const std::string& retry_after, double unit);

struct FetchResult {
  HttpResponse response;  // the last answer
  int attempts = 0;
  int throttled = 0;      // answers that were throttling
  double waited_s = 0;    // total backoff
};

// Performs a request until it gets an answer that is neither transient nor throttling, or the
// budgets run out. `make` builds each attempt's request (credentials may have been refreshed) and
// `sink_for_attempt` a fresh sink; `complete` says whether a 2xx answer got its whole body (an
// incomplete one is retried like a transport error). An abort by the check is returned at once.
FetchResult FetchWithRetries(const HttpClient& client, const std::function<Result<HttpRequest>()>& make,
                             Status* make_error, const HeadersCheck& check = {},
                             const std::function<BodySink()>& sink_for_attempt = {},
                             const std::function<bool(const HttpResponse&)>& complete = {});

// Reads a whole small body (an index, a listing, an STS answer) through FetchWithRetries: a 2xx
// answer's body, or StatusForAnswer; InvalidModel when it is over max_bytes.
Result<std::string> FetchSmallObject(const HttpClient& client, const std::function<Result<HttpRequest>()>& make,
                                     const std::string& what, size_t max_bytes);

// The Status for an answer that is not a success, naming which failure: not found (404, 410:
// Unavailable, exit 3), forbidden (401, 403: PermissionDenied, exit 9), throttled past the retry
// budget (Throttled, exit 10), other 4xx/5xx and transport errors (Unavailable). `what` names the
// object as the user wrote it (never a signed URL). S3/GCS error codes and messages are quoted.
Status StatusForAnswer(const FetchResult& fetched, const std::string& what);

// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters kept, '/' kept when
// `keep_slash`, everything else %XX (upper case).
std::string UriEncode(std::string_view s, bool keep_slash);

}  // namespace loom

#endif  // LOOM_CURL_HTTP_H_
