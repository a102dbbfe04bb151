#include "loom/s3_xml.h"

#include "loom/xml.h"

namespace loom {
namespace {

Result<uint64_t> ParseSize(const std::string& s) {
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) {
    return Status::InvalidArgument("ListObjects: <Size> is not a byte count: \"" + s.substr(0, 32) + "\"");
  }
  return static_cast<uint64_t>(std::stoull(s));
}

}  // namespace

Result<ListPage> ParseListObjects(std::string_view xml) {
  LOOM_ASSIGN_OR_RETURN(XmlElement root, ParseXml(xml));
  if (root.name != "ListBucketResult") {
    return Status::InvalidArgument("ListObjects: expected <ListBucketResult>, got <" + root.name.substr(0, 64) + ">");
  }
  ListPage page;
  for (const XmlElement* c : root.Children("Contents")) {
    ListedObject o;
    o.key = c->ChildText("Key");
    if (o.key.empty()) return Status::InvalidArgument("ListObjects: <Contents> without a <Key>");
    LOOM_ASSIGN_OR_RETURN(o.size, ParseSize(c->ChildText("Size")));
    o.etag = c->ChildText("ETag");
    page.objects.push_back(std::move(o));
  }
  for (const XmlElement* p : root.Children("CommonPrefixes")) page.common_prefixes.push_back(p->ChildText("Prefix"));
  const std::string truncated = root.ChildText("IsTruncated");
  if (!truncated.empty() && truncated != "true" && truncated != "false") {
    return Status::InvalidArgument("ListObjects: <IsTruncated> is neither true nor false");
  }
  page.truncated = truncated == "true";
  if (page.truncated) {
    page.next_token = root.ChildText("NextContinuationToken");
    if (page.next_token.empty()) page.next_token = root.ChildText("NextMarker");
    if (page.next_token.empty() && !page.objects.empty()) page.next_token = page.objects.back().key;  // V1
    if (page.next_token.empty()) return Status::InvalidArgument("ListObjects: a truncated page with no continuation");
  }
  return page;
}

S3ErrorBody ParseS3Error(std::string_view xml) {
  Result<XmlElement> root = ParseXml(xml);
  if (!root.ok()) return {};
  // S3 and GCS answer <Error>; STS (a query API) wraps it: <ErrorResponse><Error>.
  const XmlElement* error = root->name == "Error" ? &*root : nullptr;
  if (root->name == "ErrorResponse") error = root->Child("Error");
  if (error == nullptr) return {};
  S3ErrorBody out{error->ChildText("Code"), error->ChildText("Message")};
  // Keep them short and printable: they end up in one-line reasons.
  auto clip = [](std::string& s) {
    if (s.size() > 200) s = s.substr(0, 200) + "...";
    for (char& c : s) {
      if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
  };
  clip(out.code);
  clip(out.message);
  return out;
}

Result<StsCredentials> ParseAssumeRoleWithWebIdentity(std::string_view xml) {
  LOOM_ASSIGN_OR_RETURN(XmlElement root, ParseXml(xml));
  if (root.name != "AssumeRoleWithWebIdentityResponse") {
    return Status::InvalidArgument("STS: expected <AssumeRoleWithWebIdentityResponse>");
  }
  const XmlElement* result = root.Child("AssumeRoleWithWebIdentityResult");
  const XmlElement* creds = result ? result->Child("Credentials") : nullptr;
  if (creds == nullptr) return Status::InvalidArgument("STS: the response has no <Credentials>");
  StsCredentials out{creds->ChildText("AccessKeyId"), creds->ChildText("SecretAccessKey"),
                     creds->ChildText("SessionToken"), creds->ChildText("Expiration")};
  if (out.access_key_id.empty() || out.secret_access_key.empty()) {
    return Status::InvalidArgument("STS: <Credentials> lacks AccessKeyId or SecretAccessKey");
  }
  return out;
}

}  // namespace loom
