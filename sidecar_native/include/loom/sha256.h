// Incremental SHA-256 (OpenSSL), hex output. Used for source fingerprints, which the Python
// client can recompute with hashlib. Thread-compatible: one instance per thread.
#ifndef LOOM_SHA256_H_
#define LOOM_SHA256_H_

#include <memory>
#include <string>
#include <string_view>

namespace loom {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes);
  void Update(const void* data, size_t len) { Update(std::string_view(static_cast<const char*>(data), len)); }
  // Lower-case hex of the digest. REQUIRES: called once; no Update afterwards.
  std::string HexDigest();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string Sha256Hex(std::string_view bytes);

}  // namespace loom

#endif  // LOOM_SHA256_H_
