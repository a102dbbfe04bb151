// Byte sizes on the command line: "4096", "64K", "16M", "1G", "4KiB", "2GB" (powers of 1024).
// Thread-safety: pure function.
#ifndef LOOM_SIZE_PARSE_H_
#define LOOM_SIZE_PARSE_H_

#include <cstdint>
#include <string_view>

#include "loom/status.h"

namespace loom {

Result<uint64_t> ParseByteSize(std::string_view text);

}  // namespace loom

#endif  // LOOM_SIZE_PARSE_H_
