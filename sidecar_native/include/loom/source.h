// Source: random-access, read-only bytes of one model file (a local file, an HTTP object, or a
// test double). ReadV is safe to call concurrently from several threads.
#ifndef LOOM_SOURCE_H_
#define LOOM_SOURCE_H_

#include <cstdint>
#include <span>
#include <string>

#include "loom/status.h"

namespace loom {

class Source {
 public:
  virtual ~Source() = default;

  // Where the bytes come from, as given by the user (path or URL).
  virtual const std::string& uri() const = 0;
  // Total size in bytes, fixed when the source was opened.
  virtual uint64_t size() const = 0;
  // A tag that changes when the content is replaced: "mtime_ns:<n>" for files, the ETag or
  // Last-Modified of an HTTP object; "" when the source has none.
  virtual std::string version() const = 0;
  // Reads the contiguous range [offset, offset + sum of piece sizes) scattered into `pieces`,
  // in order. REQUIRES: the range lies within [0, size()).
  virtual Status ReadV(uint64_t offset, std::span<const std::span<uint8_t>> pieces) const = 0;

  Status ReadAt(uint64_t offset, std::span<uint8_t> dst) const {
    const std::span<uint8_t> one[1] = {dst};
    return ReadV(offset, one);
  }
};

}  // namespace loom

#endif  // LOOM_SOURCE_H_
