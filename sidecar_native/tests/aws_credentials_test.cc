#include "loom/aws_credentials.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <map>
#include <thread>

#include "testutil.h"

namespace loom {
namespace {

EnvLookup Vars(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::shared_ptr<const HttpClient> Client() {
  HttpOptions o;
  o.retries = 0;
  o.throttle_retries = 0;
  return std::make_shared<const HttpClient>(o);
}

TEST(AwsCredentialsTest, ParsesProfilesOfASharedCredentialsFile) {
  const std::string text =
      "# comment\n[default]\naws_access_key_id = AK1\naws_secret_access_key=SK1\r\n\n"
      "[profile ml]\n; other\naws_access_key_id = AK2\naws_secret_access_key = SK2\naws_session_token = T2\n"
      "s3 =\n  max_concurrent_requests = 20\n";
  Result<AwsCredentials> d = ParseCredentialsFile(text, "default");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->access_key_id, "AK1");
  EXPECT_EQ(d->secret_access_key, "SK1");
  Result<AwsCredentials> ml = ParseCredentialsFile(text, "ml");
  ASSERT_TRUE(ml.ok()) << ml.status().ToString();
  EXPECT_EQ(ml->session_token, "T2");
  EXPECT_EQ(ParseCredentialsFile(text, "other").status().code(), StatusCode::kNotFound);
  Result<AwsCredentials> no_secret = ParseCredentialsFile("[default]\naws_access_key_id = AK\n", "default");
  EXPECT_EQ(no_secret.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ParseCredentialsFile("aws_access_key_id = x\n", "default").status().code(), StatusCode::kInvalidArgument);
  Result<AwsCredentials> bad = ParseCredentialsFile("[default]\njunk line with SECRETVALUE\n", "default");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("SECRETVALUE"), std::string::npos) << bad.status().message();
}

TEST(AwsCredentialsTest, Iso8601) {
  auto t = ParseIso8601("2026-12-03T14:00:00Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*t), 1796306400);
  EXPECT_TRUE(ParseIso8601("2026-12-03T14:00:00.123Z"));
  EXPECT_FALSE(ParseIso8601("2026-13-03T14:00:00Z"));
  EXPECT_FALSE(ParseIso8601("yesterday"));
  EXPECT_FALSE(ParseIso8601("0026-12-03T14:00:00.123Z"));  // past what a time point holds (fuzz)
  EXPECT_FALSE(ParseIso8601("9999-12-31T23:59:59Z"));
}

TEST(AwsCredentialsTest, EnvironmentComesFirstThenTheFile) {
  testing::TempDir dir("/tmp");
  testing::WriteFile(dir.Join("credentials"), "[default]\naws_access_key_id=FILEKEY\naws_secret_access_key=FILESECRET\n"
                                              "[ml]\naws_access_key_id=MLKEY\naws_secret_access_key=MLSECRET\n");
  AwsCredentialChain env_first(Vars({{"AWS_ACCESS_KEY_ID", "ENVKEY"}, {"AWS_SECRET_ACCESS_KEY", "ENVSECRET"},
                                     {"AWS_SESSION_TOKEN", "TOKEN"}, {"AWS_SHARED_CREDENTIALS_FILE", dir.Join("credentials")}}),
                               Client(), "us-east-1");
  Result<AwsCredentials> c = env_first.Get();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "ENVKEY");
  EXPECT_EQ(c->session_token, "TOKEN");
  EXPECT_EQ(c->source, "environment");
  AwsCredentialChain file(Vars({{"AWS_SHARED_CREDENTIALS_FILE", dir.Join("credentials")}, {"AWS_PROFILE", "ml"}}),
                          Client(), "us-east-1");
  c = file.Get();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->access_key_id, "MLKEY");
  AwsCredentialChain none(Vars({{"HOME", dir.path()}}), Client(), "us-east-1");
  c = none.Get();
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->empty());  // anonymous
  AwsCredentialChain half(Vars({{"AWS_ACCESS_KEY_ID", "K"}}), Client(), "us-east-1");
  EXPECT_EQ(half.Get().status().code(), StatusCode::kPermissionDenied);
}

// A loopback stand-in for STS's AssumeRoleWithWebIdentity (no real STS runs here): checks the
// form it is posted and answers STS's XML.
class StsStandIn {
 public:
  StsStandIn() {
    server_.Post("/", [this](const httplib::Request& req, httplib::Response& res) {
      ++calls;
      last_body = req.body;
      if (req.get_param_value("Action") != "AssumeRoleWithWebIdentity" ||
          req.get_param_value("WebIdentityToken") != expected_token) {
        res.status = 403;
        res.set_content("<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>bad token</Message>"
                        "</Error></ErrorResponse>", "text/xml");
        return;
      }
      res.set_content("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
                      "<AccessKeyId>ASIA" + std::to_string(calls.load()) + "</AccessKeyId><SecretAccessKey>SECRET"
                      "</SecretAccessKey><SessionToken>SESSION</SessionToken><Expiration>" + expiration +
                      "</Expiration></Credentials></AssumeRoleWithWebIdentityResult>"
                      "</AssumeRoleWithWebIdentityResponse>", "text/xml");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 1000 && !server_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ~StsStandIn() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::atomic<int> calls{0};
  std::string last_body;
  std::string expected_token = "eyJ.token.sig";
  std::string expiration = "2099-01-01T00:00:00Z";

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

TEST(AwsCredentialsTest, WebIdentityThroughStsIsCachedUntilNearExpiry) {
  StsStandIn sts;
  testing::TempDir dir("/tmp");
  testing::WriteFile(dir.Join("token"), "eyJ.token.sig\n");
  auto vars = Vars({{"AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ranker"},
                    {"AWS_WEB_IDENTITY_TOKEN_FILE", dir.Join("token")}, {"AWS_ENDPOINT_URL_STS", sts.url()}});
  AwsCredentialChain chain(vars, Client(), "eu-west-1");
  Result<AwsCredentials> c = chain.Get();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->access_key_id, "ASIA1");
  EXPECT_EQ(c->session_token, "SESSION");
  EXPECT_EQ(c->source, "web identity (arn:aws:iam::123456789012:role/ranker)");
  EXPECT_NE(sts.last_body.find("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Franker"), std::string::npos);
  EXPECT_NE(sts.last_body.find("WebIdentityToken=eyJ.token.sig"), std::string::npos);
  EXPECT_EQ(chain.Get()->access_key_id, "ASIA1");  // cached
  EXPECT_EQ(sts.calls, 1);

  sts.expiration = "2020-01-01T00:00:00Z";  // already expired: every Get exchanges again
  AwsCredentialChain short_lived(vars, Client(), "eu-west-1");
  EXPECT_EQ(short_lived.Get()->access_key_id, "ASIA2");
  EXPECT_EQ(short_lived.Get()->access_key_id, "ASIA3");

  testing::WriteFile(dir.Join("token"), "rotated-but-wrong");  // re-read for each exchange
  Result<AwsCredentials> refused = short_lived.Get();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("InvalidIdentityToken"), std::string::npos) << refused.status().message();
  EXPECT_EQ(refused.status().message().find("rotated-but-wrong"), std::string::npos);  // never the token

  AwsCredentialChain no_token(Vars({{"AWS_ROLE_ARN", "arn:aws:iam::1:role/r"},
                                    {"AWS_WEB_IDENTITY_TOKEN_FILE", dir.Join("missing")},
                                    {"AWS_ENDPOINT_URL_STS", sts.url()}}),
                              Client(), "");
  EXPECT_EQ(no_token.Get().status().code(), StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace loom
