// libFuzzer target: the manifest parser (the sidecar re-reads manifests on restart). Accepted
// manifests keep every tensor inside the region, and serialize back to an equal manifest.
#include <cstdlib>
#include <string_view>

#include "loom/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::Result<loom::Manifest> m = loom::ParseManifest(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!m.ok()) return 0;
  for (const loom::ManifestTensor& t : m->tensors) {
    if (t.offset > m->region_bytes || t.nbytes > m->region_bytes - t.offset) std::abort();
  }
  loom::Result<loom::Manifest> again = loom::ParseManifest(loom::SerializeManifest(*m));
  if (!again.ok() || !(*again == *m)) std::abort();
  return 0;
}
