// Assertions for programmer errors. They stay on in release builds: a broken
// invariant near what goes to disk must stop the process, not corrupt state
// (TigerBeetle docs/TIGER_STYLE.md). Operating errors are Status values, never
// checks.
#pragma once

namespace dtx {
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const char* msg);
}  // namespace dtx

#define DTX_CHECK(cond)                                       \
  do {                                                        \
    if (__builtin_expect(!(cond), 0)) {                       \
      ::dtx::CheckFailed(__FILE__, __LINE__, #cond, nullptr); \
    }                                                         \
  } while (0)

#define DTX_CHECK_MSG(cond, msg)                            \
  do {                                                      \
    if (__builtin_expect(!(cond), 0)) {                     \
      ::dtx::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
    }                                                       \
  } while (0)
