// Strict UTF-8 validation with the same acceptance as Rust's core::str::from_utf8
// (no overlong forms, no surrogates, nothing above U+10FFFF). Thread-safety: pure function.
#ifndef LOOM_UTF8_H_
#define LOOM_UTF8_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace loom {

// nullopt when `bytes` is valid UTF-8, else the offset of the first invalid sequence.
std::optional<size_t> FindInvalidUtf8(std::string_view bytes);

// `bytes` with every invalid sequence replaced by U+FFFD, safe to put in JSON and logs.
std::string SanitizeUtf8(std::string_view bytes);

}  // namespace loom

#endif  // LOOM_UTF8_H_
