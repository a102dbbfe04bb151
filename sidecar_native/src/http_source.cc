#include "loom/http_source.h"

#include <httplib.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace loom {
namespace {

std::optional<uint64_t> ParseU64(const std::string& s) {
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoull(s);
}

bool Transient(int status) { return status == 0 || status == 408 || status == 429 || status >= 500; }

Status StatusForHttp(int status, const std::string& what) {
  if (status == 404 || status == 403 || status == 401 || status == 410) {
    return Status::Unavailable(what + ": HTTP " + std::to_string(status));
  }
  if (Transient(status)) return Status::Unavailable(what + ": HTTP " + std::to_string(status));
  return Status::IOError(what + ": unexpected HTTP " + std::to_string(status));
}

class HttpSource final : public Source {
 public:
  HttpSource(std::string url, ParsedUrl parsed, HttpOptions options)
      : url_(std::move(url)), parsed_(std::move(parsed)), options_(std::move(options)) {}

  Status Init() {
    // HEAD first; some object stores (presigned GET URLs) refuse it, so fall back to bytes=0-0.
    Status last;
    for (int attempt = 0; attempt <= options_.retries; ++attempt) {
      if (attempt) Backoff(attempt);
      auto client = Borrow();
      httplib::Result head = client->Head(parsed_.path);
      std::optional<uint64_t> length;
      if (head && head->status == 200) length = ParseU64(head->get_header_value("Content-Length"));
      if (length) {
        size_ = *length;
        SetVersion(*head);
        Return(std::move(client));
        return Status::OK();
      }
      httplib::Result probe = client->Get(parsed_.path, {{"Range", "bytes=0-0"}});
      if (probe && probe->status == 206) {
        const std::string cr = probe->get_header_value("Content-Range");  // bytes 0-0/TOTAL
        const size_t slash = cr.rfind('/');
        std::optional<uint64_t> total;
        if (slash != std::string::npos) total = ParseU64(cr.substr(slash + 1));
        if (total) {
          size_ = *total;
          SetVersion(*probe);
          Return(std::move(client));
          return Status::OK();
        }
        return Status::Unavailable(url_ + ": server did not report the object size in Content-Range");
      }
      const int status = probe ? probe->status : (head ? head->status : 0);
      last = probe || head ? StatusForHttp(status, url_)
                           : Status::Unavailable(url_ + ": " + httplib::to_string(probe.error()));
      if ((probe || head) && !Transient(status)) break;
    }
    return last;
  }

  const std::string& uri() const override { return url_; }
  uint64_t size() const override { return size_; }
  std::string version() const override { return version_; }

