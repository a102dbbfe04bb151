#include "loom/fingerprint.h"

#include <algorithm>

#include "loom/sha256.h"

namespace loom {

std::vector<ByteRange> FingerprintRanges(uint64_t file_size, uint64_t data_offset) {
  std::vector<ByteRange> out;
  data_offset = std::min(data_offset, file_size);
  if (data_offset > 0) out.push_back({0, data_offset});
  const uint64_t data = file_size - data_offset;
  const uint64_t s = kFingerprintSampleBytes;
  if (data == 0) return out;
  if (data <= 3 * s) {
    out.push_back({data_offset, data});
  } else {
    out.push_back({data_offset, s});
    out.push_back({data_offset + (data - s) / 2, s});
    out.push_back({file_size - s, s});
  }
  return out;
}

Result<SourceFingerprint> ComputeFingerprint(const Source& source, uint64_t data_offset) {
  Sha256 hash;
  std::vector<uint8_t> buf;
  for (const ByteRange& r : FingerprintRanges(source.size(), data_offset)) {
    buf.resize(r.len);
    LOOM_RETURN_IF_ERROR(source.ReadAt(r.offset, buf).Annotate("fingerprinting " + source.uri()));
    hash.Update(buf.data(), buf.size());
  }
  return SourceFingerprint{source.uri(), source.size(), source.version(), hash.HexDigest()};
}

std::string ModelFingerprint(const std::vector<SourceFingerprint>& shards) {
  Sha256 hash;
  for (const SourceFingerprint& f : shards) {
    hash.Update(f.uri + "\t" + std::to_string(f.size) + "\t" + f.version + "\t" + f.sample_sha256 + "\n");
  }
  return "sha256:" + hash.HexDigest();
}

}  // namespace loom
