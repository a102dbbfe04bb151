#include "loom/status.h"

#include <cerrno>
#include <cstring>

namespace loom {

Status Status::FromErrno(std::string_view what, int err) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  if (err == ENOENT || err == EACCES || err == ENOTDIR || err == ELOOP) return Unavailable(std::move(msg));
  if (err == ENOSPC || err == EDQUOT) return NoSpace(std::move(msg));
  return IOError(std::move(msg));
}

std::string_view CodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kInvalidModel: return "invalid_model";
    case StatusCode::kUnavailable: return "source_unavailable";
    case StatusCode::kNoSpace: return "no_space";
    case StatusCode::kIOError: return "io_error";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kFailedPrecondition: return "failed_precondition";
    case StatusCode::kSourceChanged: return "source_changed";
    case StatusCode::kPermissionDenied: return "forbidden";
    case StatusCode::kThrottled: return "throttled";
    case StatusCode::kInternal: return "internal";
  }
  return "internal";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string out;
  switch (code_) {
    case StatusCode::kInvalidModel: out = "invalid model: "; break;
    case StatusCode::kUnavailable: out = "source unavailable: "; break;
    case StatusCode::kNoSpace: out = "no space: "; break;
    case StatusCode::kIOError: out = "I/O error: "; break;
    case StatusCode::kNotFound: out = "not found: "; break;
    case StatusCode::kInvalidArgument: out = "invalid argument: "; break;
    case StatusCode::kFailedPrecondition: out = "failed precondition: "; break;
    case StatusCode::kSourceChanged: out = "source changed: "; break;
    case StatusCode::kPermissionDenied: out = "forbidden: "; break;
    case StatusCode::kThrottled: out = "throttled: "; break;
    default: out = "internal error: "; break;
  }
  return out + message_;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg));
}

int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk: return 0;
    case StatusCode::kInvalidModel: return 2;
    case StatusCode::kUnavailable: return 3;
    case StatusCode::kNoSpace: return 4;
    case StatusCode::kIOError: return 5;
    case StatusCode::kNotFound: return 6;
    case StatusCode::kFailedPrecondition: return 7;
    case StatusCode::kSourceChanged: return 8;
    case StatusCode::kPermissionDenied: return 9;
    case StatusCode::kThrottled: return 10;
    case StatusCode::kInvalidArgument: return 64;
    case StatusCode::kInternal: return 1;
  }
  return 1;
}

}  // namespace loom
