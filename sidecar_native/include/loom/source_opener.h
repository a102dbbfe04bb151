// SourceOpener: turns a URI (a local path, file://PATH, http(s)://, s3://, gs:// or hf://) into an
// open Source, lists the objects under an object-store prefix, and pins a URI to a fixed version
// (object_store.h). Tests substitute their own. Thread-safety: every method may be called
// concurrently.
#ifndef LOOM_SOURCE_OPENER_H_
#define LOOM_SOURCE_OPENER_H_

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "loom/aws_credentials.h"
#include "loom/env.h"
#include "loom/http_source.h"
#include "loom/object_store.h"
#include "loom/source.h"

namespace loom {

class SourceOpener {
 public:
  virtual ~SourceOpener() = default;
  virtual Result<std::unique_ptr<Source>> Open(const std::string& uri) = 0;
  // Names of the objects directly under an object-store prefix URI, sorted.
  virtual Result<std::vector<std::string>> List(const std::string& uri) {
    return Status::InvalidArgument("cannot list " + uri);
  }
  // `uri` at a fixed version (hf: the commit of its revision); unchanged where there is none.
  virtual Result<std::string> Pin(const std::string& uri) { return uri; }
};

class DefaultSourceOpener final : public SourceOpener {
 public:
  // `direct`: open local files with O_DIRECT. `env` is where credentials and endpoints are
  // looked up (the process environment by default).
  DefaultSourceOpener(Env* env, bool direct, HttpOptions http, StoreOptions stores = {},
                      EnvLookup vars = ProcessEnv());
  Result<std::unique_ptr<Source>> Open(const std::string& uri) override;
  Result<std::vector<std::string>> List(const std::string& uri) override;
  Result<std::string> Pin(const std::string& uri) override;

 private:
  Result<ObjectStore*> StoreFor(std::string_view uri);

  Env* env_;
  bool direct_;
  std::shared_ptr<const HttpClient> client_;
  StoreOptions stores_;
  EnvLookup vars_;
  std::mutex mu_;
  std::unique_ptr<ObjectStore> s3_, gcs_, hf_;
};

// The filesystem path of a local URI ("file:///a/b" -> "/a/b"; plain paths unchanged).
std::string LocalPath(std::string_view uri);
// Is `uri` a local path or file:// URI?
bool IsLocalUri(std::string_view uri);
// Refuses schemes the sidecar does not read, naming those it does.
Status CheckUriScheme(std::string_view uri);

}  // namespace loom

#endif  // LOOM_SOURCE_OPENER_H_
