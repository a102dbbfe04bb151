#include "loom/model_resolver.h"

#include <algorithm>
#include <map>

#include "loom/object_store.h"
#include "loom/shard_index.h"

namespace loom {
namespace {

constexpr uint64_t kHeaderProbe = 1 << 20;

Result<std::string> ReadWholeSource(const Source& source, uint64_t max_bytes) {
  if (source.size() > max_bytes) {
    return Status::InvalidModel(source.uri() + " is " + std::to_string(source.size()) + " bytes, over the limit of " +
                                std::to_string(max_bytes));
  }
  std::string out(source.size(), '\0');
  LOOM_RETURN_IF_ERROR(source.ReadAt(0, {reinterpret_cast<uint8_t*>(out.data()), out.size()}));
  return out;
}

Status CheckIndex(const ShardIndex& index, const ResolvedModel& model, const std::vector<std::string>& names) {
  std::map<std::string, size_t> shard_of;
  for (size_t i = 0; i < names.size(); ++i) shard_of[names[i]] = i;
  for (const auto& [tensor, shard] : index.weight_map) {
    const SafetensorsHeader& h = model.headers[shard_of.at(shard)];
    const bool found = std::any_of(h.tensors.begin(), h.tensors.end(), [&](const TensorInfo& t) { return t.name == tensor; });
    if (!found) {
      return Status::InvalidModel("the index puts tensor `" + tensor + "` in " + shard + ", which does not contain it");
    }
  }
  return Status::OK();
}

Status OpenShards(ResolvedModel& model, SourceOpener& opener, const std::vector<std::string>& uris) {
  for (const std::string& uri : uris) {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, opener.Open(uri));
    Result<SafetensorsHeader> header = ReadHeader(*source);
    if (!header.ok()) return header.status().Annotate(uri);
    model.headers.push_back(std::move(header).value());
    model.shards.push_back(std::move(source));
  }
  return Status::OK();
}

}  // namespace

Result<SafetensorsHeader> ReadHeader(const Source& source) {
  const uint64_t size = source.size();
  std::vector<uint8_t> buf(std::min(size, kHeaderProbe));
  LOOM_RETURN_IF_ERROR(source.ReadAt(0, buf));
  LOOM_ASSIGN_OR_RETURN(uint64_t n, ParseHeaderLength(buf, size));
  if (buf.size() < kHeaderPrefixLen + n) {  // ParseHeaderLength checked 8 + n <= size
    const size_t have = buf.size();
    buf.resize(kHeaderPrefixLen + n);
    LOOM_RETURN_IF_ERROR(source.ReadAt(have, {buf.data() + have, buf.size() - have}));
  }
  return ParseSafetensors(buf, size);
}

Result<ResolvedModel> ResolveModel(const std::string& uri, SourceOpener& opener, Env* env) {
  ResolvedModel model;
  model.uri = uri;
  std::vector<std::string> shard_names;  // relative to the index, when there is one
  std::vector<std::string> shard_uris;
  std::optional<ShardIndex> index;

  LOOM_RETURN_IF_ERROR(CheckUriScheme(uri));
  if (IsObjectStoreUri(uri)) {
    // Pinned first (hf: the revision's commit), so that the index and every shard are one version.
    LOOM_ASSIGN_OR_RETURN(const std::string pinned, opener.Pin(uri));
    std::string index_uri;
    if (NamesObject(pinned)) {
      if (pinned.ends_with(".json")) index_uri = pinned;
      else shard_uris.push_back(pinned);
    } else {
      LOOM_ASSIGN_OR_RETURN(std::vector<std::string> names, opener.List(pinned));
      const bool has_index = std::find(names.begin(), names.end(), kIndexFileName) != names.end();
      if (has_index) {
        index_uri = ChildUri(pinned, kIndexFileName);
      } else {
        for (const std::string& n : names) {
          if (n.ends_with(".safetensors")) shard_uris.push_back(ChildUri(pinned, n));
        }
        if (shard_uris.empty()) {
          return Status::InvalidModel(uri + " holds no .safetensors objects and no " + kIndexFileName +
                                      " (a prefix is read one level deep)");
        }
      }
    }
    if (!index_uri.empty()) {
      LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Source> src, opener.Open(index_uri));
      LOOM_ASSIGN_OR_RETURN(std::string text, ReadWholeSource(*src, kMaxIndexBytes));
      Result<ShardIndex> parsed_index = ParseShardIndex(text);
      if (!parsed_index.ok()) return parsed_index.status().Annotate(index_uri);
      index = std::move(parsed_index).value();
      for (const std::string& shard : index->shards) shard_uris.push_back(SiblingUri(index_uri, shard));
    }
    LOOM_RETURN_IF_ERROR(OpenShards(model, opener, shard_uris));
    if (index) LOOM_RETURN_IF_ERROR(CheckIndex(*index, model, index->shards));
    return model;
  }
  if (IsHttpUrl(uri)) {
    LOOM_ASSIGN_OR_RETURN(ParsedUrl parsed, ParseUrl(uri));
    const std::string path = parsed.path.substr(0, parsed.path.find('?'));
    if (path.ends_with(".json")) {
      LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Source> src, opener.Open(uri));
      LOOM_ASSIGN_OR_RETURN(std::string text, ReadWholeSource(*src, kMaxIndexBytes));
      Result<ShardIndex> parsed_index = ParseShardIndex(text);
      if (!parsed_index.ok()) return parsed_index.status().Annotate(uri);
      index = std::move(parsed_index).value();
      for (const std::string& shard : index->shards) {
        LOOM_ASSIGN_OR_RETURN(std::string shard_uri, SiblingUrl(uri, shard));
        shard_uris.push_back(shard_uri);
      }
    } else {
      shard_uris.push_back(uri);
    }
  } else {
    const std::string path = LocalPath(uri);
    Result<FileStat> st = env->Stat(path);
    if (!st.ok()) return st.status();
    std::string index_path;
    if (st->is_dir) {
      const std::string candidate = JoinPath(path, kIndexFileName);
      if (env->Stat(candidate).ok()) {
        index_path = candidate;
      } else {
        LOOM_ASSIGN_OR_RETURN(std::vector<std::string> names, env->ListDir(path));
        for (const std::string& n : names) {
          if (n.ends_with(".safetensors")) shard_uris.push_back(JoinPath(path, n));
        }
        if (shard_uris.empty()) {
          return Status::InvalidModel("directory " + path + " holds no .safetensors files and no " + kIndexFileName);
        }
      }
    } else if (path.ends_with(".json")) {
      index_path = path;
    } else {
      shard_uris.push_back(uri);
    }
    if (!index_path.empty()) {
      LOOM_ASSIGN_OR_RETURN(std::string text, env->ReadFile(index_path, kMaxIndexBytes));
      Result<ShardIndex> parsed_index = ParseShardIndex(text);
      if (!parsed_index.ok()) return parsed_index.status().Annotate(index_path);
      index = std::move(parsed_index).value();
      for (const std::string& shard : index->shards) shard_uris.push_back(JoinPath(DirName(index_path), shard));
    }
  }
  LOOM_RETURN_IF_ERROR(OpenShards(model, opener, shard_uris));
  if (index) LOOM_RETURN_IF_ERROR(CheckIndex(*index, model, index->shards));
  return model;
}

}  // namespace loom
