#include "loom/curl_http.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "loom/s3_xml.h"

namespace loom {
namespace {

constexpr size_t kMaxErrorBody = 64 << 10;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return std::string(s);
}

// The state of one transfer, seen by libcurl's callbacks.
struct Transfer {
  HttpResponse* response;
  const HeadersCheck* check;
  const BodySink* sink;
  bool follow;
  bool headers_done = false;  // the final answer's headers have been checked
};

bool IsRedirect(long status) { return status == 301 || status == 302 || status == 303 || status == 307 || status == 308; }

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::string_view line(data, size * n);
  HttpResponse& r = *t->response;
  if (line.starts_with("HTTP/")) {  // a new answer (after a redirect or a 100 Continue)
    r.headers.clear();
    const size_t sp = line.find(' ');
    r.status = sp == std::string_view::npos ? 0 : std::strtol(std::string(line.substr(sp + 1, 3)).c_str(), nullptr, 10);
    return size * n;
  }
  if (line == "\r\n" || line == "\n") {
    const bool interim = r.status < 200 || (t->follow && IsRedirect(r.status) && r.headers.count("location"));
    if (!interim && !t->headers_done) {
      t->headers_done = true;
      if (*t->check && !(*t->check)(r)) {
        r.aborted = true;
        return 0;
      }
    }
    return size * n;
  }
  const size_t colon = line.find(':');
  if (colon != std::string_view::npos) r.headers[Lower(line.substr(0, colon))] = Trim(line.substr(colon + 1));
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  HttpResponse& r = *t->response;
  const size_t len = size * n;
  if (!t->headers_done) return len;  // a redirect's body
  r.body_bytes += len;
  if (r.status >= 200 && r.status < 300 && *t->sink) {
    if (!(*t->sink)(data, len)) {
      r.aborted = true;
      return 0;
    }
    return len;
  }
  const size_t cap = r.status >= 200 && r.status < 300 ? kMaxBufferedBody : kMaxErrorBody;
  if (r.body.size() < cap) r.body.append(data, std::min(len, cap - r.body.size()));
  return len;
}

}  // namespace

std::string HttpResponse::Header(std::string_view lower_name) const {
  auto it = headers.find(std::string(lower_name));
  return it == headers.end() ? std::string() : it->second;
}

struct HttpClient::Handle {
  Handle() : curl(curl_easy_init()) {}
  ~Handle() {
    if (curl) curl_easy_cleanup(curl);
  }
  CURL* curl;
};

HttpClient::HttpClient(HttpOptions options) : options_(std::move(options)) { GlobalInit(); }
HttpClient::~HttpClient() = default;

std::unique_ptr<HttpClient::Handle> HttpClient::Borrow() const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!pool_.empty()) {
      auto h = std::move(pool_.back());
      pool_.pop_back();
      curl_easy_reset(h->curl);  // keeps its live connections
      return h;
    }
  }
  return std::make_unique<Handle>();
}

void HttpClient::Return(std::unique_ptr<Handle> h) const {
  std::lock_guard<std::mutex> lock(mu_);
  pool_.push_back(std::move(h));
}

HttpResponse HttpClient::Perform(const HttpRequest& req, const HeadersCheck& check, const BodySink& sink) const {
  requests_.fetch_add(1, std::memory_order_relaxed);
  HttpResponse response;
  std::unique_ptr<Handle> h = Borrow();
  if (h->curl == nullptr) {
    response.error = "curl_easy_init failed";
    return response;
  }
  CURL* c = h->curl;
  Transfer t{&response, &check, &sink, req.follow_redirects};
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, req.follow_redirects ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(options_.connect_timeout_s));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.read_timeout_s));
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  if (!options_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
  if (req.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (req.method == "POST" || req.method == "PUT") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
    if (req.method == "PUT") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
  }
  std::string range;
  if (req.range) {
    range = std::to_string(req.range->first) + "-" + std::to_string(req.range->second);
    curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
  }
  curl_slist* raw = nullptr;
  for (const std::string& hdr : req.headers) raw = curl_slist_append(raw, hdr.c_str());
  raw = curl_slist_append(raw, "Accept-Encoding: identity");
  raw = curl_slist_append(raw, "Expect:");
  std::string sigv4;
  if (req.auth.kind == HttpAuth::Kind::kSigV4) {
    // libcurl computes the signature (AWS4-HMAC-SHA256) over the method, path, query, host, the
    // x-amz-* headers and every header given here.
    sigv4 = "aws:amz:" + req.auth.region + ":" + req.auth.service;
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4.c_str());
    curl_easy_setopt(c, CURLOPT_USERNAME, req.auth.access_key_id.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, req.auth.secret_access_key.c_str());
    if (!req.auth.session_token.empty()) {
      raw = curl_slist_append(raw, ("x-amz-security-token: " + req.auth.session_token).c_str());
    }
  } else if (req.auth.kind == HttpAuth::Kind::kBearer) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
    curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, req.auth.bearer_token.c_str());
  }
  Slist headers(raw);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

  const CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code != 0) response.status = code;
  if (rc != CURLE_OK && !response.aborted) {
    response.error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (!response.error.empty() && response.error.back() == '\n') response.error.pop_back();
    if (!t.headers_done) response.status = 0;  // no complete answer
  } else if (rc == CURLE_OK && !t.headers_done && *t.check && response.status >= 200) {
    // An answer with no header terminator seen (cannot happen with HTTP/1.1; be safe).
    if (!check(response)) response.aborted = true;
  }
  // Wipe the secret from the handle before it goes back to the pool.
  curl_easy_setopt(c, CURLOPT_PASSWORD, "");
  curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, "");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  Return(std::move(h));
  return response;
}

