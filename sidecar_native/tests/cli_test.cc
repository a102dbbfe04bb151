#include "loom/cli.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

Result<CliOptions> Parse(std::vector<std::string> args, const char* env_dir = nullptr) {
  return ParseArgs(args, env_dir);
}

TEST(CliTest, ServeWithEveryFlag) {
  Result<CliOptions> o = Parse({"serve", "--dir", "/shm", "--listen=127.0.0.1:0", "--control-listen", "off",
                                "--threads", "4", "--chunk-size", "8M", "--alignment=64K", "--o-direct",
                                "--no-preallocate", "--populate", "--reserve", "1G", "--http-timeout", "5",
                                "--http-retries", "0", "--keep-serving-on-error", "--no-adopt", "a=/m/a",
                                "b=http://h/b.safetensors"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->command, Command::kServe);
  EXPECT_EQ(o->dir, "/shm");
  EXPECT_EQ(o->listen, "127.0.0.1:0");
  EXPECT_EQ(o->control_listen, "off");
  EXPECT_EQ(o->stage.threads, 4u);
  EXPECT_EQ(o->stage.chunk_bytes, 8u << 20);
  EXPECT_EQ(o->stage.alignment, 64u << 10);
  EXPECT_TRUE(o->o_direct);
  EXPECT_FALSE(o->stage.preallocate);
  EXPECT_TRUE(o->stage.populate);
  EXPECT_EQ(o->stage.reserve_bytes, 1ull << 30);
  EXPECT_EQ(o->http.read_timeout_s, 5);
  EXPECT_EQ(o->http.retries, 0);
  EXPECT_FALSE(o->exit_on_failure);
  EXPECT_FALSE(o->adopt_leftovers);
  ASSERT_EQ(o->models.size(), 2u);
  EXPECT_EQ(o->models[1].name, "b");
  EXPECT_EQ(o->models[1].uri, "http://h/b.safetensors");
}

TEST(CliTest, DirDefaultsToEnvironment) {
  Result<CliOptions> o = Parse({"stage", "m=/x"}, "/from/env");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->dir, "/from/env");
}

TEST(CliTest, InspectTakesFiles) {
  Result<CliOptions> o = Parse({"inspect", "--json", "a.safetensors", "b.safetensors"});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->json);
  EXPECT_EQ(o->files.size(), 2u);
}

TEST(CliTest, HelpAndVersion) {
  EXPECT_EQ(Parse({})->command, Command::kHelp);
  EXPECT_EQ(Parse({"--help"})->command, Command::kHelp);
  EXPECT_EQ(Parse({"serve", "-h"})->command, Command::kHelp);
  EXPECT_EQ(Parse({"--version"})->command, Command::kVersion);
  const std::string usage = UsageText();
  for (const char* flag : {"--dir", "--listen", "--control-listen", "--threads", "--chunk-size", "--alignment",
                           "--o-direct", "--no-preallocate", "--populate", "--cuda-register", "--reserve",
                           "--http-timeout", "--http-retries", "--ca-file", "--keep-serving-on-error", "--no-adopt",
                           "--termination-log", "--json", "Exit codes", "64  usage"}) {
    EXPECT_NE(usage.find(flag), std::string::npos) << flag;
  }
}

TEST(CliTest, UsageErrors) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"frobnicate"}, "unknown command"},
      {{"stage", "--dir", "/d"}, "at least one NAME=URI"},
      {{"stage", "m=/x"}, "--dir is required"},
      {{"stage", "--dir", "/d", "noequals"}, "not NAME=URI"},
      {{"stage", "--dir", "/d", "../x=/m"}, "model name"},
      {{"stage", "--dir", "/d", "m="}, "empty URI"},
      {{"stage", "--dir", "/d", "m=/a", "m=/b"}, "given twice"},
      {{"stage", "--dir", "/d", "--threads", "0", "m=/a"}, "--threads must be between"},
      {{"stage", "--dir", "/d", "--threads", "x", "m=/a"}, "takes a number"},
      {{"stage", "--dir", "/d", "--alignment", "100", "m=/a"}, "power of two"},
      {{"stage", "--dir", "/d", "--chunk-size", "1K", "m=/a"}, "at least 4K"},
      {{"stage", "--dir", "/d", "--bogus", "m=/a"}, "unknown flag --bogus"},
      {{"stage", "--dir"}, "--dir needs a value"},
      {{"stage", "--dir", "/d", "--json=1", "m=/a"}, "unknown flag"},
      {{"inspect"}, "at least one FILE"},
  };
  for (const auto& [args, fragment] : cases) {
    Result<CliOptions> o = Parse(args);
    ASSERT_FALSE(o.ok()) << fragment;
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(o.status().message().find(fragment), std::string::npos) << o.status().message();
  }
}

}  // namespace
}  // namespace loom
