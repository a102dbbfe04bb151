// SourceOpener: turns a URI (a local path, file://PATH, http:// or https://) into an open
// Source. Tests substitute their own. Thread-safety: Open may be called concurrently.
#ifndef LOOM_SOURCE_OPENER_H_
#define LOOM_SOURCE_OPENER_H_

#include <memory>
#include <string>
#include <string_view>

#include "loom/env.h"
#include "loom/http_source.h"
#include "loom/source.h"

namespace loom {

class SourceOpener {
 public:
  virtual ~SourceOpener() = default;
  virtual Result<std::unique_ptr<Source>> Open(const std::string& uri) = 0;
};

class DefaultSourceOpener final : public SourceOpener {
 public:
  // `direct`: open local files with O_DIRECT.
  DefaultSourceOpener(Env* env, bool direct, HttpOptions http) : env_(env), direct_(direct), http_(std::move(http)) {}
  Result<std::unique_ptr<Source>> Open(const std::string& uri) override;

 private:
  Env* env_;
  bool direct_;
  HttpOptions http_;
};

// The filesystem path of a local URI ("file:///a/b" -> "/a/b"; plain paths unchanged).
std::string LocalPath(std::string_view uri);

}  // namespace loom

#endif  // LOOM_SOURCE_OPENER_H_
