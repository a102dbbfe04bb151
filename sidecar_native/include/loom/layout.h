// Layout planning: where each tensor of a (possibly sharded) model goes in the shared-memory
// region, re-aligned, and how the copy is cut into work items for the reader threads.
// Thread-safety: pure functions.
#ifndef LOOM_LAYOUT_H_
#define LOOM_LAYOUT_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "loom/dtype.h"
#include "loom/safetensors.h"
#include "loom/status.h"

namespace loom {

inline constexpr uint64_t kDefaultAlignment = 4096;
inline constexpr uint64_t kMinAlignment = 256;
inline constexpr uint64_t kMaxAlignment = uint64_t{1} << 30;
inline constexpr uint64_t kRegionGranule = 4096;  // region sizes are whole pages

struct PlacedTensor {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<uint64_t> shape;
  uint32_t shard = 0;       // index into the model's shard list
  uint64_t src_offset = 0;  // absolute offset in the shard file
  uint64_t nbytes = 0;
  uint64_t offset = 0;      // offset in the region, a multiple of the alignment
};

struct Layout {
  std::vector<PlacedTensor> tensors;  // shard order, then file order
  uint64_t alignment = kDefaultAlignment;
  uint64_t data_bytes = 0;    // sum of tensor sizes
  uint64_t region_bytes = 0;  // region size: end of the last tensor rounded up to a page
};

// A power of two in [256 B, 1 GiB].
Status ValidateAlignment(uint64_t alignment);

// Places every tensor of every shard. Fails on a tensor name that appears in two shards.
Result<Layout> PlanLayout(std::span<const SafetensorsHeader> shards, uint64_t alignment);

// One read: a contiguous source range of one shard scattered to region offsets.
struct CopyPiece {
  uint64_t dst_offset = 0;
  uint64_t len = 0;
};
struct CopyTask {
  uint32_t shard = 0;
  uint64_t src_offset = 0;
  uint64_t len = 0;
  std::vector<CopyPiece> pieces;  // in source order; lengths sum to len
};

// Cuts the layout into reads of at most `chunk_bytes` (tensors larger than that are split;
// consecutive small tensors share one read) with at most `max_pieces` pieces each.
// REQUIRES: chunk_bytes > 0, max_pieces > 0.
std::vector<CopyTask> PlanCopies(const Layout& layout, uint64_t chunk_bytes, size_t max_pieces = 1024);

}  // namespace loom

#endif  // LOOM_LAYOUT_H_
