// A Source over a local file, read with pread/preadv; with `direct` the file is opened
// O_DIRECT and read in aligned blocks through a per-thread bounce buffer (bypassing the page
// cache, for cold storage). Thread-safe: ReadV uses positional reads only.
#ifndef LOOM_LOCAL_SOURCE_H_
#define LOOM_LOCAL_SOURCE_H_

#include <memory>
#include <string>

#include "loom/source.h"

namespace loom {

inline constexpr size_t kDirectIoAlignment = 4096;

Result<std::unique_ptr<Source>> OpenLocalFile(const std::string& path, bool direct);

}  // namespace loom

#endif  // LOOM_LOCAL_SOURCE_H_
