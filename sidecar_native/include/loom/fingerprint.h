// Source fingerprints: cheap identity checks deciding whether a staged region still matches
// its source (re-adoption on restart, client verification). A fingerprint is size + version
// tag + SHA-256 over the whole header and three 64 KiB samples of the data buffer (start,
// middle, end; the whole buffer when it is under 192 KiB). It is not a full content hash: a
// change that keeps size, mtime/ETag and all sampled bytes goes unnoticed. Thread-safety: pure
// functions; ComputeFingerprint only calls Source::ReadV.
#ifndef LOOM_FINGERPRINT_H_
#define LOOM_FINGERPRINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "loom/source.h"
#include "loom/status.h"

namespace loom {

inline constexpr uint64_t kFingerprintSampleBytes = 64 << 10;

struct SourceFingerprint {
  std::string uri;
  uint64_t size = 0;
  std::string version;
  std::string sample_sha256;  // hex
  bool operator==(const SourceFingerprint&) const = default;
};

struct ByteRange {
  uint64_t offset = 0;
  uint64_t len = 0;
};

// The ranges hashed for a file of `file_size` bytes whose data buffer starts at `data_offset`:
// [0, data_offset), then the samples. REQUIRES: data_offset <= file_size.
std::vector<ByteRange> FingerprintRanges(uint64_t file_size, uint64_t data_offset);

// Reads the ranges from `source` and fills a SourceFingerprint.
Result<SourceFingerprint> ComputeFingerprint(const Source& source, uint64_t data_offset);

// "sha256:<hex>" over one line "uri\tsize\tversion\tsample_sha256\n" per shard, in order.
std::string ModelFingerprint(const std::vector<SourceFingerprint>& shards);

}  // namespace loom

#endif  // LOOM_FINGERPRINT_H_