bool IsThrottled(const HttpResponse& r) {
  if (r.status == 429) return true;
  if (r.status == 503) return true;  // S3 SlowDown, GCS and HF rate limits
  return false;
}

bool IsTransient(const HttpResponse& r) {
  return (r.status == 0 && !r.aborted) || r.status == 408 || (r.status >= 500 && r.status != 501 && r.status != 503);
}

int64_t BackoffMs(const HttpOptions& o, int attempt, bool jitter, const std::string& retry_after, double unit) {
  const int shift = std::min(attempt - 1, 20);
  const int64_t bound = std::min<int64_t>(o.backoff_cap_ms, static_cast<int64_t>(o.backoff_base_ms) << shift);
  int64_t ms = jitter ? static_cast<int64_t>(unit * static_cast<double>(bound + 1)) : bound;
  if (!retry_after.empty() && retry_after.size() <= 6 &&
      retry_after.find_first_not_of("0123456789") == std::string::npos) {
    ms = std::max<int64_t>(ms, std::min<int64_t>(o.backoff_cap_ms, std::stoll(retry_after) * 1000));
  }
  return std::max<int64_t>(ms, 0);
}

FetchResult FetchWithRetries(const HttpClient& client, const std::function<Result<HttpRequest>()>& make,
                             Status* make_error, const HeadersCheck& check,
                             const std::function<BodySink()>& sink_for_attempt,
                             const std::function<bool(const HttpResponse&)>& complete) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  const HttpOptions& o = client.options();
  FetchResult out;
  int ordinary = 0, throttled = 0;
  while (true) {
    Result<HttpRequest> req = make();
    if (!req.ok()) {
      *make_error = req.status();
      return out;
    }
    const BodySink sink = sink_for_attempt ? sink_for_attempt() : BodySink();
    out.response = client.Perform(*req, check, sink);
    ++out.attempts;
    const HttpResponse& r = out.response;
    if (r.aborted) return out;
    bool retry_throttle = false, retry_ordinary = false;
    if (IsThrottled(r)) {
      ++out.throttled;
      retry_throttle = throttled++ < o.throttle_retries;
    } else if (IsTransient(r)) {
      retry_ordinary = ordinary++ < o.retries;
    } else if (r.status >= 200 && r.status < 300 && complete && !complete(r)) {
      retry_ordinary = ordinary++ < o.retries;
      if (!retry_ordinary) return out;
    } else {
      return out;
    }
    if (!retry_throttle && !retry_ordinary) return out;
    const int attempt = retry_throttle ? throttled : ordinary;
    const double unit = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    const int64_t ms = BackoffMs(o, attempt, retry_throttle, r.Header("retry-after"), unit);
    out.waited_s += static_cast<double>(ms) / 1000.0;
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  }
}

Status StatusForAnswer(const FetchResult& f, const std::string& what) {
  const HttpResponse& r = f.response;
  if (r.status == 0) {
    return Status::Unavailable(what + ": " + (r.error.empty() ? "no answer" : r.error) +
                               (f.attempts > 1 ? " (after " + std::to_string(f.attempts) + " attempts)" : ""));
  }
  const S3ErrorBody e = ParseS3Error(r.body);
  std::string detail = "HTTP " + std::to_string(r.status);
  if (!e.code.empty()) detail += " " + e.code;
  if (!e.message.empty()) detail += ": " + e.message;
  if (r.status == 404 || r.status == 410) return Status::Unavailable(what + ": not found (" + detail + ")");
  if (r.status == 401 || r.status == 403) {
    return Status::PermissionDenied(what + ": access refused (" + detail +
                                    "); check model.credentials and what they are allowed to read");
  }
  if (IsThrottled(r)) {
    char waited[32];
    std::snprintf(waited, sizeof waited, "%.1f", f.waited_s);
    return Status::Throttled(what + ": the store kept throttling (" + detail + ") through " +
                             std::to_string(f.attempts) + " attempts over " + waited +
                             " s of backoff; retry later or lower --threads");
  }
  return Status::Unavailable(what + ": " + detail +
                             (f.attempts > 1 ? " (after " + std::to_string(f.attempts) + " attempts)" : ""));
}

Result<std::string> FetchSmallObject(const HttpClient& client, const std::function<Result<HttpRequest>()>& make,
                                     const std::string& what, size_t max_bytes) {
  Status make_error;
  FetchResult f = FetchWithRetries(client, make, &make_error, {}, {},
                                   [](const HttpResponse& r) { return r.error.empty(); });
  LOOM_RETURN_IF_ERROR(make_error);
  if (f.response.status < 200 || f.response.status >= 300) return StatusForAnswer(f, what);
  if (f.response.body_bytes > max_bytes || f.response.body.size() > max_bytes) {
    return Status::InvalidModel(what + " is over the limit of " + std::to_string(max_bytes) + " bytes");
  }
  if (!f.response.error.empty()) return Status::Unavailable(what + ": " + f.response.error);
  return std::move(f.response.body);
}

std::string UriEncode(std::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace loom
