#include "loom/manifest.h"

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>

#include "loom/layout.h"
#include "loom/model_name.h"
#include "loom/utf8.h"

namespace loom {
namespace {

using json = nlohmann::json;

Status Bad(const std::string& msg) { return Status::InvalidModel("manifest: " + msg); }

// Typed field access that never throws.
class Reader {
 public:
  explicit Reader(const json& obj) : obj_(obj) {}
  bool Str(const char* key, std::string* out) {
    auto it = obj_.find(key);
    if (it == obj_.end() || !it->is_string()) return Fail(key, "a string");
    *out = it->get<std::string>();
    return true;
  }
  bool U64(const char* key, uint64_t* out) {
    auto it = obj_.find(key);
    if (it == obj_.end() || !it->is_number_unsigned()) return Fail(key, "an integer >= 0");
    *out = it->get<uint64_t>();
    return true;
  }
  bool I64(const char* key, int64_t* out) {
    auto it = obj_.find(key);
    if (it == obj_.end() || !it->is_number_integer() ||
        (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{INT64_MAX})) {
      return Fail(key, "a 64-bit integer");
    }
    *out = it->get<int64_t>();
    return true;
  }
  bool Num(const char* key, double* out) {
    auto it = obj_.find(key);
    if (it == obj_.end() || !it->is_number()) return Fail(key, "a number");
    *out = it->get<double>();
    return true;
  }
  const json* Field(const char* key, json::value_t type) {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->type() != type) {
      Fail(key, type == json::value_t::array ? "an array" : "an object");
      return nullptr;
    }
    return &*it;
  }
  const std::string& error() const { return error_; }

 private:
  bool Fail(const char* key, const char* what) {
    if (error_.empty()) error_ = std::string("field \"") + key + "\" must be " + what;
    return false;
  }
  const json& obj_;
  std::string error_;
};

}  // namespace

std::string ManifestFileName(std::string_view model_name) { return std::string(model_name) + ".manifest.json"; }

std::string RegionFileName(std::string_view model_name, std::string_view generation) {
  return std::string(model_name) + "." + std::string(generation) + ".region";
}

