#include "common/status.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace dtx {

void CheckFailed(const char* file, int line, const char* expr, const char* msg) {
  std::fprintf(stderr, "FATAL %s:%d: check failed: %s%s%s\n", file, line, expr, msg ? ": " : "",
               msg ? msg : "");
  std::fflush(stderr);
  std::abort();
}

namespace internal {
void ResultCheckFailed(const char* file, int line, const char* expr, const Status& status) {
  CheckFailed(file, line, expr, status.ToString().c_str());
}
}  // namespace internal

const char* CodeName(Status::Code c) {
  switch (c) {
    case Status::Code::kOk: return "OK";
    case Status::Code::kNotFound: return "NotFound";
    case Status::Code::kCorruption: return "Corruption";
    case Status::Code::kIOError: return "IOError";
    case Status::Code::kInvalidArgument: return "InvalidArgument";
    case Status::Code::kAborted: return "Aborted";
    case Status::Code::kUnavailable: return "Unavailable";
    case Status::Code::kTimeout: return "Timeout";
    case Status::Code::kBusy: return "Busy";
    case Status::Code::kFailed: return "Failed";
    case Status::Code::kNotSupported: return "NotSupported";
    case Status::Code::kPermissionDenied: return "PermissionDenied";
    case Status::Code::kInternal: return "Internal";
  }
  return "Unknown";
}

Status Status::FromErrno(std::string_view context, int err) {
  std::string m(context);
  m += ": ";
  m += std::strerror(err);
  return Status(Code::kIOError, m);
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code_);
  s += ": ";
  s += message_;
  return s;
}

}  // namespace dtx
