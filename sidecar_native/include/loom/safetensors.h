// Safetensors header parsing. Accepts exactly what the reference parser (the `safetensors`
// crate, 0.8) accepts and refuses everything else with a specific message; it never trusts a
// length or offset before checking it. Thread-safety: pure functions.
//
// File layout: 8-byte little-endian N, N bytes of UTF-8 JSON
//   {"name": {"dtype": "F16", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data buffer; offsets are relative to the start of the buffer, must tile it from 0
// without gaps or overlaps, and the buffer must end exactly at the end of the file.
#ifndef LOOM_SAFETENSORS_H_
#define LOOM_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loom/dtype.h"
#include "loom/status.h"

namespace loom {

inline constexpr uint64_t kHeaderPrefixLen = 8;
inline constexpr uint64_t kMaxHeaderLen = 100'000'000;  // the reference's MAX_HEADER_SIZE
inline constexpr int kMaxJsonDepth = 127;               // serde_json refuses 128 nested levels

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // offsets into the data buffer
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  uint64_t header_len = 0;          // N
  std::vector<TensorInfo> tensors;  // ordered by data offsets
  std::optional<std::map<std::string, std::string>> metadata;  // "__metadata__", if present
  // Where the data buffer starts in the file.
  uint64_t data_offset() const { return kHeaderPrefixLen + header_len; }
  // Bytes in the data buffer (the last tensor's end).
  uint64_t data_len() const { return tensors.empty() ? 0 : tensors.back().end; }
};

// Reads N from the 8-byte prefix of a file of `file_size` bytes and checks it against the file.
// REQUIRES: prefix.size() >= 8 unless the file itself is shorter (then it fails cleanly).
Result<uint64_t> ParseHeaderLength(std::span<const uint8_t> prefix, uint64_t file_size);

// Parses and validates the N-byte JSON header of a file of `file_size` bytes.
Result<SafetensorsHeader> ParseHeaderJson(std::string_view json, uint64_t file_size);

// Both steps over a buffer holding at least the first 8 + N bytes of the file.
Result<SafetensorsHeader> ParseSafetensors(std::span<const uint8_t> prefix, uint64_t file_size);

}  // namespace loom

#endif  // LOOM_SAFETENSORS_H_
