#include "loom/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace loom {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "ok");
  EXPECT_EQ(ExitCodeFor(s), 0);
}

TEST(StatusTest, NamedConstructorsCarryCodeAndMessage) {
  Status s = Status::InvalidModel("header too large");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidModel);
  EXPECT_EQ(s.ToString(), "invalid model: header too large");
}

TEST(StatusTest, ExitCodesAreDistinctAndDocumented) {
  EXPECT_EQ(ExitCodeFor(Status::InvalidModel("x")), 2);
  EXPECT_EQ(ExitCodeFor(Status::Unavailable("x")), 3);
  EXPECT_EQ(ExitCodeFor(Status::NoSpace("x")), 4);
  EXPECT_EQ(ExitCodeFor(Status::IOError("x")), 5);
  EXPECT_EQ(ExitCodeFor(Status::NotFound("x")), 6);
  EXPECT_EQ(ExitCodeFor(Status::FailedPrecondition("x")), 7);
  EXPECT_EQ(ExitCodeFor(Status::SourceChanged("x")), 8);
  EXPECT_EQ(CodeName(StatusCode::kSourceChanged), "source_changed");
  EXPECT_EQ(Status::SourceChanged("x").ToString(), "source changed: x");
  EXPECT_EQ(ExitCodeFor(Status::InvalidArgument("x")), 64);
  EXPECT_EQ(ExitCodeFor(Status::Internal("x")), 1);
}

TEST(StatusTest, FromErrnoClassifies) {
  EXPECT_EQ(Status::FromErrno("open", ENOENT).code(), StatusCode::kUnavailable);
  EXPECT_EQ(Status::FromErrno("write", ENOSPC).code(), StatusCode::kNoSpace);
  EXPECT_EQ(Status::FromErrno("read", EIO).code(), StatusCode::kIOError);
  EXPECT_NE(Status::FromErrno("open /x", ENOENT).message().find("open /x: "), std::string::npos);
}

TEST(StatusTest, AnnotatePrefixesContextAndKeepsCode) {
  Status s = Status::NoSpace("need 10").Annotate("model m");
  EXPECT_EQ(s.code(), StatusCode::kNoSpace);
  EXPECT_EQ(s.message(), "model m: need 10");
  EXPECT_TRUE(Status::OK().Annotate("ctx").ok());
}

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  LOOM_ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

TEST(ResultTest, ValueOrStatusAndMacros) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "odd");
}

}  // namespace
}  // namespace loom
