// The index of a sharded checkpoint (`model.safetensors.index.json`): which shard file holds
// which tensor. Shard names must be plain file names next to the index. Thread-safety: pure.
#ifndef LOOM_SHARD_INDEX_H_
#define LOOM_SHARD_INDEX_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "loom/status.h"

namespace loom {

inline constexpr char kIndexFileName[] = "model.safetensors.index.json";
inline constexpr size_t kMaxIndexBytes = 64 << 20;

struct ShardIndex {
  std::vector<std::string> shards;                // distinct shard file names, sorted
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
};

// Parses {"metadata": {...}, "weight_map": {"tensor": "shard.safetensors", ...}}.
Result<ShardIndex> ParseShardIndex(std::string_view json);

}  // namespace loom

#endif  // LOOM_SHARD_INDEX_H_
