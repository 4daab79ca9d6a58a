#include "node/fail_stop.h"

#include <cstdlib>

#include "common/log.h"
#include "wal/wal.h"

namespace dtx::node {

int StopExitCode() { return wal::SyncFailedInProcess() ? kSyncFailedExitCode : kFailStopExitCode; }

void FailStop(std::string_view why) {
  const int code = StopExitCode();
  if (code == kSyncFailedExitCode) {
    DTX_LOG_ERROR("fail-stop: {}; exiting with status {} (a WAL sync failed)", why, code);
  } else {
    DTX_LOG_ERROR("fail-stop: {}; exiting", why);
  }
  log::Flush();
  std::_Exit(code);
}

Status EvalFailpoint(fp::Point p, OnFailpointError on_error, std::string_view context) {
  Status s = fp::Eval(p);
  if (s.ok() || on_error == OnFailpointError::kReturn) return s;
  std::string why = std::string("failpoint ") + fp::Name(p) + ": " + s.ToString();
  if (!context.empty()) why = std::string(context) + " " + why;
  FailStop(why);
}

}  // namespace dtx::node
