#include "node/fail_stop.h"

#include <cstdlib>

#include "common/log.h"

namespace dtx::node {

void FailStop(std::string_view why) {
  DTX_LOG_ERROR("fail-stop: {}; exiting", why);
  log::Flush();
  std::_Exit(kFailStopExitCode);
}

Status EvalFailpoint(fp::Point p, OnFailpointError on_error, std::string_view context) {
  Status s = fp::Eval(p);
  if (s.ok() || on_error == OnFailpointError::kReturn) return s;
  std::string why = std::string("failpoint ") + fp::Name(p) + ": " + s.ToString();
  if (!context.empty()) why = std::string(context) + " " + why;
  FailStop(why);
}

}  // namespace dtx::node
