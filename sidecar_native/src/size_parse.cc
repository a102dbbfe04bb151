#include "loom/size_parse.h"

#include <cctype>
#include <string>

namespace loom {

Result<uint64_t> ParseByteSize(std::string_view text) {
  const std::string original(text);
  auto bad = [&] {
    return Status::InvalidArgument("\"" + original + "\" is not a byte size (examples: 4096, 64K, 16M, 1G)");
  };
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    if (__builtin_mul_overflow(value, 10, &value) || __builtin_add_overflow(value, text[i] - '0', &value)) {
      return bad();
    }
    ++i;
  }
  if (i == 0) return bad();
  std::string suffix;
  for (; i < text.size(); ++i) suffix += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
  uint64_t mult = 1;
  if (suffix.empty() || suffix == "B") {
    mult = 1;
  } else if (suffix == "K" || suffix == "KB" || suffix == "KIB") {
    mult = uint64_t{1} << 10;
  } else if (suffix == "M" || suffix == "MB" || suffix == "MIB") {
    mult = uint64_t{1} << 20;
  } else if (suffix == "G" || suffix == "GB" || suffix == "GIB") {
    mult = uint64_t{1} << 30;
  } else if (suffix == "T" || suffix == "TB" || suffix == "TIB") {
    mult = uint64_t{1} << 40;
  } else {
    return bad();
  }
  uint64_t out;
  if (__builtin_mul_overflow(value, mult, &out)) return bad();
  return out;
}

}  // namespace loom
