#include "loom/model_name.h"

#include <string>

namespace loom {

Status ValidateModelName(std::string_view name) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("model name \"" + std::string(name.substr(0, 200)) + "\" " + why +
                                   " (use 1-128 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit)");
  };
  if (name.empty() || name.size() > 128) return bad("has the wrong length");
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) return bad("must start with a letter or digit");
  for (char c : name) {
    if (!alnum(c) && c != '_' && c != '.' && c != '-') return bad("contains a character that is not allowed");
  }
  if (name.find("..") != std::string_view::npos) return bad("contains \"..\"");
  return Status::OK();
}

}  // namespace loom
