// libFuzzer target: the XML reader and the S3/STS documents built on it (ListObjectsV2 pages,
// Error bodies, AssumeRoleWithWebIdentity results), which the sidecar reads from the network.
// Accepted listings have non-empty keys and a continuation when truncated; error fields stay
// short and free of control characters.
#include <cstdlib>
#include <string_view>

#include "loom/s3_xml.h"
#include "loom/xml.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view doc(reinterpret_cast<const char*>(data), size);
  (void)loom::ParseXml(doc);
  loom::Result<loom::ListPage> page = loom::ParseListObjects(doc);
  if (page.ok()) {
    for (const loom::ListedObject& o : page->objects) {
      if (o.key.empty()) std::abort();
    }
    if (page->truncated && page->next_token.empty()) std::abort();
  }
  const loom::S3ErrorBody e = loom::ParseS3Error(doc);
  for (const std::string* s : {&e.code, &e.message}) {
    if (s->size() > 203) std::abort();
    for (char c : *s) {
      if (static_cast<unsigned char>(c) < 0x20) std::abort();
    }
  }
  loom::Result<loom::StsCredentials> sts = loom::ParseAssumeRoleWithWebIdentity(doc);
  if (sts.ok() && (sts->access_key_id.empty() || sts->secret_access_key.empty())) std::abort();
  return 0;
}
