// libFuzzer target: the AWS shared credentials file parser (a file mounted from a Secret) and
// the ISO 8601 parser of STS expirations. An accepted profile has both keys.
#include <cstdlib>
#include <string_view>

#include "loom/aws_credentials.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (std::string_view profile : {"default", "ml"}) {
    loom::Result<loom::AwsCredentials> c = loom::ParseCredentialsFile(text, profile);
    if (c.ok() && (c->access_key_id.empty() || c->secret_access_key.empty())) std::abort();
  }
  (void)loom::ParseIso8601(text);
  return 0;
}
