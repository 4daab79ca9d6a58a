// Status and Result<T>: operating errors as values (LevelDB include/leveldb/status.h).
// A public header of the C++ client (include/dtx/); internal code includes it
// as "common/status.h", which also brings DTX_CHECK (common/check.h).
//
// A Status is either OK or carries a code and a message. Functions that can
// fail return Status or Result<T>, both [[nodiscard]]. Exceptions never cross
// module boundaries; the Thrift edge converts them.
//
// Thread-safety: a Status is a value; distinct objects may be used from
// different threads, one object must not be mutated concurrently.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace dtx {

class Status;

namespace internal {
// The failure of Result's programmer-error checks (value() of an error, an
// error built from OK): prints the expression and `status` and aborts, like
// DTX_CHECK (common/check.h) and on in release builds too. Defined in
// common/status.cc.
[[noreturn]] void ResultCheckFailed(const char* file, int line, const char* expr,
                                    const Status& status);
}  // namespace internal

class [[nodiscard]] Status {
 public:
  enum class Code : int {
    kOk = 0,
    kNotFound,
    kCorruption,
    kIOError,
    kInvalidArgument,
    kAborted,
    kUnavailable,
    kTimeout,
    kBusy,    // back-pressure: a bounded queue is full
    kFailed,  // a fail-stopped component refuses further work
    kNotSupported,
    kInternal,
    kPermissionDenied,  // the caller is not allowed to make this request
  };

  Status() = default;

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view m) { return Status(Code::kNotFound, m); }
  static Status Corruption(std::string_view m) { return Status(Code::kCorruption, m); }
  static Status IOError(std::string_view m) { return Status(Code::kIOError, m); }
  static Status InvalidArgument(std::string_view m) { return Status(Code::kInvalidArgument, m); }
  static Status Aborted(std::string_view m) { return Status(Code::kAborted, m); }
  static Status Unavailable(std::string_view m) { return Status(Code::kUnavailable, m); }
  static Status Timeout(std::string_view m) { return Status(Code::kTimeout, m); }
  static Status Busy(std::string_view m) { return Status(Code::kBusy, m); }
  static Status Failed(std::string_view m) { return Status(Code::kFailed, m); }
  static Status NotSupported(std::string_view m) { return Status(Code::kNotSupported, m); }
  static Status Internal(std::string_view m) { return Status(Code::kInternal, m); }
  static Status PermissionDenied(std::string_view m) { return Status(Code::kPermissionDenied, m); }
  // errno-carrying I/O error: "<context>: <strerror(err)>".
  static Status FromErrno(std::string_view context, int err);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsAborted() const { return code_ == Code::kAborted; }
  bool IsUnavailable() const { return code_ == Code::kUnavailable; }
  bool IsTimeout() const { return code_ == Code::kTimeout; }
  bool IsBusy() const { return code_ == Code::kBusy; }
  bool IsFailed() const { return code_ == Code::kFailed; }
  bool IsPermissionDenied() const { return code_ == Code::kPermissionDenied; }

  // "Corruption: <message>", or "OK".
  std::string ToString() const;

  bool operator==(const Status& o) const { return code_ == o.code_ && message_ == o.message_; }

 private:
  Status(Code c, std::string_view m) : code_(c), message_(m) {}
  Code code_ = Code::kOk;
  std::string message_;
};

const char* CodeName(Status::Code c);

// Result<T>: a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status s) : v_(std::move(s)) {      // NOLINT: implicit by design
    if (__builtin_expect(std::get<Status>(v_).ok(), 0)) {
      internal::ResultCheckFailed(__FILE__, __LINE__, "!status.ok()", std::get<Status>(v_));
    }
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & {
    CheckOk();
    return std::get<T>(v_);
  }
  const T& value() const& {
    CheckOk();
    return std::get<T>(v_);
  }
  T&& value() && {
    CheckOk();
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void CheckOk() const {
    if (__builtin_expect(!ok(), 0)) {
      internal::ResultCheckFailed(__FILE__, __LINE__, "ok()", status());
    }
  }
  std::variant<T, Status> v_;
};

}  // namespace dtx

// Propagate a non-OK Status from an expression returning Status.
#define DTX_RETURN_IF_ERROR(expr)    \
  do {                               \
    ::dtx::Status _dtx_s = (expr);   \
    if (!_dtx_s.ok()) return _dtx_s; \
  } while (0)
