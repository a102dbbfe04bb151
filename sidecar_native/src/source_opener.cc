#include "loom/source_opener.h"

namespace loom {

std::string LocalPath(std::string_view uri) {
  if (uri.starts_with("file://")) uri.remove_prefix(7);
  return std::string(uri);
}

bool IsLocalUri(std::string_view uri) { return uri.find("://") == std::string_view::npos || uri.starts_with("file://"); }

Status CheckUriScheme(std::string_view uri) {
  if (IsLocalUri(uri) || IsHttpUrl(uri) || IsObjectStoreUri(uri)) return Status::OK();
  if (uri.starts_with("pvc://")) {
    return Status::InvalidArgument("\"" + std::string(uri) +
                                   "\": pvc:// is mounted by the operator; give the sidecar the mounted path");
  }
  return Status::InvalidArgument("unsupported model URI \"" + std::string(uri) +
                                 "\" (use a path, file://, http://, https://, s3://, gs:// or hf://)");
}

DefaultSourceOpener::DefaultSourceOpener(Env* env, bool direct, HttpOptions http, StoreOptions stores, EnvLookup vars)
    : env_(env), direct_(direct), client_(std::make_shared<const HttpClient>(std::move(http))),
      stores_(std::move(stores)), vars_(std::move(vars)) {}

Result<ObjectStore*> DefaultSourceOpener::StoreFor(std::string_view uri) {
  std::lock_guard<std::mutex> lock(mu_);
  if (uri.starts_with("s3://")) {
    if (!s3_) s3_ = NewS3Store(stores_, client_, vars_);
    return s3_.get();
  }
  if (uri.starts_with("gs://")) {
    if (!gcs_) gcs_ = NewGcsStore(stores_, client_, vars_);
    return gcs_.get();
  }
  if (uri.starts_with("hf://")) {
    if (!hf_) hf_ = NewHfStore(stores_, client_, vars_);
    return hf_.get();
  }
  return Status::Internal("no object store for " + std::string(uri));
}

Result<std::unique_ptr<Source>> DefaultSourceOpener::Open(const std::string& uri) {
  LOOM_RETURN_IF_ERROR(CheckUriScheme(uri));
  if (IsHttpUrl(uri)) return OpenHttpSource(uri, client_);
  if (IsObjectStoreUri(uri)) {
    LOOM_ASSIGN_OR_RETURN(ObjectStore * store, StoreFor(uri));
    return store->Open(uri);
  }
  return env_->OpenFile(LocalPath(uri), direct_);
}

Result<std::vector<std::string>> DefaultSourceOpener::List(const std::string& uri) {
  LOOM_RETURN_IF_ERROR(CheckUriScheme(uri));
  if (!IsObjectStoreUri(uri)) return Status::InvalidArgument("cannot list " + uri);
  LOOM_ASSIGN_OR_RETURN(ObjectStore * store, StoreFor(uri));
  return store->List(uri);
}

Result<std::string> DefaultSourceOpener::Pin(const std::string& uri) {
  if (!IsObjectStoreUri(uri)) return uri;
  LOOM_ASSIGN_OR_RETURN(ObjectStore * store, StoreFor(uri));
  return store->Pin(uri);
}

}  // namespace loom
