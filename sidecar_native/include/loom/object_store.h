// Object stores behind model URIs: s3:// (AWS S3 and S3-compatible stores), gs:// (Google Cloud
// Storage through its S3-compatible XML API) and hf:// (the Hugging Face hub). Each opens an
// object as a Source (http_source.h: parallel, ETag-pinned Range GETs), lists the objects directly
// under a prefix, and pins a URI to a fixed version where the store has one (hf: a branch or tag
// resolved to its commit, so every shard comes from the same commit and the fingerprint names it).
//   s3://BUCKET/KEY   SigV4 (libcurl) with the AWS credential chain (aws_credentials.h); endpoint
//                     --s3-endpoint / AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (default AWS, virtual-
//                     hosted), region --s3-region / AWS_REGION / AWS_DEFAULT_REGION (us-east-1),
//                     addressing --s3-addressing path|virtual|auto (auto: virtual on AWS, path elsewhere).
//   gs://BUCKET/KEY   --gcs-endpoint (https://storage.googleapis.com), path-style. Credentials, in order:
//                     HMAC keys GCS_ACCESS_KEY_ID + GCS_SECRET_ACCESS_KEY (SigV4, region "auto"); a
//                     bearer token file CLOUDSDK_AUTH_ACCESS_TOKEN_FILE; the metadata server's token
//                     (Workload Identity; GCE_METADATA_HOST, default metadata.google.internal) when it
//                     answers; else anonymous.
//   hf://ORG/REPO[@REVISION][/PATH]   --hf-endpoint / HF_ENDPOINT (https://huggingface.co); token
//                     HF_TOKEN or the file HF_TOKEN_PATH; REVISION defaults to main.
// Thread-safety: Open, List and Pin may be called concurrently.
#ifndef LOOM_OBJECT_STORE_H_
#define LOOM_OBJECT_STORE_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "loom/aws_credentials.h"
#include "loom/curl_http.h"
#include "loom/source.h"

namespace loom {

struct StoreOptions {
  std::string s3_endpoint;    // "" : AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS itself
  std::string s3_region;      // "" : AWS_REGION / AWS_DEFAULT_REGION / us-east-1
  std::string s3_addressing = "auto";  // path, virtual or auto
  std::string gcs_endpoint;   // "" : https://storage.googleapis.com
  std::string hf_endpoint;    // "" : HF_ENDPOINT / https://huggingface.co
};

struct BucketUri {
  std::string scheme;  // "s3" or "gs"
  std::string bucket;
  std::string key;     // may be empty or end in '/' (a prefix)
};
Result<BucketUri> ParseBucketUri(std::string_view uri);

struct HfUri {
  std::string repo;      // "org/name"
  std::string revision;  // "main" when not given
  std::string path;      // inside the repo; may be empty
};
Result<HfUri> ParseHfUri(std::string_view uri);
std::string FormatHfUri(const HfUri& u);

// s3://, gs:// or hf://.
bool IsObjectStoreUri(std::string_view uri);
// Does the URI name one object (.safetensors or .json) rather than a prefix of a model's files?
bool NamesObject(std::string_view uri);
// The URI of `name` next to `uri` (in the same prefix).
std::string SiblingUri(std::string_view uri, std::string_view name);
// The URI of `name` inside the prefix `uri` ("s3://b/p" or "s3://b/p/" -> "s3://b/p/NAME").
std::string ChildUri(std::string_view uri, std::string_view name);

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  virtual Result<std::unique_ptr<Source>> Open(const std::string& uri) = 0;
  // Names (not keys) of the objects directly under the prefix `uri`, sorted.
  virtual Result<std::vector<std::string>> List(const std::string& uri) = 0;
  // `uri` at a fixed version (hf: the commit of the revision); other stores return it unchanged.
  virtual Result<std::string> Pin(const std::string& uri) { return uri; }
};

std::unique_ptr<ObjectStore> NewS3Store(const StoreOptions& options, std::shared_ptr<const HttpClient> client,
                                        EnvLookup env);
std::unique_ptr<ObjectStore> NewGcsStore(const StoreOptions& options, std::shared_ptr<const HttpClient> client,
                                         EnvLookup env);
std::unique_ptr<ObjectStore> NewHfStore(const StoreOptions& options, std::shared_ptr<const HttpClient> client,
                                        EnvLookup env);

}  // namespace loom

#endif  // LOOM_OBJECT_STORE_H_
