#include "loom/http_source.h"

#include <cstring>
#include <optional>

namespace loom {
namespace {

std::optional<uint64_t> ParseU64(const std::string& s) {
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoull(s);
}

class RemoteSource final : public Source {
 public:
  RemoteSource(RemoteObject object, std::shared_ptr<const HttpClient> client)
      : o_(std::move(object)), client_(std::move(client)) {}

  Status Init() {
    // HEAD first; some object stores (presigned GET URLs) refuse it, so fall back to bytes=0-0.
    Status make_error;
    FetchResult head = FetchWithRetries(*client_, [&] { return Request("HEAD"); }, &make_error);
    LOOM_RETURN_IF_ERROR(make_error);
    if (head.response.status == 200) {
      if (std::optional<uint64_t> length = ParseU64(head.response.Header("content-length"))) {
        size_ = *length;
        SetVersion(head.response);
        return Status::OK();
      }
    }
    if (head.response.status == 401 || head.response.status == 403 || head.response.status == 404 ||
        head.response.status == 410 || head.response.status == 0 || IsThrottled(head.response)) {
      return StatusForAnswer(head, o_.uri);  // the GET would answer the same
    }
    FetchResult probe = FetchWithRetries(
        *client_,
        [&]() -> Result<HttpRequest> {
          LOOM_ASSIGN_OR_RETURN(HttpRequest r, Request("GET"));
          r.range = {0, 0};
          return r;
        },
        &make_error);
    LOOM_RETURN_IF_ERROR(make_error);
    if (probe.response.status == 206) {
      const std::string cr = probe.response.Header("content-range");  // bytes 0-0/TOTAL
      const size_t slash = cr.rfind('/');
      std::optional<uint64_t> total;
      if (slash != std::string::npos) total = ParseU64(cr.substr(slash + 1));
      if (!total) return Status::Unavailable(o_.uri + ": the server did not report the object size in Content-Range");
      size_ = *total;
      SetVersion(probe.response);
      return Status::OK();
    }
    if (probe.response.status == 200) {
      return Status::Unavailable(o_.uri + ": the server ignores Range requests (answered 200 to bytes=0-0)");
    }
    return StatusForAnswer(probe, o_.uri);
  }

  const std::string& uri() const override { return o_.uri; }
  uint64_t size() const override { return size_; }
  std::string version() const override { return o_.version_prefix + version_; }

  Status ReadV(uint64_t offset, std::span<const std::span<uint8_t>> pieces) const override {
    uint64_t total = 0;
    for (const auto& p : pieces) total += p.size();
    if (total == 0) return Status::OK();
    if (offset + total > size_) return Status::Internal("read past the end of " + o_.uri);
    const std::string range = "bytes " + std::to_string(offset) + "-" + std::to_string(offset + total - 1);
    std::string changed;  // the version a response reported, when it is not the one opened
    size_t piece = 0, piece_off = 0;
    uint64_t received = 0;
    Status make_error;
    FetchResult f = FetchWithRetries(
        *client_,
        [&]() -> Result<HttpRequest> {
          LOOM_ASSIGN_OR_RETURN(HttpRequest r, Request("GET"));
          r.range = {offset, offset + total - 1};
          if (!etag_.empty() && !etag_.starts_with("W/")) {
            r.headers.push_back("If-Match: " + etag_);  // a weak tag never matches If-Match
          } else if (etag_.empty() && !last_modified_.empty()) {
            r.headers.push_back("If-Unmodified-Since: " + last_modified_);
          }
          return r;
        },
        &make_error,
        [&](const HttpResponse& r) {
          // 206 with our range, or 200 with the whole object when the range was all of it.
          const bool ok = r.status == 206 || (r.status == 200 && offset == 0 && total == size_);
          if (ok) changed = ChangedVersion(r);
          return changed.empty();
        },
        [&]() -> BodySink {
          piece = 0, piece_off = 0, received = 0;
          return [&](const char* data, size_t len) {
            if (received + len > total) return false;  // the server sent more than asked
            received += len;
            while (len > 0) {
              const size_t n = std::min(len, pieces[piece].size() - piece_off);
              std::memcpy(pieces[piece].data() + piece_off, data, n);
              data += n, len -= n, piece_off += n;
              if (piece_off == pieces[piece].size()) ++piece, piece_off = 0;
            }
            return true;
          };
        },
        [&](const HttpResponse& r) { return r.error.empty() && received == total; });
    LOOM_RETURN_IF_ERROR(make_error);
    const HttpResponse& r = f.response;
    if (r.status == 412 || !changed.empty()) {
      const std::string why = r.status == 412 ? "HTTP 412: If-Match " + etag_ + " no longer holds"
                                              : "it was " + Shown() + ", now " + changed;
      return Status::SourceChanged(o_.uri + " changed while it was being read (" + why +
                                   "); staging it again reads the new version");
    }
    if ((r.status == 206 || r.status == 200) && r.error.empty() && received == total) return Status::OK();
    if (r.status == 206 || r.status == 200) {
      return Status::IOError(o_.uri + " range " + range + ": got " + std::to_string(received) + " of " +
                             std::to_string(total) + " bytes" + (r.error.empty() ? "" : " (" + r.error + ")"));
    }
    return StatusForAnswer(f, o_.uri + " range " + range);
  }

