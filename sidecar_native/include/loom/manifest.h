// The manifest of a staged model: what a consumer needs to map the region and find each
// tensor, plus the source fingerprints. Written next to the region as NAME.manifest.json; its
// atomic rename into place is the commit point (the ready marker). ParseManifest re-validates
// every offset, so a damaged manifest is refused rather than trusted. Thread-safety: pure.
#ifndef LOOM_MANIFEST_H_
#define LOOM_MANIFEST_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "loom/dtype.h"
#include "loom/fingerprint.h"
#include "loom/status.h"

namespace loom {

inline constexpr char kManifestFormat[] = "loom-shm/1";

struct ManifestTensor {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<uint64_t> shape;
  uint64_t offset = 0;  // in the region
  uint64_t nbytes = 0;
  bool operator==(const ManifestTensor&) const = default;
};

struct Manifest {
  std::string name;
  std::string uri;          // what was asked for (file, directory, index or URL)
  std::string region_file;  // file name of the region, in the same directory
  uint64_t region_bytes = 0;
  uint64_t alignment = 0;
  std::string generation;   // unique per staging; part of region_file
  int64_t created_unix_ms = 0;
  double stage_seconds = 0;
  std::vector<SourceFingerprint> sources;
  std::string fingerprint;  // ModelFingerprint(sources)
  std::map<std::string, std::string> metadata;  // merged __metadata__ of the shards
  std::vector<ManifestTensor> tensors;
  bool operator==(const Manifest&) const = default;
};

std::string ManifestFileName(std::string_view model_name);   // NAME.manifest.json
std::string RegionFileName(std::string_view model_name, std::string_view generation);  // NAME.GEN.region

std::string SerializeManifest(const Manifest& manifest);
// Parses and validates: known format, valid names, region_file of this model, tensors inside
// the region, aligned, sized by dtype x shape, not overlapping, fingerprint consistent.
Result<Manifest> ParseManifest(std::string_view json);

}  // namespace loom

#endif  // LOOM_MANIFEST_H_
