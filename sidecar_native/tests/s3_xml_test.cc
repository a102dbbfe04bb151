#include "loom/s3_xml.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(S3XmlTest, ListObjectsV2Page) {
  Result<ListPage> p = ParseListObjects(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<Name>models</Name><IsTruncated>true</IsTruncated><Contents><Key>r/a.safetensors</Key><Size>12</Size>"
      "<ETag>&#34;e-2&#34;</ETag></Contents><CommonPrefixes><Prefix>r/old/</Prefix></CommonPrefixes>"
      "<NextContinuationToken>tok/=</NextContinuationToken></ListBucketResult>");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->objects.size(), 1u);
  EXPECT_EQ(p->objects[0].key, "r/a.safetensors");
  EXPECT_EQ(p->objects[0].size, 12u);
  EXPECT_EQ(p->objects[0].etag, "\"e-2\"");
  EXPECT_EQ(p->common_prefixes, std::vector<std::string>{"r/old/"});
  EXPECT_TRUE(p->truncated);
  EXPECT_EQ(p->next_token, "tok/=");
}

TEST(S3XmlTest, ListObjectsRefusesMalformedPages) {
  EXPECT_FALSE(ParseListObjects("<Error><Code>NoSuchBucket</Code></Error>").ok());
  EXPECT_FALSE(ParseListObjects("<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>").ok());
  EXPECT_FALSE(
      ParseListObjects("<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>").ok());
  EXPECT_FALSE(ParseListObjects("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>").ok());
  EXPECT_FALSE(ParseListObjects("<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>").ok());
}

TEST(S3XmlTest, ErrorBodiesKeepOnlyCodeAndMessage) {
  S3ErrorBody e = ParseS3Error(
      "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match"
      "</Message><AWSAccessKeyId>AKIASECRETISH</AWSAccessKeyId><StringToSign>AWS4-HMAC</StringToSign></Error>");
  EXPECT_EQ(e.code, "SignatureDoesNotMatch");
  EXPECT_EQ(e.message, "The request signature we calculated does not match");
  EXPECT_EQ(ParseS3Error("not xml").code, "");
  EXPECT_EQ(ParseS3Error("").message, "");
  EXPECT_EQ(ParseS3Error("<Error><Message>" + std::string(500, 'x') + "</Message></Error>").message.size(), 203u);
  EXPECT_EQ(ParseS3Error("<ErrorResponse><Error><Code>InvalidIdentityToken</Code></Error></ErrorResponse>").code,
            "InvalidIdentityToken");  // STS
  EXPECT_EQ(ParseS3Error("<Other><Error><Code>X</Code></Error></Other>").code, "");
}

TEST(S3XmlTest, AssumeRoleWithWebIdentity) {
  Result<StsCredentials> c = ParseAssumeRoleWithWebIdentity(
      "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1"
      "</AccessKeyId><SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken><Expiration>"
      "2026-12-03T14:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult>"
      "</AssumeRoleWithWebIdentityResponse>");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->access_key_id, "ASIA1");
  EXPECT_EQ(c->session_token, "t");
  EXPECT_EQ(c->expiration, "2026-12-03T14:00:00Z");
  EXPECT_FALSE(ParseAssumeRoleWithWebIdentity("<AssumeRoleWithWebIdentityResponse/>").ok());
  EXPECT_FALSE(ParseAssumeRoleWithWebIdentity("<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>").ok());
}

}  // namespace
}  // namespace loom
