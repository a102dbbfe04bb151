#include "loom/source_opener.h"

namespace loom {

std::string LocalPath(std::string_view uri) {
  if (uri.starts_with("file://")) uri.remove_prefix(7);
  return std::string(uri);
}

Result<std::unique_ptr<Source>> DefaultSourceOpener::Open(const std::string& uri) {
  if (IsHttpUrl(uri)) return OpenHttpSource(uri, http_);
  if (uri.find("://") != std::string::npos && !uri.starts_with("file://")) {
    return Status::InvalidArgument("unsupported model URI \"" + uri + "\" (use a path, file://, http:// or https://)");
  }
  return env_->OpenFile(LocalPath(uri), direct_);
}

}  // namespace loom
