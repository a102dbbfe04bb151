#include "loom/layout.h"

#include <unordered_map>

namespace loom {
namespace {

bool RoundUp(uint64_t value, uint64_t multiple, uint64_t* out) {
  uint64_t sum;
  if (__builtin_add_overflow(value, multiple - 1, &sum)) return false;
  *out = sum / multiple * multiple;
  return true;
}

}  // namespace

Status ValidateAlignment(uint64_t alignment) {
  if (alignment < kMinAlignment || alignment > kMaxAlignment || (alignment & (alignment - 1)) != 0) {
    return Status::InvalidArgument("alignment " + std::to_string(alignment) +
                                   " must be a power of two between 256 and 1073741824 bytes");
  }
  return Status::OK();
}

Result<Layout> PlanLayout(std::span<const SafetensorsHeader> shards, uint64_t alignment) {
  LOOM_RETURN_IF_ERROR(ValidateAlignment(alignment));
  Layout layout;
  layout.alignment = alignment;
  std::unordered_map<std::string, uint32_t> seen;
  uint64_t cursor = 0;
  for (uint32_t s = 0; s < shards.size(); ++s) {
    for (const TensorInfo& t : shards[s].tensors) {
      if (auto [it, inserted] = seen.emplace(t.name, s); !inserted) {
        return Status::InvalidModel("tensor `" + t.name + "` appears in shard " + std::to_string(it->second) +
                                    " and shard " + std::to_string(s));
      }
      PlacedTensor p{t.name, t.dtype, t.shape, s, shards[s].data_offset() + t.begin, t.nbytes(), 0};
      uint64_t end;
      if (!RoundUp(cursor, alignment, &p.offset) || __builtin_add_overflow(p.offset, p.nbytes, &end) ||
          __builtin_add_overflow(layout.data_bytes, p.nbytes, &layout.data_bytes)) {
        return Status::InvalidModel("model is too large to place in one region");
      }
      cursor = end;
      layout.tensors.push_back(std::move(p));
    }
  }
  if (!RoundUp(cursor, kRegionGranule, &layout.region_bytes)) {
    return Status::InvalidModel("model is too large to place in one region");
  }
  return layout;
}

std::vector<CopyTask> PlanCopies(const Layout& layout, uint64_t chunk_bytes, size_t max_pieces) {
  std::vector<CopyTask> tasks;
  CopyTask cur;
  auto flush = [&] {
    if (!cur.pieces.empty()) tasks.push_back(std::move(cur));
    cur = CopyTask{};
  };
  for (const PlacedTensor& t : layout.tensors) {
    uint64_t done = 0;
    while (done < t.nbytes) {
      const uint64_t src = t.src_offset + done;
      const bool contiguous = !cur.pieces.empty() && cur.shard == t.shard && cur.src_offset + cur.len == src;
      if (!contiguous || cur.len >= chunk_bytes || cur.pieces.size() >= max_pieces) {
        flush();
        cur.shard = t.shard;
        cur.src_offset = src;
      }
      const uint64_t take = std::min(t.nbytes - done, chunk_bytes - cur.len);
      cur.pieces.push_back({t.offset + done, take});
      cur.len += take;
      done += take;
    }
  }
  flush();
  return tasks;
}

}  // namespace loom
