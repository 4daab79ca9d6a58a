// dtx-coordinator: the coordinator node (/work/briefs/conventions.md).
//
//   dtx-coordinator --name coordinator-0 --listen 127.0.0.1:PORT --dir NODEDIR
//                   --participants 127.0.0.1:P0,127.0.0.1:P1,... [--log-file PATH]
//                   [--log-level info] [--prepare-timeout-ms 2000] [--abort-quiet-ms 2000]
//                   [--role primary|backup] [--peer 127.0.0.1:PORT]
//                   [--heartbeat-ms 100] [--suspect-after-ms 500]
//                   [--failure-detector timeout|phi] [--phi-threshold 8]
//                   [--replicate-timeout-ms 1000] [--metrics-listen HOST:PORT|off]
// Without --peer the coordinator runs alone as primary (as before).
//
// Exit status: 0 after SIGTERM/SIGINT; 2 for bad flags or a bad
// DTX_FAILPOINTS spec; 1 when the node cannot start or fails (WAL failure);
// 86 for a failpoint `crash`.
#include <signal.h>

#include <boost/program_options.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/address.h"
#include "coordinator/records.h"
#include "coordinator/runtime.h"

namespace {

constexpr int kExitBadUsage = 2;
constexpr int kExitFailure = 1;

int Usage(const std::string& message, const boost::program_options::options_description&) {
  std::cerr << "dtx-coordinator: " << message << " (see --help)" << std::endl;
  return kExitBadUsage;
}

// "host:port" with port 0..65535 (0: the kernel picks one). The host is
// checked when the server binds.
// A listen address: port 0 is "any free port".
bool ParseListen(const std::string& s, std::string* host, int* port) {
  auto hp = dtx::ParseHostPort(s, dtx::PortZero::kAllow);
  if (!hp.ok()) return false;
  *host = hp->host;
  *port = hp->port;
  return true;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t start = 0;
  for (;;) {
    size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  using dtx::coordinator::RuntimeOptions;

  std::string name, listen, dir, participants, log_file, log_level, metrics_listen;
  uint64_t prepare_timeout_ms = 0;
  uint64_t abort_quiet_ms = 0;
  std::string role, peer, detector;
  uint64_t heartbeat_ms = 0, suspect_after_ms = 0, replicate_timeout_ms = 0;
  double phi_threshold = 0;
  uint64_t trace_events = 0;
  po::options_description desc("dtx-coordinator options");
  desc.add_options()
      ("help", "print this help")
      ("name", po::value(&name)->default_value("coordinator-0"), "node name (in logs, GetStatus)")
      ("listen", po::value(&listen)->required(), "host:port to serve the Coordinator service on")
      ("dir", po::value(&dir)->required(), "node directory: holds wal/ and node.log")
      ("participants", po::value(&participants)->default_value(""),
       "comma-separated participant host:port list; the order is the shard index")
      ("log-file", po::value(&log_file), "log file (default: <dir>/node.log)")
      ("log-level", po::value(&log_level)->default_value("info"),
       "trace, debug, info, warn, error, critical, off")
      ("abort-quiet-ms", po::value(&abort_quiet_ms)->default_value(dtx::coordinator::CoreOptions{}.abort_quiet_ms),
       "after sending ABORT for a txid, start no new attempt of it for this long (a Commit meanwhile "
       "is answered UNKNOWN; coordinator/README.md \"Abort hold\"); 0 turns the hold off")
      ("prepare-timeout-ms", po::value(&prepare_timeout_ms)->default_value(2000),
       "abort a transaction whose votes are not all in after this long")
      ("role", po::value(&role)->default_value("primary"),
       "primary or backup (with --peer; without it the node runs alone as primary)")
      ("peer", po::value(&peer)->default_value(""), "host:port of the other coordinator")
      ("heartbeat-ms", po::value(&heartbeat_ms)->default_value(dtx::kHeartbeatIntervalMsDefault),
       "heartbeat interval to participants and the peer coordinator")
      ("suspect-after-ms", po::value(&suspect_after_ms)->default_value(dtx::kSuspectAfterMsDefault),
       "suspect a node silent for this long")
      ("failure-detector", po::value(&detector)->default_value("timeout"),
       "timeout (suspect after --suspect-after-ms) or phi (phi-accrual, capped by it)")
      ("phi-threshold", po::value(&phi_threshold)->default_value(dtx::kPhiThresholdDefault),
       "phi-accrual suspicion threshold")
      ("replicate-timeout-ms", po::value(&replicate_timeout_ms)->default_value(1000),
       "a Replicate call to the backup slower than this counts the backup as lost")
      ("metrics-listen", po::value(&metrics_listen)->default_value("127.0.0.1:0"),
       "host:port of the Prometheus /metrics endpoint (port 0: any free port; the bound address is "
       "written to NODEDIR/metrics.addr), or \"off\"")
      ("trace-events", po::value(&trace_events)->default_value(dtx::obs::kTraceEventsMaxDefault),
       "per-transaction span events kept in memory for GetTrace (dtxctl trace), also logged at "
       "level debug; 0 turns tracing off");

  po::variables_map vm;
  try {
    po::positional_options_description none;  // positional arguments are an error
    po::store(po::command_line_parser(argc, argv).options(desc).positional(none).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << std::endl;
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return Usage(e.what(), desc);
  }

  RuntimeOptions options;
  options.name = name;
  options.dir = dir;
  if (dir.empty()) return Usage("--dir must not be empty", desc);
  if (!ParseListen(listen, &options.listen_host, &options.listen_port)) {
    return Usage("--listen '" + listen + "' is not host:port", desc);
  }
  if (metrics_listen == "off") {
    options.metrics_enabled = false;
  } else if (!ParseListen(metrics_listen, &options.metrics_host, &options.metrics_port)) {
    return Usage("--metrics-listen '" + metrics_listen + "' is not host:port or off", desc);
  }
  std::set<std::string> seen;
  for (const std::string& p : Split(participants, ',')) {
    if (!dtx::ParseHostPort(p).ok() || p.size() > dtx::coordinator::kParticipantAddressBytesMax) {
      return Usage("--participants: '" + p + "' is not host:port", desc);
    }
    if (!seen.insert(p).second) return Usage("--participants: '" + p + "' listed twice", desc);
    options.participants.push_back(p);
  }
  if (prepare_timeout_ms == 0 || prepare_timeout_ms > 3600u * 1000) {
    return Usage("--prepare-timeout-ms must be in 1..3600000", desc);
  }
  options.core.prepare_timeout_ms = prepare_timeout_ms;
  if (abort_quiet_ms > 3600u * 1000) {
    return Usage("--abort-quiet-ms must be in 0..3600000", desc);
  }
  options.core.abort_quiet_ms = abort_quiet_ms;
  if (trace_events > dtx::obs::kTraceEventsMax) {
    return Usage("--trace-events must be in 0.." + std::to_string(dtx::obs::kTraceEventsMax), desc);
  }
  options.trace_events = static_cast<size_t>(trace_events);
  if (role == "primary") {
    options.ha.role = dtx::coordinator::Role::kPrimary;
  } else if (role == "backup") {
    options.ha.role = dtx::coordinator::Role::kBackup;
  } else {
    return Usage("--role must be primary or backup", desc);
  }
  if (!peer.empty()) {
    if (!dtx::ParseHostPort(peer).ok()) {
      return Usage("--peer: '" + peer + "' is not host:port", desc);
    }
  } else if (role == "backup") {
    return Usage("--role backup needs --peer (the primary)", desc);
  }
  options.ha.peer = peer;
  if (heartbeat_ms == 0 || heartbeat_ms > 60000) return Usage("--heartbeat-ms must be in 1..60000", desc);
  if (suspect_after_ms < heartbeat_ms || suspect_after_ms > 600000) {
    return Usage("--suspect-after-ms must be in --heartbeat-ms..600000", desc);
  }
  if (replicate_timeout_ms == 0 || replicate_timeout_ms > 600000) {
    return Usage("--replicate-timeout-ms must be in 1..600000", desc);
  }
  if (!(phi_threshold > 0 && phi_threshold < 1000)) return Usage("--phi-threshold must be in (0, 1000)", desc);
  options.ha.heartbeat_ms = heartbeat_ms;
  options.ha.detector.suspect_after_ms = suspect_after_ms;
  options.ha.detector.phi_threshold = phi_threshold;
  options.ha.replicate_timeout_ms = replicate_timeout_ms;
  if (detector == "timeout") {
    options.ha.detector.mode = dtx::FailureDetectorOptions::Mode::kTimeout;
  } else if (detector == "phi") {
    options.ha.detector.mode = dtx::FailureDetectorOptions::Mode::kPhiAccrual;
  } else {
    return Usage("--failure-detector must be timeout or phi", desc);
  }

  dtx::Status s = dtx::fp::InitFromEnv();
  if (!s.ok()) {
    std::cerr << "dtx-coordinator: DTX_FAILPOINTS: " << s.ToString() << std::endl;
    return kExitBadUsage;
  }

  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(dir) / "wal", ec);
  if (ec) {
    std::cerr << "dtx-coordinator: cannot create " << dir << "/wal: " << ec.message() << std::endl;
    return kExitFailure;
  }
  dtx::log::Options lo;
  lo.node = name;
  lo.file = log_file.empty() ? dir + "/node.log" : log_file;
  lo.level = log_level;
  s = dtx::log::Init(lo);
  if (!s.ok()) {
    if (s.IsInvalidArgument()) return Usage(s.message(), desc);
    std::cerr << "dtx-coordinator: " << s.ToString() << std::endl;
    return kExitFailure;
  }
  for (const std::string& armed : dtx::fp::Armed()) DTX_LOG_INFO("failpoint {} armed from the environment", armed);

  // A peer that closes its socket must not kill us with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);

  int rc = 0;
  {
    dtx::EventLoop loop;
    auto runtime = dtx::coordinator::Runtime::Start(&loop, options);
    if (!runtime.ok()) {
      DTX_LOG_ERROR("cannot start: {}", runtime.status().ToString());
      std::cerr << "dtx-coordinator: cannot start: " << runtime.status().ToString() << std::endl;
      dtx::log::Flush();
      return kExitFailure;
    }
    std::unique_ptr<dtx::coordinator::Runtime> rt = std::move(*runtime);
    s = loop.HandleStopSignals([&](int signum) {
      DTX_LOG_INFO("signal {}: shutting down", signum);
      rt->Shutdown();
      loop.Stop();
    });
    if (!s.ok()) {
      DTX_LOG_ERROR("cannot install signal handlers: {}", s.ToString());
      rc = kExitFailure;
    } else {
      std::printf("dtx-coordinator %s listening on %s\n", name.c_str(), rt->address().c_str());
      std::fflush(stdout);
      loop.Run();
    }
    rt->Shutdown();
    rt.reset();  // closes the WAL: syncs whatever is queued
  }
  DTX_LOG_INFO("stopped");
  dtx::log::Flush();
  return rc;
}