std::string SerializeManifest(const Manifest& m) {
  json j;
  j["format"] = kManifestFormat;
  j["name"] = m.name;
  j["uri"] = m.uri;
  j["region_file"] = m.region_file;
  j["region_bytes"] = m.region_bytes;
  j["alignment"] = m.alignment;
  j["generation"] = m.generation;
  j["created_unix_ms"] = m.created_unix_ms;
  j["stage_seconds"] = m.stage_seconds;
  j["fingerprint"] = m.fingerprint;
  json sources = json::array();
  for (const SourceFingerprint& s : m.sources) {
    sources.push_back({{"uri", s.uri}, {"size", s.size}, {"version", s.version}, {"sample_sha256", s.sample_sha256}});
  }
  j["sources"] = std::move(sources);
  j["metadata"] = m.metadata;
  json tensors = json::array();
  for (const ManifestTensor& t : m.tensors) {
    tensors.push_back({{"name", t.name}, {"dtype", DtypeName(t.dtype)}, {"shape", t.shape}, {"offset", t.offset},
                       {"nbytes", t.nbytes}});
  }
  j["tensors"] = std::move(tensors);
  return j.dump(1, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<Manifest> ParseManifest(std::string_view text) {
  if (FindInvalidUtf8(text)) return Bad("not valid UTF-8");
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return Bad("not a JSON object");
  Manifest m;
  Reader r(root);
  std::string format;
  r.Str("format", &format) && r.Str("name", &m.name) && r.Str("uri", &m.uri) &&
      r.Str("region_file", &m.region_file) && r.U64("region_bytes", &m.region_bytes) &&
      r.U64("alignment", &m.alignment) && r.Str("generation", &m.generation) &&
      r.I64("created_unix_ms", &m.created_unix_ms) && r.Num("stage_seconds", &m.stage_seconds) &&
      r.Str("fingerprint", &m.fingerprint);
  const json* sources = r.error().empty() ? r.Field("sources", json::value_t::array) : nullptr;
  const json* metadata = r.error().empty() ? r.Field("metadata", json::value_t::object) : nullptr;
  const json* tensors = r.error().empty() ? r.Field("tensors", json::value_t::array) : nullptr;
  if (!r.error().empty()) return Bad(r.error());
  if (format != kManifestFormat) return Bad("unsupported format \"" + format + "\" (expected loom-shm/1)");
  if (Status s = ValidateModelName(m.name); !s.ok()) return Bad(s.message());
  if (m.generation.empty() || m.generation.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Bad("generation must be lower-case hex");
  }
  if (m.region_file != RegionFileName(m.name, m.generation)) {
    return Bad("region_file \"" + m.region_file + "\" does not belong to model \"" + m.name + "\"");
  }
  if (Status s = ValidateAlignment(m.alignment); !s.ok()) return Bad(s.message());
  if (m.region_bytes % kRegionGranule != 0) return Bad("region_bytes is not a multiple of 4096");

  for (const json& s : *sources) {
    if (!s.is_object()) return Bad("sources entries must be objects");
    Reader sr(s);
    SourceFingerprint f;
    sr.Str("uri", &f.uri) && sr.U64("size", &f.size) && sr.Str("version", &f.version) &&
        sr.Str("sample_sha256", &f.sample_sha256);
    if (!sr.error().empty()) return Bad("sources: " + sr.error());
    m.sources.push_back(std::move(f));
  }
  if (m.sources.empty()) return Bad("no sources");
  if (m.fingerprint != ModelFingerprint(m.sources)) return Bad("fingerprint does not match its sources");
  for (auto it = metadata->begin(); it != metadata->end(); ++it) {
    if (!it.value().is_string()) return Bad("metadata values must be strings");
    m.metadata[it.key()] = it.value().get<std::string>();
  }

  std::set<std::string> names;
  for (const json& tj : *tensors) {
    if (!tj.is_object()) return Bad("tensors entries must be objects");
    Reader tr(tj);
    ManifestTensor t;
    std::string dtype;
    tr.Str("name", &t.name) && tr.Str("dtype", &dtype) && tr.U64("offset", &t.offset) &&
        tr.U64("nbytes", &t.nbytes);
    const json* shape = tr.error().empty() ? tr.Field("shape", json::value_t::array) : nullptr;
    if (!tr.error().empty()) return Bad("tensors: " + tr.error());
    std::optional<Dtype> dt = ParseDtype(dtype);
    if (!dt) return Bad("tensor `" + t.name + "` has unknown dtype \"" + dtype + "\"");
    t.dtype = *dt;
    uint64_t nbits = DtypeBits(t.dtype);
    for (const json& d : *shape) {
      if (!d.is_number_unsigned()) return Bad("tensor `" + t.name + "` has a bad shape");
      t.shape.push_back(d.get<uint64_t>());
      if (__builtin_mul_overflow(nbits, t.shape.back(), &nbits)) return Bad("tensor `" + t.name + "` overflows");
    }
    if (nbits % 8 != 0 || nbits / 8 != t.nbytes) {
      return Bad("tensor `" + t.name + "`: nbytes does not match dtype and shape");
    }
    uint64_t end;
    if (t.offset % m.alignment != 0 || __builtin_add_overflow(t.offset, t.nbytes, &end) || end > m.region_bytes) {
      return Bad("tensor `" + t.name + "` is misaligned or lies outside the region");
    }
    if (!names.insert(t.name).second) return Bad("tensor `" + t.name + "` is listed twice");
    m.tensors.push_back(std::move(t));
  }
  std::vector<const ManifestTensor*> by_offset;
  for (const ManifestTensor& t : m.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ManifestTensor* a, const ManifestTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset) {
      return Bad("tensors `" + by_offset[i - 1]->name + "` and `" + by_offset[i]->name + "` overlap");
    }
  }
  return m;
}

}  // namespace loom
