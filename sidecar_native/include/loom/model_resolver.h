// Model resolution: a model URI names a .safetensors file, a directory (holding
// model.safetensors.index.json, or *.safetensors files), an index file, or the http(s) URL of
// a file or an index. ResolveModel opens every shard and validates every header before a single
// byte is staged. Thread-safety: ResolveModel is reentrant; ResolvedModel is not shared.
#ifndef LOOM_MODEL_RESOLVER_H_
#define LOOM_MODEL_RESOLVER_H_

#include <memory>
#include <string>
#include <vector>

#include "loom/env.h"
#include "loom/safetensors.h"
#include "loom/source.h"
#include "loom/source_opener.h"

namespace loom {

struct ResolvedModel {
  std::string uri;
  std::vector<std::unique_ptr<Source>> shards;  // in a stable order (sorted shard names)
  std::vector<SafetensorsHeader> headers;       // headers[i] belongs to shards[i]
};

// Reads (one request for headers up to 1 MiB) and validates the header of one source.
Result<SafetensorsHeader> ReadHeader(const Source& source);

Result<ResolvedModel> ResolveModel(const std::string& uri, SourceOpener& opener, Env* env);

}  // namespace loom

#endif  // LOOM_MODEL_RESOLVER_H_
