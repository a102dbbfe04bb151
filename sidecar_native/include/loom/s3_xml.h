// The S3 and STS response documents the sidecar reads: ListObjectsV2 pages, Error bodies and
// AssumeRoleWithWebIdentity results (the same documents GCS's XML API answers with). Each
// parser validates what it reads before returning it (sizes are numbers, keys are non-empty).
// Thread-safety: pure functions.
#ifndef LOOM_S3_XML_H_
#define LOOM_S3_XML_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loom/status.h"

namespace loom {

struct ListedObject {
  std::string key;
  uint64_t size = 0;
  std::string etag;  // as listed, quotes included
};

struct ListPage {
  std::vector<ListedObject> objects;
  std::vector<std::string> common_prefixes;
  bool truncated = false;
  std::string next_token;  // NextContinuationToken (V2) or NextMarker (V1), when truncated
};

// <ListBucketResult> of ListObjectsV2 (V1's NextMarker is accepted too). InvalidArgument when
// the document is not one, or a truncated page carries no continuation.
Result<ListPage> ParseListObjects(std::string_view xml);

struct S3ErrorBody {
  std::string code;     // "NoSuchKey", "AccessDenied", "SignatureDoesNotMatch", "SlowDown", ...
  std::string message;  // the server's sentence
};

// <Error><Code/><Message/></Error> (STS: inside <ErrorResponse>); empty fields when the body is not such a document. Never
// returns request-specific fields (StringToSign, CanonicalRequest, AWSAccessKeyId).
S3ErrorBody ParseS3Error(std::string_view xml);

struct StsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  std::string expiration;  // ISO 8601, e.g. 2026-01-01T00:00:00Z
};

// <AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>...
Result<StsCredentials> ParseAssumeRoleWithWebIdentity(std::string_view xml);

}  // namespace loom

#endif  // LOOM_S3_XML_H_
