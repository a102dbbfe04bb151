#include "loom/local_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "loom/unique_fd.h"

namespace loom {
namespace {

constexpr size_t kDirectBlock = 8 << 20;  // bytes per O_DIRECT read through the bounce buffer

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

class LocalFileSource final : public Source {
 public:
  LocalFileSource(std::string path, UniqueFd fd, uint64_t size, int64_t mtime_ns, bool direct)
      : path_(std::move(path)), fd_(std::move(fd)), size_(size), mtime_ns_(mtime_ns), direct_(direct) {}

  const std::string& uri() const override { return path_; }
  uint64_t size() const override { return size_; }
  std::string version() const override { return "mtime_ns:" + std::to_string(mtime_ns_); }

  Status ReadV(uint64_t offset, std::span<const std::span<uint8_t>> pieces) const override {
    uint64_t total = 0;
    for (const auto& p : pieces) total += p.size();
    uint64_t end;
    if (__builtin_add_overflow(offset, total, &end) || end > size_) {
      return Status::Internal("read past the end of " + path_);
    }
    return direct_ ? ReadDirect(offset, pieces) : ReadBuffered(offset, pieces);
  }

 private:
  Status ReadBuffered(uint64_t offset, std::span<const std::span<uint8_t>> pieces) const {
    std::vector<iovec> iov;
    iov.reserve(std::min<size_t>(pieces.size(), IOV_MAX));
    size_t next = 0;      // first piece not yet fully read
    size_t skip = 0;      // bytes of pieces[next] already read
    while (next < pieces.size()) {
      iov.clear();
      for (size_t i = next; i < pieces.size() && iov.size() < IOV_MAX; ++i) {
        const size_t already = i == next ? skip : 0;
        if (pieces[i].size() > already) iov.push_back({pieces[i].data() + already, pieces[i].size() - already});
      }
      if (iov.empty()) break;
      const ssize_t n = ::preadv(fd_.get(), iov.data(), static_cast<int>(iov.size()), static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno("reading " + path_, errno);
      }
      if (n == 0) return Status::IOError("unexpected end of file in " + path_ + " (did it shrink?)");
      offset += static_cast<uint64_t>(n);
      size_t left = static_cast<size_t>(n);
      while (left > 0 && next < pieces.size()) {
        const size_t room = pieces[next].size() - skip;
        if (left >= room) {
          left -= room, ++next, skip = 0;
        } else {
          skip += left, left = 0;
        }
      }
      while (next < pieces.size() && pieces[next].size() == skip) ++next, skip = 0;
    }
    return Status::OK();
  }

  Status ReadDirect(uint64_t offset, std::span<const std::span<uint8_t>> pieces) const {
    thread_local std::unique_ptr<uint8_t, FreeDeleter> bounce;
    if (!bounce) {
      void* p = nullptr;
      if (posix_memalign(&p, kDirectIoAlignment, kDirectBlock + kDirectIoAlignment) != 0) {
        return Status::IOError("out of memory for the O_DIRECT buffer");
      }
      bounce.reset(static_cast<uint8_t*>(p));
    }
    size_t piece = 0, piece_off = 0;
    uint64_t pos = offset;
    uint64_t total = 0;
    for (const auto& p : pieces) total += p.size();
    const uint64_t end = offset + total;
    while (pos < end) {
      const uint64_t block_start = pos / kDirectIoAlignment * kDirectIoAlignment;
      const uint64_t want = std::min<uint64_t>(kDirectBlock, end - block_start);
      const uint64_t want_aligned = (want + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
      uint64_t got = 0;
      while (got < want) {
        const ssize_t n = ::pread(fd_.get(), bounce.get() + got, want_aligned - got,
                                  static_cast<off_t>(block_start + got));
        if (n < 0) {
          if (errno == EINTR) continue;
          return Status::FromErrno("reading " + path_ + " with O_DIRECT", errno);
        }
        if (n == 0) return Status::IOError("unexpected end of file in " + path_ + " (did it shrink?)");
        got += static_cast<uint64_t>(n);
      }
      // Scatter [pos, block_start + want) into the pieces.
      const uint64_t usable_end = block_start + want;
      while (pos < usable_end && piece < pieces.size()) {
        const uint64_t n = std::min<uint64_t>(usable_end - pos, pieces[piece].size() - piece_off);
        std::memcpy(pieces[piece].data() + piece_off, bounce.get() + (pos - block_start), n);
        pos += n, piece_off += n;
        if (piece_off == pieces[piece].size()) ++piece, piece_off = 0;
      }
      while (piece < pieces.size() && pieces[piece].size() == piece_off) ++piece, piece_off = 0;
    }
    return Status::OK();
  }

  std::string path_;
  UniqueFd fd_;
  uint64_t size_;
  int64_t mtime_ns_;
  bool direct_;
};

}  // namespace

Result<std::unique_ptr<Source>> OpenLocalFile(const std::string& path, bool direct) {
  int flags = O_RDONLY | O_CLOEXEC;
  if (direct) flags |= O_DIRECT;
  UniqueFd fd(::open(path.c_str(), flags));
  if (!fd.valid()) {
    if (direct && errno == EINVAL) {
      return Status::InvalidArgument("the filesystem of " + path + " does not support O_DIRECT; drop --o-direct");
    }
    return Status::FromErrno("opening " + path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Status::InvalidModel(path + " is not a regular file");
  const int64_t mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  if (!direct) ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  return std::unique_ptr<Source>(
      new LocalFileSource(path, std::move(fd), static_cast<uint64_t>(st.st_size), mtime_ns, direct));
}

}  // namespace loom
