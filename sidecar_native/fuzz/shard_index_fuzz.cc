// libFuzzer target: the sharded-checkpoint index parser. Accepted shard names are plain file names.
#include <cstdlib>
#include <string_view>

#include "loom/shard_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::Result<loom::ShardIndex> index =
      loom::ParseShardIndex(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!index.ok()) return 0;
  for (const std::string& s : index->shards) {
    if (s.empty() || s == ".." || s.find('/') != std::string::npos) std::abort();
  }
  return 0;
}