 private:
  Result<HttpRequest> Request(const char* method) const {
    HttpRequest r;
    r.method = method;
    r.url = o_.url;
    r.headers = o_.headers;
    if (o_.auth) {
      LOOM_ASSIGN_OR_RETURN(r.auth, o_.auth());
    }
    return r;
  }

  void SetVersion(const HttpResponse& r) {
    if (!r.Header("etag").empty()) {
      etag_ = r.Header("etag");
      version_ = "etag:" + etag_;
    } else if (!r.Header("last-modified").empty()) {
      last_modified_ = r.Header("last-modified");
      version_ = "last-modified:" + last_modified_;
    }
  }

  // "" when the response is of the version opened (or says nothing about its version).
  std::string ChangedVersion(const HttpResponse& r) const {
    if (!etag_.empty()) {
      const std::string now = r.Header("etag");
      return !now.empty() && now != etag_ ? "ETag " + now : "";
    }
    if (!last_modified_.empty()) {
      const std::string now = r.Header("last-modified");
      return !now.empty() && now != last_modified_ ? "Last-Modified " + now : "";
    }
    return "";
  }

  std::string Shown() const { return etag_.empty() ? "Last-Modified " + last_modified_ : "ETag " + etag_; }

  RemoteObject o_;
  std::shared_ptr<const HttpClient> client_;
  uint64_t size_ = 0;
  std::string version_;
  std::string etag_;           // as the server sent it, quotes and W/ included
  std::string last_modified_;  // only when there is no ETag
};

}  // namespace

bool IsHttpUrl(std::string_view uri) { return uri.starts_with("http://") || uri.starts_with("https://"); }

Result<ParsedUrl> ParseUrl(std::string_view url) {
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos) return Status::InvalidArgument("\"" + std::string(url) + "\" is not a URL");
  ParsedUrl out;
  out.scheme = std::string(url.substr(0, sep));
  if (out.scheme != "http" && out.scheme != "https") {
    return Status::InvalidArgument("unsupported URL scheme \"" + out.scheme + "\" (use http or https)");
  }
  const std::string_view rest = url.substr(sep + 3);
  const size_t slash = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, slash);
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return Status::InvalidArgument("URL \"" + std::string(url) + "\" needs a host (and no user info)");
  }
  out.host_port = out.scheme + "://" + std::string(authority);
  out.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (out.path[0] == '?') out.path = "/" + out.path;
  return out;
}

Result<std::string> SiblingUrl(std::string_view url, std::string_view name) {
  LOOM_ASSIGN_OR_RETURN(ParsedUrl p, ParseUrl(url));
  std::string path = p.path.substr(0, p.path.find('?'));
  path = path.substr(0, path.rfind('/') + 1);
  return p.host_port + path + std::string(name);
}

Result<std::unique_ptr<Source>> OpenRemoteObject(RemoteObject object, std::shared_ptr<const HttpClient> client) {
  auto source = std::make_unique<RemoteSource>(std::move(object), std::move(client));
  LOOM_RETURN_IF_ERROR(source->Init());
  return std::unique_ptr<Source>(std::move(source));
}

Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, std::shared_ptr<const HttpClient> client) {
  LOOM_RETURN_IF_ERROR(ParseUrl(url).status());
  RemoteObject o;
  o.uri = url;
  o.url = url;
  return OpenRemoteObject(std::move(o), std::move(client));
}

Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, const HttpOptions& options) {
  return OpenHttpSource(url, std::make_shared<const HttpClient>(options));
}

}  // namespace loom
