#include "testutil.h"

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
        res.status = 503;
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

}  // namespace loom::testing
