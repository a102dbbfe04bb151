// libFuzzer target: the safetensors header parser on arbitrary bytes (treated as a whole file).
// Accepted headers must satisfy the invariants the stager relies on.
#include <cstdlib>

#include "loom/layout.h"
#include "loom/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::Result<loom::SafetensorsHeader> h = loom::ParseSafetensors({data, size}, size);
  if (!h.ok()) {
    if (h.status().message().empty()) std::abort();  // every refusal says why
    return 0;
  }
  uint64_t expect = 0;
  for (const loom::TensorInfo& t : h->tensors) {
    if (t.begin != expect || t.end < t.begin) std::abort();
    expect = t.end;
  }
  if (h->data_offset() + h->data_len() != size) std::abort();
  loom::Result<loom::Layout> layout = loom::PlanLayout({&*h, 1}, loom::kDefaultAlignment);
  if (!layout.ok()) std::abort();
  uint64_t copied = 0;
  for (const loom::CopyTask& task : loom::PlanCopies(*layout, 4096, 4)) copied += task.len;
  if (copied != layout->data_bytes) std::abort();
  return 0;
}
