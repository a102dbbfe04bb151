#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loom/curl_http.h"
#include "loom/xml.h"

#include <httplib.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace loom::testing {

TempDir::TempDir(const std::string& parent) {
  std::string tmpl = parent + "/loom-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp in " + parent);
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TensorBytes(const std::string& name, uint64_t nbytes) {
  std::string out(nbytes, '\0');
  uint32_t x = 2166136261u;
  for (char c : name) x = (x ^ static_cast<uint8_t>(c)) * 16777619u;
  for (uint64_t i = 0; i < nbytes; ++i) {
    x = x * 1664525u + 1013904223u;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

std::string RawSafetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string MakeSafetensors(const std::vector<TestTensor>& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::string data;
  for (const TestTensor& t : tensors) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.nbytes}}};
    data += TensorBytes(t.name, t.nbytes);
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // as the reference serializer pads
  return RawSafetensors(header, data);
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("writing " + path);
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

Status MemorySource::ReadV(uint64_t offset, std::span<const std::span<uint8_t>> pieces) const {
  const int n = reads++;
  if (n == fail_on_read) return fail_with;
  for (const auto& p : pieces) {
    if (offset + p.size() > bytes_.size()) return Status::Internal("read past end");
    std::memcpy(p.data(), bytes_.data() + offset, p.size());
    offset += p.size();
  }
  return Status::OK();
}

Result<std::unique_ptr<Source>> MemoryOpener::Open(const std::string& uri) {
  auto it = files_.find(uri);
  if (it == files_.end()) return Status::Unavailable(uri + ": no such file");
  return std::unique_ptr<Source>(new MemorySource(uri, it->second.first, it->second.second));
}

struct FileServer::Impl {
  httplib::Server server;
  std::thread thread;
  std::mutex mu;
  std::map<std::string, std::string> files;
};

FileServer::FileServer() : impl_(std::make_unique<Impl>()) {
  impl_->server.Get(R"(/files/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.method == "HEAD") ++heads;
    if (req.method == "HEAD" && refuse_head) {
      res.status = 405;
      return;
    }
    if (req.method == "GET") {
      ++gets;
      if (req.has_header("Range")) ++ranged_gets;
      if (req.has_header("If-Match")) ++if_match_gets;
      if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
      if (fail_next_gets > 0) {
        --fail_next_gets;
        res.status = fail_status;
        if (retry_after_s >= 0) res.set_header("Retry-After", std::to_string(retry_after_s.load()));
        return;
      }
    }
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->files.find(req.matches[1]);
    if (it == impl_->files.end()) {
      res.status = 404;
      return;
    }
    const std::string etag = ETagOf(it->second);
    res.set_header("ETag", etag);
    if (req.has_header("If-Match") && !ignore_if_match && req.get_header_value("If-Match") != etag) {
      ++precondition_failures;  // RFC 9110 13.1.1: strong comparison; a weak tag never matches
      res.status = 412;
      return;
    }
    res.set_content(it->second, "application/octet-stream");  // httplib applies the Range
  });
  port_ = impl_->server.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("cannot bind a test HTTP server");
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  for (int i = 0; i < 1000 && !impl_->server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

FileServer::~FileServer() {
  impl_->server.stop();
  impl_->thread.join();
}

void FileServer::Put(const std::string& name, std::string bytes) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->files[name] = std::move(bytes);
}

std::string FileServer::ETagOf(const std::string& bytes) const {
  return std::string(weak_etag ? "W/" : "") + "\"" + std::to_string(std::hash<std::string>{}(bytes)) + "\"";
}

std::string FileServer::Url(const std::string& name) const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/files/" + name;
}

S3Server::S3Server(std::string region) : region_(std::move(region)) {
  const char* bin = std::getenv("LOOM_VERSITYGW");
  if (bin == nullptr || *bin == '\0') return;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error("no free port for versitygw");
    }
    port_ = ntohs(a.sin_port);
    ::close(fd);
  }
  const std::string listen = "127.0.0.1:" + std::to_string(port_);
  pid_ = ::fork();
  if (pid_ == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::execl(bin, bin, "--access", kAccess, "--secret", kSecret, "--region", region_.c_str(), "--port", listen.c_str(),
            "--keep-alive", "--quiet", "posix", root_.path().c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 500; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (up) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("versitygw did not start on " + listen);
}

S3Server::~S3Server() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string S3Server::endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

namespace {
HttpResponse S3Call(const std::string& region, const std::string& method, const std::string& url,
                    const std::string& body) {
  HttpClient client(HttpOptions{});
  HttpRequest r;
  r.method = method;
  r.url = url;
  r.body = body;
  r.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD", "Content-Type: application/octet-stream"};
  r.auth.kind = HttpAuth::Kind::kSigV4;
  r.auth.access_key_id = S3Server::kAccess;
  r.auth.secret_access_key = S3Server::kSecret;
  r.auth.region = region;
  HttpResponse resp = client.Perform(r);
  if (resp.status != 200) throw std::runtime_error(method + " " + url + ": HTTP " + std::to_string(resp.status) + " " + resp.body);
  return resp;
}
}  // namespace

void S3Server::MakeBucket(const std::string& bucket) { S3Call(region_, "PUT", endpoint() + "/" + bucket, ""); }

void S3Server::Put(const std::string& bucket, const std::string& key, const std::string& bytes) {
  S3Call(region_, "PUT", endpoint() + "/" + bucket + "/" + key, bytes);
}

void S3Server::PutMultipart(const std::string& bucket, const std::string& key, const std::vector<std::string>& parts) {
  const std::string url = endpoint() + "/" + bucket + "/" + key;
  // Query strings written in SigV4's canonical form ("uploads=", sorted, encoded): libcurl signs them as sent.
  Result<XmlElement> created = ParseXml(S3Call(region_, "POST", url + "?uploads=", "").body);
  if (!created.ok() || created->ChildText("UploadId").empty()) throw std::runtime_error("CreateMultipartUpload: no UploadId");
  const std::string id = UriEncode(created->ChildText("UploadId"), false);
  std::string complete = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string n = std::to_string(i + 1);
    HttpResponse part = S3Call(region_, "PUT", url + "?partNumber=" + n + "&uploadId=" + id, parts[i]);
    complete += "<Part><PartNumber>" + n + "</PartNumber><ETag>" + part.Header("etag") + "</ETag></Part>";
  }
  complete += "</CompleteMultipartUpload>";
  S3Call(region_, "POST", url + "?uploadId=" + id, complete);
}

}  // namespace loom::testing
