#include "common/fd_limit.h"

#include <sys/resource.h>

#include <algorithm>

namespace dtx {

namespace {
constexpr rlim_t kFdLimitMax = rlim_t{1} << 20;
}  // namespace

uint64_t RaiseOpenFileLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return 1024;
  const rlim_t want = std::min(r.rlim_max, kFdLimitMax);
  if (r.rlim_cur < want) {
    rlimit raised = r;
    raised.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
  }
  return static_cast<uint64_t>(r.rlim_cur);
}

size_t ConnectionsPerListener(uint64_t fd_limit, size_t listeners) {
  if (listeners == 0) listeners = 1;
  const uint64_t spare = fd_limit > kFdReserve ? fd_limit - kFdReserve : 0;
  return std::clamp<size_t>(static_cast<size_t>(spare / listeners), kConnectionsPerListenerMin,
                            kConnectionsPerListenerMax);
}

}  // namespace dtx
