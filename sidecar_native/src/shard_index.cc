#include "loom/shard_index.h"

#include <nlohmann/json.hpp>
#include <set>

#include "loom/utf8.h"

namespace loom {

Result<ShardIndex> ParseShardIndex(std::string_view text) {
  if (text.size() > kMaxIndexBytes) {
    return Status::InvalidModel("shard index is " + std::to_string(text.size()) + " bytes, over the " +
                                std::to_string(kMaxIndexBytes) + "-byte limit");
  }
  if (FindInvalidUtf8(text)) return Status::InvalidModel("shard index is not valid UTF-8");
  nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Status::InvalidModel("shard index is not valid JSON");
  if (!root.is_object()) return Status::InvalidModel("shard index must be a JSON object");
  auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object()) {
    return Status::InvalidModel("shard index has no \"weight_map\" object mapping tensor names to shard files");
  }
  if (wm->empty()) return Status::InvalidModel("shard index has an empty weight_map");
  ShardIndex index;
  std::set<std::string> shards;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) {
      return Status::InvalidModel("shard index: weight_map[\"" + it.key() + "\"] must be a shard file name");
    }
    const std::string& shard = it.value().get_ref<const std::string&>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
        shard.find('\\') != std::string::npos || shard.find('\0') != std::string::npos) {
      return Status::InvalidModel("shard index: \"" + shard + "\" (for tensor \"" + it.key() +
                                  "\") is not a plain file name next to the index");
    }
    index.weight_map[it.key()] = shard;
    shards.insert(shard);
  }
  index.shards.assign(shards.begin(), shards.end());
  return index;
}

}  // namespace loom
