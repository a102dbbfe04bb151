// Helpers shared by the sidecar's tests: temporary directories (on /dev/shm by default, so
// regions are real tmpfs files), safetensors builders, and an in-memory Source double.
#ifndef LOOM_TESTS_TESTUTIL_H_
#define LOOM_TESTS_TESTUTIL_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loom/source.h"
#include "loom/source_opener.h"

namespace loom::testing {

// A fresh directory removed (recursively) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& parent = "/dev/shm");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct TestTensor {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  uint64_t nbytes;  // the data is a deterministic pattern of this many bytes
};

// The deterministic content of tensor `name` (so tests can check bytes after staging).
std::string TensorBytes(const std::string& name, uint64_t nbytes);
// A valid safetensors file with the tensors laid out in the given order.
std::string MakeSafetensors(const std::vector<TestTensor>& tensors,
                            const std::map<std::string, std::string>& metadata = {});
// 8-byte little-endian length + header + data, for hand-made (possibly invalid) files.
std::string RawSafetensors(const std::string& header, const std::string& data = "");

void WriteFile(const std::string& path, const std::string& bytes);
std::string ReadFile(const std::string& path);

// A Source over bytes in memory. Optionally fails the Nth ReadV (0-based) with `fail_with`.
class MemorySource final : public Source {
 public:
  MemorySource(std::string uri, std::string bytes, std::string version = "v1")
      : uri_(std::move(uri)), bytes_(std::move(bytes)), version_(std::move(version)) {}
  const std::string& uri() const override { return uri_; }
  uint64_t size() const override { return bytes_.size(); }
  std::string version() const override { return version_; }
  Status ReadV(uint64_t offset, std::span<const std::span<uint8_t>> pieces) const override;

  int fail_on_read = -1;
  Status fail_with = Status::IOError("injected read failure");
  mutable std::atomic<int> reads{0};

 private:
  std::string uri_;
  std::string bytes_;
  std::string version_;
};

// Opens MemorySources by exact URI.
class MemoryOpener final : public SourceOpener {
 public:
  void Add(const std::string& uri, std::string bytes, std::string version = "v1") {
    files_[uri] = {std::move(bytes), std::move(version)};
  }
  Result<std::unique_ptr<Source>> Open(const std::string& uri) override;

 private:
  std::map<std::string, std::pair<std::string, std::string>> files_;
};

// A real HTTP server on 127.0.0.1 (cpp-httplib) serving in-memory files under /files/NAME with
// Range support (done by httplib), ETags, optional injected failures and request counting.
class FileServer {
 public:
  FileServer();
  ~FileServer();
  FileServer(const FileServer&) = delete;
  FileServer& operator=(const FileServer&) = delete;

  void Put(const std::string& name, std::string bytes);
  std::string Url(const std::string& name) const;  // http://127.0.0.1:PORT/files/NAME
  int port() const { return port_; }

  std::atomic<int> fail_next_gets{0};  // answer this many GETs with fail_status first
  std::atomic<int> fail_status{503};
  std::atomic<int> retry_after_s{-1};  // a Retry-After header on those answers when >= 0
  std::atomic<int> heads{0};
  std::atomic<bool> refuse_head{false};
  std::atomic<bool> ignore_if_match{false};  // as some servers and proxies do
  std::atomic<bool> weak_etag{false};        // W/"..." (If-Match never matches a weak tag)
  std::atomic<int> delay_ms{0};              // before answering each GET
  std::atomic<int> gets{0};
  std::atomic<int> ranged_gets{0};
  std::atomic<int> if_match_gets{0};         // GETs that carried If-Match
  std::atomic<int> precondition_failures{0}; // answered 412
  // ETag the server gives `bytes` (a hash of the content: it changes when the file is replaced).
  std::string ETagOf(const std::string& bytes) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// A real S3 server: Versity's S3 gateway (versitygw, built by scripts/build_versitygw.sh) serving
// a temporary directory on a free loopback port, signature checks on (SigV4 scoped to `region`;
// "auto" is what GCS's XML API expects of HMAC keys), keep-alive on. The binary is
// $LOOM_VERSITYGW; available() is false when it is not set.
class S3Server {
 public:
  static constexpr char kAccess[] = "LOOMTESTACCESS";
  static constexpr char kSecret[] = "loom-test-secret-key-1234567890";
  explicit S3Server(std::string region = "us-east-1");
  ~S3Server();
  S3Server(const S3Server&) = delete;
  S3Server& operator=(const S3Server&) = delete;
  bool available() const { return pid_ > 0; }
  std::string endpoint() const;  // http://127.0.0.1:PORT
  int port() const { return port_; }
  // A bucket (a top-level folder) and objects written through the S3 API (so they get ETags).
  void MakeBucket(const std::string& bucket);
  void Put(const std::string& bucket, const std::string& key, const std::string& bytes);
  // The same through a multipart upload of these parts (all but the last >= 5 MiB, as S3 wants):
  // the object's ETag is then "<md5 of the parts' md5s>-N".
  void PutMultipart(const std::string& bucket, const std::string& key, const std::vector<std::string>& parts);
  const std::string& region() const { return region_; }

 private:
  std::string region_;
  TempDir root_{"/tmp"};
  int port_ = 0;
  int pid_ = -1;
};

}  // namespace loom::testing

#endif  // LOOM_TESTS_TESTUTIL_H_