  Status ReadV(uint64_t offset, std::span<const std::span<uint8_t>> pieces) const override {
    uint64_t total = 0;
    for (const auto& p : pieces) total += p.size();
    if (total == 0) return Status::OK();
    if (offset + total > size_) return Status::Internal("read past the end of " + url_);
    const std::string range = "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + total - 1);
    httplib::Headers headers = {{"Range", range}, {"Accept-Encoding", "identity"}};
    if (!etag_.empty() && !etag_.starts_with("W/")) {
      headers.emplace("If-Match", etag_);  // a weak tag never matches If-Match (strong comparison)
    } else if (etag_.empty() && !last_modified_.empty()) {
      headers.emplace("If-Unmodified-Since", last_modified_);
    }
    Status last;
    for (int attempt = 0; attempt <= options_.retries; ++attempt) {
      if (attempt) Backoff(attempt);
      auto client = Borrow();
      int status = 0;
      std::string changed;  // the version a response reported, when it is not the one opened
      size_t piece = 0, piece_off = 0;
      uint64_t received = 0;
      httplib::Result res = client->Get(
          parsed_.path, headers,
          [&](const httplib::Response& r) {
            status = r.status;
            // 206 with our range, or 200 with the whole object when the range was all of it.
            const bool ok = r.status == 206 || (r.status == 200 && offset == 0 && total == size_);
            if (ok) changed = ChangedVersion(r);
            return ok && changed.empty();
          },
          [&](const char* data, size_t len) {
            if (received + len > total) return false;  // server sent more than asked
            received += len;
            while (len > 0) {
              const size_t n = std::min(len, pieces[piece].size() - piece_off);
              std::memcpy(pieces[piece].data() + piece_off, data, n);
              data += n, len -= n, piece_off += n;
              if (piece_off == pieces[piece].size()) ++piece, piece_off = 0;
            }
            return true;
          });
      if (status == 412 || !changed.empty()) {
        const std::string why = status == 412 ? "HTTP 412: If-Match " + etag_ + " no longer holds"
                                              : "it was " + Shown() + ", now " + changed;
        return Status::SourceChanged(url_ + " changed while it was being read (" + why +
                                     "); staging it again reads the new version");
      }
      if (res && received == total) {
        Return(std::move(client));
        return Status::OK();
      }
      if (status != 0 && status != 206 && status != 200) {
        last = StatusForHttp(status, url_ + " range " + range);
        if (!Transient(status)) return last;
      } else if (res) {
        last = Status::IOError(url_ + " range " + range + ": got " + std::to_string(received) + " of " +
                               std::to_string(total) + " bytes");
      } else {
        last = Status::Unavailable(url_ + " range " + range + ": " + httplib::to_string(res.error()));
      }
    }
    return last;
  }

 private:
  static void Backoff(int attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 << std::min(attempt - 1, 5)));
  }

  void SetVersion(const httplib::Response& r) {
    if (r.has_header("ETag")) {
      etag_ = r.get_header_value("ETag");
      version_ = "etag:" + etag_;
    } else if (r.has_header("Last-Modified")) {
      last_modified_ = r.get_header_value("Last-Modified");
      version_ = "last-modified:" + last_modified_;
    }
  }

  // "" when the response is of the version opened (or says nothing about its version).
  std::string ChangedVersion(const httplib::Response& r) const {
    if (!etag_.empty()) {
      const std::string now = r.get_header_value("ETag");
      return !now.empty() && now != etag_ ? "ETag " + now : "";
    }
    if (!last_modified_.empty()) {
      const std::string now = r.get_header_value("Last-Modified");
      return !now.empty() && now != last_modified_ ? "Last-Modified " + now : "";
    }
    return "";
  }

  std::string Shown() const { return etag_.empty() ? "Last-Modified " + last_modified_ : "ETag " + etag_; }

  std::unique_ptr<httplib::Client> Borrow() const {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!pool_.empty()) {
        auto c = std::move(pool_.back());
        pool_.pop_back();
        return c;
      }
    }
    auto c = std::make_unique<httplib::Client>(parsed_.host_port);
    c->set_keep_alive(true);
    c->set_follow_location(true);
    c->set_decompress(false);
    c->set_connection_timeout(options_.connect_timeout_s, 0);
    c->set_read_timeout(options_.read_timeout_s, 0);
    if (!options_.ca_file.empty()) c->set_ca_cert_path(options_.ca_file);
    return c;
  }

  void Return(std::unique_ptr<httplib::Client> c) const {
    std::lock_guard<std::mutex> lock(mu_);
    pool_.push_back(std::move(c));
  }

  std::string url_;
  ParsedUrl parsed_;
  HttpOptions options_;
  uint64_t size_ = 0;
  std::string version_;
  std::string etag_;           // as the server sent it, quotes and W/ included
  std::string last_modified_;  // only when there is no ETag
  mutable std::mutex mu_;
  mutable std::vector<std::unique_ptr<httplib::Client>> pool_;
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

Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, const HttpOptions& options) {
  LOOM_ASSIGN_OR_RETURN(ParsedUrl parsed, ParseUrl(url));
  auto source = std::make_unique<HttpSource>(url, std::move(parsed), options);
  LOOM_RETURN_IF_ERROR(source->Init());
  return std::unique_ptr<Source>(std::move(source));
}

}  // namespace loom
