#include "loom/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "loom/local_source.h"
#include "loom/unique_fd.h"

namespace loom {

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (!out.empty() && out.back() != '/') out += '/';
  out += name;
  return out;
}

std::string DirName(std::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

namespace {

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("writing " + path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::OK();
}

class PosixRegion final : public WritableRegion {
 public:
  PosixRegion(std::string path, UniqueFd fd, Mapping map, uint64_t size)
      : path_(std::move(path)), fd_(std::move(fd)), map_(std::move(map)), size_(size) {}
  uint8_t* data() override { return map_.data(); }
  uint64_t size() const override { return size_; }
  Status Sync() override {
    if (::fsync(fd_.get()) != 0) return Status::FromErrno("fsync " + path_, errno);
    return Status::OK();
  }

 private:
  std::string path_;
  UniqueFd fd_;
  Mapping map_;
  uint64_t size_;
};

std::optional<uint64_t> ReadCgroupValue(const std::string& path) {
  std::ifstream in(path);
  std::string value;
  if (!(in >> value) || value == "max") return std::nullopt;
  try {
    return std::stoull(value);
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

Result<FileStat> PosixEnv::Stat(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno("stat " + path, errno);
  FileStat out;
  out.size = static_cast<uint64_t>(st.st_size);
  out.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  out.is_dir = S_ISDIR(st.st_mode);
  out.is_regular = S_ISREG(st.st_mode);
  return out;
}

Result<uint64_t> PosixEnv::FreeBytes(const std::string& dir) {
  struct statvfs st;
  if (::statvfs(dir.c_str(), &st) != 0) return Status::FromErrno("statvfs " + dir, errno);
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

bool PosixEnv::IsMemoryBacked(const std::string& dir) {
  struct statfs st;
  if (::statfs(dir.c_str(), &st) != 0) return false;
  return st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC;
}

std::optional<uint64_t> PosixEnv::MemoryHeadroom() {
  // cgroup v2: the process's group is "0::/path" in /proc/self/cgroup.
  std::ifstream in("/proc/self/cgroup");
  std::string line, group;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) group = line.substr(3);
  }
  const std::string base = "/sys/fs/cgroup" + (group == "/" ? std::string() : group);
  std::optional<uint64_t> max = ReadCgroupValue(base + "/memory.max");
  std::optional<uint64_t> cur = ReadCgroupValue(base + "/memory.current");
  if (!max || !cur) return std::nullopt;
  return *max > *cur ? *max - *cur : 0;
}

Result<std::unique_ptr<Source>> PosixEnv::OpenFile(const std::string& path, bool direct) {
  return OpenLocalFile(path, direct);
}

Result<std::string> PosixEnv::ReadFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("opening " + path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Status::InvalidModel(path + " is " + std::to_string(st.st_size) + " bytes, over the limit of " +
                                std::to_string(max_bytes));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::pread(fd.get(), out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("reading " + path, errno);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

Status PosixEnv::WriteFileAtomic(const std::string& path, std::string_view contents) {
  static std::atomic<uint64_t> counter{0};
  const std::string dir = DirName(path);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::FromErrno("creating " + tmp, errno);
  Status s = WriteAll(fd.get(), contents, tmp);
  const bool memory = IsMemoryBacked(dir);
  if (s.ok() && !memory && ::fsync(fd.get()) != 0) s = Status::FromErrno("fsync " + tmp, errno);
  fd.reset();
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = Status::FromErrno("renaming " + tmp, errno);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return memory ? Status::OK() : SyncDir(dir);
}

Result<std::unique_ptr<WritableRegion>> PosixEnv::CreateRegion(const std::string& path, uint64_t size,
                                                               const RegionOptions& options) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::FromErrno("creating " + path, errno);
  auto fail = [&](Status s) {
    ::unlink(path.c_str());
    return s;
  };
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return fail(Status::FromErrno("ftruncate " + path, errno));
  if (options.preallocate && size > 0) {
    int rc;
    do {
      rc = ::fallocate(fd.get(), 0, 0, static_cast<off_t>(size));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0 && errno != EOPNOTSUPP) {
      return fail(Status::FromErrno("pre-allocating " + std::to_string(size) + " bytes for " + path, errno));
    }
  }
  Mapping map;
  if (size > 0) {
    int flags = MAP_SHARED;
    if (options.populate) flags |= MAP_POPULATE;
    void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd.get(), 0);
    if (addr == MAP_FAILED) return fail(Status::FromErrno("mapping " + path, errno));
    map = Mapping(addr, size);
  }
  return std::unique_ptr<WritableRegion>(new PosixRegion(path, std::move(fd), std::move(map), size));
}

Status PosixEnv::Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return Status::FromErrno("renaming " + from + " to " + to, errno);
  return Status::OK();
}

Status PosixEnv::Remove(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno("removing " + path, errno);
  return Status::OK();
}

Status PosixEnv::SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("opening directory " + dir, errno);
  if (::fsync(fd.get()) != 0 && errno != EINVAL) return Status::FromErrno("fsync " + dir, errno);
  return Status::OK();
}

Result<std::vector<std::string>> PosixEnv::ListDir(const std::string& dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), &::closedir);
  if (!d) return Status::FromErrno("listing " + dir, errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d.get())) {
    const std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  std::sort(names.begin(), names.end());
  return names;
}

Status PosixEnv::CreateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Status::FromErrno("creating " + dir, errno);
  return Status::OK();
}

}  // namespace loom
