// Status and Result<T>: errors as values. Every fallible function in the sidecar returns one;
// nothing throws across a module boundary. Thread-safety: immutable values, safe to share.
#ifndef LOOM_STATUS_H_
#define LOOM_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace loom {

// Codes map onto the sidecar's process exit codes (see ExitCodeFor), which the operator turns
// into the model state FailedToLoad with the reason.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // a flag, a name or a request is wrong (exit 64)
  kInvalidModel,        // the model files are not valid safetensors / index (exit 2)
  kUnavailable,         // the source cannot be reached or does not exist (exit 3)
  kNoSpace,             // the target directory or memory limit cannot hold the model (exit 4)
  kIOError,             // reading or writing failed midway (exit 5)
  kNotFound,            // a named model or entry is not known here (exit 6)
  kFailedPrecondition,  // the operation does not fit the current state (exit 7)
  kSourceChanged,       // the source was replaced while it was being read (exit 8)
  kPermissionDenied,    // the source refused the credentials, or there were none (exit 9)
  kThrottled,           // the source kept throttling past the retry budget (exit 10)
  kInternal,            // a bug (exit 1)
};

class Status {
 public:
  Status() = default;  // OK

  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) { return {StatusCode::kInvalidArgument, std::move(msg)}; }
  static Status InvalidModel(std::string msg) { return {StatusCode::kInvalidModel, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status NoSpace(std::string msg) { return {StatusCode::kNoSpace, std::move(msg)}; }
  static Status IOError(std::string msg) { return {StatusCode::kIOError, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status FailedPrecondition(std::string msg) {
    return {StatusCode::kFailedPrecondition, std::move(msg)};
  }
  static Status SourceChanged(std::string msg) { return {StatusCode::kSourceChanged, std::move(msg)}; }
  static Status PermissionDenied(std::string msg) { return {StatusCode::kPermissionDenied, std::move(msg)}; }
  static Status Throttled(std::string msg) { return {StatusCode::kThrottled, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }
  // An IOError / Unavailable carrying strerror(err) after `what`.
  static Status FromErrno(std::string_view what, int err);

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid model: header too large" style; "ok" for OK.
  std::string ToString() const;
  // The same code with "context: " prepended to the message. OK stays OK.
  Status Annotate(std::string_view context) const;

 private:
  Status(StatusCode code, std::string msg) : code_(code), message_(std::move(msg)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Short stable name of a code ("invalid_model"), used in metrics labels and JSON.
std::string_view CodeName(StatusCode code);
// The process exit code for a status: 0 ok, 1 internal, 2 invalid model, 3 source unreachable,
// 4 no space, 5 I/O error, 6 not found, 7 failed precondition, 8 source changed, 9 forbidden,
// 10 throttled, 64 usage.
int ExitCodeFor(const Status& status);

// A value or the Status explaining why there is none.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "Result from an OK status has no value");
    if (status_.ok()) status_ = Status::Internal("Result constructed from OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  // REQUIRES: ok()
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace loom

#define LOOM_CONCAT_INNER_(a, b) a##b
#define LOOM_CONCAT_(a, b) LOOM_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define LOOM_RETURN_IF_ERROR(expr)              \
  do {                                          \
    ::loom::Status loom_status_ = (expr);       \
    if (!loom_status_.ok()) return loom_status_; \
  } while (0)

// `lhs = value of expr` or return its status. lhs may declare a variable: `auto x`.
#define LOOM_ASSIGN_OR_RETURN(lhs, expr) LOOM_ASSIGN_OR_RETURN_IMPL_(LOOM_CONCAT_(loom_r_, __LINE__), lhs, expr)
#define LOOM_ASSIGN_OR_RETURN_IMPL_(r, lhs, expr) \
  auto r = (expr);                                \
  if (!r.ok()) return r.status();                 \
  lhs = std::move(r).value()

#endif  // LOOM_STATUS_H_
