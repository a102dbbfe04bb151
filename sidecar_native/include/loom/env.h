// Env: every filesystem operation the sidecar performs on its shared directory and on local
// model files, behind one narrow interface so tests can substitute failures (no space, a
// failing rename, a different memory limit). Env::Default() is the POSIX implementation.
// Thread-safety: implementations must be safe to call concurrently.
#ifndef LOOM_ENV_H_
#define LOOM_ENV_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/source.h"
#include "loom/status.h"

namespace loom {

struct FileStat {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  bool is_dir = false;
  bool is_regular = false;
};

// A file being filled through a writable shared mapping. Destroying it unmaps and closes;
// the file itself stays until removed.
class WritableRegion {
 public:
  virtual ~WritableRegion() = default;
  virtual uint8_t* data() = 0;  // nullptr when size() == 0
  virtual uint64_t size() const = 0;
  // Makes the contents durable (fsync); a no-op cost on tmpfs.
  virtual Status Sync() = 0;
};

struct RegionOptions {
  bool preallocate = true;  // fallocate the whole file first (fails early on ENOSPC)
  bool populate = false;    // MAP_POPULATE: fault every page in at mmap time
};

class Env {
 public:
  virtual ~Env() = default;
  static Env* Default();

  virtual Result<FileStat> Stat(const std::string& path) = 0;
  // Bytes an unprivileged writer can still use in the filesystem holding `dir` (statvfs).
  virtual Result<uint64_t> FreeBytes(const std::string& dir) = 0;
  // True when `dir` lives in memory (tmpfs/ramfs): then writes count against the memory limit
  // and fsync is pointless.
  virtual bool IsMemoryBacked(const std::string& dir) = 0;
  // Room left under this process's cgroup memory limit; nullopt when there is no limit.
  virtual std::optional<uint64_t> MemoryHeadroom() = 0;

  virtual Result<std::unique_ptr<Source>> OpenFile(const std::string& path, bool direct) = 0;
  // Whole file; fails when it is larger than max_bytes.
  virtual Result<std::string> ReadFile(const std::string& path, size_t max_bytes) = 0;
  // Writes `contents` to a temporary name beside `path`, fsyncs (unless memory-backed), renames
  // over `path` and fsyncs the directory: readers see the old file or the new one, never a part.
  virtual Status WriteFileAtomic(const std::string& path, std::string_view contents) = 0;
  // Creates `path` (which must not exist) of `size` bytes and maps it read-write, shared.
  virtual Result<std::unique_ptr<WritableRegion>> CreateRegion(const std::string& path, uint64_t size,
                                                               const RegionOptions& options) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Remove(const std::string& path) = 0;  // OK if already gone
  virtual Status SyncDir(const std::string& dir) = 0;
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;  // names, sorted
  virtual Status CreateDir(const std::string& dir) = 0;                          // OK if it exists
};

// The POSIX implementation, for tests that override a single method.
class PosixEnv : public Env {
 public:
  Result<FileStat> Stat(const std::string& path) override;
  Result<uint64_t> FreeBytes(const std::string& dir) override;
  bool IsMemoryBacked(const std::string& dir) override;
  std::optional<uint64_t> MemoryHeadroom() override;
  Result<std::unique_ptr<Source>> OpenFile(const std::string& path, bool direct) override;
  Result<std::string> ReadFile(const std::string& path, size_t max_bytes) override;
  Status WriteFileAtomic(const std::string& path, std::string_view contents) override;
  Result<std::unique_ptr<WritableRegion>> CreateRegion(const std::string& path, uint64_t size,
                                                       const RegionOptions& options) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status SyncDir(const std::string& dir) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  Status CreateDir(const std::string& dir) override;
};

std::string JoinPath(std::string_view dir, std::string_view name);
std::string DirName(std::string_view path);

}  // namespace loom

#endif  // LOOM_ENV_H_
