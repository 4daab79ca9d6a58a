// dtx-coordinator: the coordinator node (coordinator/README.md).
//
//   dtx-coordinator --name coordinator-0 --listen 127.0.0.1:PORT --dir NODEDIR
//                   --participants NAME=127.0.0.1:PEERPORT0,...
//                   --participant-clients 127.0.0.1:P0,... [--log-file PATH]
//                   [--log-level info] [--prepare-timeout-ms 2000]
//                   [--role primary|backup] [--peer NAME=127.0.0.1:PEERPORT]
//                   [--peer-client 127.0.0.1:PORT] [--peer-listen HOST:PORT]
//                   [--heartbeat-ms 100] [--suspect-after-ms 400]
//                   [--failure-detector timeout|phi] [--phi-threshold 8]
//                   [--replicate-timeout-ms 1000] [--metrics-listen HOST:PORT|off]
//                   [--admin-listen HOST:PORT] [--enable-failpoints]
//                   (--certs-dir DIR | --insecure)
//   dtx-coordinator --cluster FILE --name coordinator-0 [flags above]
// --cluster FILE: every flag that follows from a cluster file, and the role
// (tools/node_launch.h, docs/deploy.md); flags on the command line win.
// Without --peer the coordinator runs alone as primary (as before).
// --listen serves clients (Coordinator), --peer-listen the participants and
// the other coordinator (CoordinatorPeer), --admin-listen operators (Admin).
// --participants and --peer name peer listeners; --participant-clients (the
// shard map clients get) and --peer-client (the NOT_PRIMARY hint clients
// get) name client listeners.
//
// Exit status: 0 after SIGTERM/SIGINT; 2 for bad flags or a bad
// DTX_FAILPOINTS spec (or one without --enable-failpoints); 1 when the node
// cannot start or fails (WAL failure);
// 86 for a failpoint `crash`.
#include <signal.h>

#include <boost/program_options.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/address.h"
#include "coordinator/records.h"
#include "coordinator/runtime.h"
#include "node/access.h"
#include "node/disk_guard.h"
#include "node/fail_stop.h"
#include "node/listeners.h"
#include "node/security.h"
#include "node/wal_appender.h"
#include "tools/node_launch.h"

namespace {

namespace po = boost::program_options;
using dtx::coordinator::RuntimeOptions;

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

// The command line as given, before it is checked.
struct Flags {
  std::string name, listen, dir, participants, log_file, log_level, metrics_listen, admin_listen;
  std::string peer_listen, participant_clients, peer_client;
  uint64_t prepare_timeout_ms = 0;
  std::string role, peer, detector;
  uint64_t heartbeat_ms = 0, suspect_after_ms = 0, replicate_timeout_ms = 0;
  double phi_threshold = 0;
  uint64_t trace_events = 0;
  uint64_t idle_timeout_ms = 0;
  uint64_t disk_free_min_mb = 0;
  uint64_t overload_queue_ms = 0;
  uint64_t wal_segment_bytes = 0;
  uint64_t carry_forward_records = 0;
  uint64_t remembered_commits = 0;
  uint64_t disk_ballast_mb = 0;
  bool enable_failpoints = false;
  dtx::node::SecurityFlags security;
};

// Every flag, bound to `*flags` (which must outlive the description).
po::options_description DescribeFlags(Flags* flags) {
  po::options_description desc("dtx-coordinator options");
  desc.add_options()("help", "print this help")(
      "name", po::value(&flags->name)->default_value("coordinator-0"),
      "node name (in logs, GetStatus)")("cluster", po::value<std::string>(),
                                        dtx::tools::kClusterFlagHelp)(
      "listen", po::value(&flags->listen)->required(),
      "host:port to serve the Coordinator service on")("dir", po::value(&flags->dir)->required(),
                                                       "node directory: holds wal/ and node.log")(
      "participants", po::value(&flags->participants)->default_value(""),
      "comma-separated participant NAME=HOST:PORT (or HOST:PORT) list of their peer listeners; "
      "the order is the shard index")(
      "participant-clients", po::value(&flags->participant_clients)->default_value(""),
      "comma-separated HOST:PORT (or NAME=HOST:PORT) of the participants' client listeners, in "
      "the order of --participants: the shard map clients read from (required with "
      "--participants)")(
      "peer-listen", po::value(&flags->peer_listen)->default_value(""),
      "host:port of the peer listener, where participants and the other coordinator call "
      "(default: the --listen host, any free port; the bound address is written to "
      "NODEDIR/peer.addr)")("log-file", po::value(&flags->log_file),
                            "log file (default: <dir>/node.log)")(
      "log-level", po::value(&flags->log_level)->default_value("info"),
      "trace, debug, info, warn, error, critical, off")(
      "prepare-timeout-ms", po::value(&flags->prepare_timeout_ms)->default_value(2000),
      "abort a transaction whose votes are not all in after this long")(
      "role", po::value(&flags->role)->default_value("primary"),
      "primary or backup (with --peer; without it the node runs alone as primary)")(
      "peer", po::value(&flags->peer)->default_value(""),
      "NAME=HOST:PORT (or HOST:PORT) of the other coordinator's peer listener")(
      "peer-client", po::value(&flags->peer_client)->default_value(""),
      "HOST:PORT of the other coordinator's client listener: where a client refused "
      "NOT_PRIMARY is sent (empty: no hint)")(
      "heartbeat-ms",
      po::value(&flags->heartbeat_ms)->default_value(dtx::kHeartbeatIntervalMsDefault),
      "heartbeat interval to participants and the peer coordinator")(
      "suspect-after-ms",
      po::value(&flags->suspect_after_ms)->default_value(dtx::kSuspectAfterMsDefault),
      "suspect a node silent for this long")(
      "failure-detector", po::value(&flags->detector)->default_value("timeout"),
      "timeout (suspect after --suspect-after-ms) or phi (phi-accrual, capped by it)")(
      "phi-threshold", po::value(&flags->phi_threshold)->default_value(dtx::kPhiThresholdDefault),
      "phi-accrual suspicion threshold")(
      "replicate-timeout-ms", po::value(&flags->replicate_timeout_ms)->default_value(1000),
      "a Replicate call to the backup slower than this counts the backup as lost")(
      "admin-listen", po::value(&flags->admin_listen)->default_value("127.0.0.1:0"),
      "host:port of the admin listener (SetFailpoint, GetTrace, ListInDoubt; port 0: any free "
      "port; the bound address is written to NODEDIR/admin.addr)")(
      "metrics-listen", po::value(&flags->metrics_listen)->default_value("127.0.0.1:0"),
      "host:port of the Prometheus /metrics endpoint (port 0: any free port; the bound address is "
      "written to NODEDIR/metrics.addr), or \"off\"")(
      "trace-events",
      po::value(&flags->trace_events)->default_value(dtx::obs::kTraceEventsMaxDefault),
      "per-transaction span events kept in memory for GetTrace (dtxctl trace), also logged at "
      "level debug; 0 turns tracing off")("certs-dir", po::value(&flags->security.certs_dir),
                                          dtx::node::kCertsDirFlagHelp)(
      "insecure", po::bool_switch(&flags->security.insecure), dtx::node::kInsecureFlagHelp)(
      "idle-timeout-ms", po::value(&flags->idle_timeout_ms)->default_value(dtx::kRpcIdleTimeoutMs),
      dtx::node::kIdleTimeoutFlagHelp)(
      "disk-free-min-mb",
      po::value(&flags->disk_free_min_mb)->default_value(dtx::node::kDiskFreeMinMbDefault),
      dtx::node::kDiskFreeMinFlagHelp)(
      "disk-ballast-mb",
      po::value(&flags->disk_ballast_mb)->default_value(dtx::node::kDiskBallastMbDefault),
      dtx::node::kDiskBallastFlagHelp)(
      "wal-segment-bytes",
      po::value(&flags->wal_segment_bytes)->default_value(dtx::wal::Options{}.segment_bytes),
      dtx::node::kWalSegmentBytesFlagHelp)(
      "carry-forward-records",
      po::value(&flags->carry_forward_records)
          ->default_value(dtx::node::kCarryForwardRecordsDefault),
      dtx::node::kCarryForwardFlagHelp)(
      "remembered-commits",
      po::value(&flags->remembered_commits)
          ->default_value(dtx::coordinator::CoreOptions{}.committed_outcomes_max),
      "committed outcomes of full 2PC remembered for a client's retry, and as many aborted "
      "outcomes answered to clients; the log keeps their DECISIONs, so with "
      "--carry-forward-records this bounds the log (docs/design.md \"Long outages\"); at least 1")(
      "overload-queue-ms", po::value(&flags->overload_queue_ms)->default_value(50),
      "shed load above capacity: while client commits take longer than this many ms on "
      "average, fewer are taken on at once and the rest are refused UNAVAILABLE "
      "\"overloaded\" (retryable; docs/design.md \"Overload\"); 0: no adaptive limit")(
      "enable-failpoints", po::bool_switch(&flags->enable_failpoints),
      "honour SetFailpoint and DTX_FAILPOINTS (tests and demos; docs/failpoints.md); without "
      "it both are refused");
  return desc;
}

// Parses argv into the flags bound to `desc`. Returns the exit code when the
// process is done (--help printed: 0; a bad command line: kExitBadUsage),
// nothing when it goes on.
std::optional<int> ParseCommandLine(int argc, char** argv, const po::options_description& desc) {
  po::variables_map vm;
  try {
    po::positional_options_description none;  // positional arguments are an error
    po::store(po::command_line_parser(argc, argv).options(desc).positional(none).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << std::endl;
      return 0;
    }
    dtx::Status from_file =
        dtx::tools::StoreClusterFileFlags(vm, desc, dtx::tools::NodeKind::kCoordinator);
    if (!from_file.ok()) return Usage(from_file.message(), desc);
    po::notify(vm);
  } catch (const po::error& e) {
    return Usage(e.what(), desc);
  }
  return std::nullopt;
}

// The validation steps below check the flags in the order the usage errors
// are reported and fill `*options`; InvalidArgument carries the usage error.

// --dir, --listen, --peer-listen, --admin-listen, --metrics-listen,
// --participants, --participant-clients.
dtx::Status CheckAddresses(const Flags& flags, RuntimeOptions* options) {
  options->name = flags.name;
  options->dir = flags.dir;
  if (flags.dir.empty()) return dtx::Status::InvalidArgument("--dir must not be empty");
  if (!ParseListen(flags.listen, &options->listen_host, &options->listen_port)) {
    return dtx::Status::InvalidArgument("--listen '" + flags.listen + "' is not host:port");
  }
  options->peer_host = options->listen_host;
  options->peer_port = 0;
  if (!flags.peer_listen.empty() &&
      !ParseListen(flags.peer_listen, &options->peer_host, &options->peer_port)) {
    return dtx::Status::InvalidArgument("--peer-listen '" + flags.peer_listen +
                                        "' is not host:port");
  }
  if (!ParseListen(flags.admin_listen, &options->admin_host, &options->admin_port)) {
    return dtx::Status::InvalidArgument("--admin-listen '" + flags.admin_listen +
                                        "' is not host:port");
  }
  if (flags.metrics_listen == "off") {
    options->metrics_enabled = false;
  } else if (!ParseListen(flags.metrics_listen, &options->metrics_host, &options->metrics_port)) {
    return dtx::Status::InvalidArgument("--metrics-listen '" + flags.metrics_listen +
                                        "' is not host:port or off");
  }
  std::set<std::string> seen;
  for (std::string p : Split(flags.participants, ',')) {
    DTX_RETURN_IF_ERROR(dtx::node::RequireNamedPeer(flags.security, "--participants", p));
    // NAME=HOST:PORT names the participant its certificate must carry (the
    // access policy, node/access.h); a bare HOST:PORT has no name.
    if (p.find('=') != std::string::npos) {
      auto peer = dtx::node::ParseConfiguredPeer(p, dtx::PrincipalKind::kParticipant);
      if (!peer.ok())
        return dtx::Status::InvalidArgument("--participants: " + peer.status().message());
      p = peer->address;
      options->named_peers.push_back(std::move(*peer));
    }
    if (!dtx::ParseHostPort(p).ok() || p.size() > dtx::coordinator::kParticipantAddressBytesMax) {
      return dtx::Status::InvalidArgument("--participants: '" + p + "' is not host:port");
    }
    if (!seen.insert(p).second) {
      return dtx::Status::InvalidArgument("--participants: '" + p + "' listed twice");
    }
    options->participants.push_back(p);
  }
  for (std::string c : Split(flags.participant_clients, ',')) {
    if (size_t eq = c.find('='); eq != std::string::npos) c = c.substr(eq + 1);
    if (!dtx::ParseHostPort(c).ok() || c.size() > dtx::coordinator::kParticipantAddressBytesMax) {
      return dtx::Status::InvalidArgument("--participant-clients: '" + c + "' is not host:port");
    }
    options->participant_clients.push_back(c);
  }
  if (options->participant_clients.size() != options->participants.size()) {
    return dtx::Status::InvalidArgument(
        "--participant-clients must list one client address per --participants entry (" +
        std::to_string(options->participants.size()) + "), got " +
        std::to_string(options->participant_clients.size()));
  }
  return dtx::Status::OK();
}

// --prepare-timeout-ms, --trace-events, --idle-timeout-ms, --disk-free-min-mb,
// --disk-ballast-mb, --overload-queue-ms, --wal-segment-bytes, --carry-forward-records,
// --remembered-commits.
dtx::Status CheckCoreLimits(const Flags& flags, RuntimeOptions* options) {
  if (flags.prepare_timeout_ms == 0 || flags.prepare_timeout_ms > 3600u * 1000) {
    return dtx::Status::InvalidArgument("--prepare-timeout-ms must be in 1..3600000");
  }
  options->core.prepare_timeout_ms = flags.prepare_timeout_ms;
  if (flags.trace_events > dtx::obs::kTraceEventsMax) {
    return dtx::Status::InvalidArgument("--trace-events must be in 0.." +
                                        std::to_string(dtx::obs::kTraceEventsMax));
  }
  options->trace_events = static_cast<size_t>(flags.trace_events);
  options->enable_failpoints = flags.enable_failpoints;
  auto idle = dtx::node::IdleTimeoutFromFlag(flags.idle_timeout_ms);
  if (!idle.ok()) return idle.status();
  options->idle_timeout_ms = *idle;
  if (flags.overload_queue_ms > 3600u * 1000) {
    return dtx::Status::InvalidArgument("--overload-queue-ms must be in 0..3600000");
  }
  options->overload_queue_target_us = flags.overload_queue_ms * 1000;
  DTX_RETURN_IF_ERROR(dtx::node::CheckWalSegmentBytes(flags.wal_segment_bytes));
  options->wal.segment_bytes = flags.wal_segment_bytes;
  options->core.decision_relog_lsn_gap = flags.carry_forward_records;
  // The EPOCH record is the other record the log is kept for: it follows the
  // same distance, or the log's budget would be that of the default.
  if (flags.carry_forward_records != 0) {
    options->core.epoch_rewrite_lsn_gap = flags.carry_forward_records;
  }
  if (flags.remembered_commits == 0 || flags.remembered_commits > (uint64_t{1} << 32)) {
    return dtx::Status::InvalidArgument("--remembered-commits must be in 1..4294967296");
  }
  options->core.committed_outcomes_max = static_cast<size_t>(flags.remembered_commits);
  options->core.aborted_outcomes_max = options->core.committed_outcomes_max;
  return dtx::node::DiskBytesFromFlags(flags.disk_free_min_mb, flags.disk_ballast_mb,
                                       &options->disk_free_min_bytes, &options->disk_ballast_bytes);
}

// --role, --peer, --heartbeat-ms, --suspect-after-ms, --replicate-timeout-ms,
// --phi-threshold, --failure-detector.
dtx::Status CheckHa(const Flags& flags, RuntimeOptions* options) {
  if (flags.role == "primary") {
    options->ha.role = dtx::coordinator::Role::kPrimary;
  } else if (flags.role == "backup") {
    options->ha.role = dtx::coordinator::Role::kBackup;
  } else {
    return dtx::Status::InvalidArgument("--role must be primary or backup");
  }
  std::string peer_address = flags.peer;
  if (!peer_address.empty())
    DTX_RETURN_IF_ERROR(dtx::node::RequireNamedPeer(flags.security, "--peer", peer_address));
  if (peer_address.find('=') != std::string::npos) {
    auto peer = dtx::node::ParseConfiguredPeer(peer_address, dtx::PrincipalKind::kCoordinator);
    if (!peer.ok()) return dtx::Status::InvalidArgument("--peer: " + peer.status().message());
    peer_address = peer->address;
    options->named_peers.push_back(std::move(*peer));
  }
  if (!peer_address.empty()) {
    if (!dtx::ParseHostPort(peer_address).ok()) {
      return dtx::Status::InvalidArgument("--peer: '" + peer_address + "' is not host:port");
    }
  } else if (flags.role == "backup") {
    return dtx::Status::InvalidArgument("--role backup needs --peer (the primary)");
  }
  options->ha.peer = peer_address;
  if (!flags.peer_client.empty()) {
    if (peer_address.empty()) return dtx::Status::InvalidArgument("--peer-client needs --peer");
    if (!dtx::ParseHostPort(flags.peer_client).ok()) {
      return dtx::Status::InvalidArgument("--peer-client: '" + flags.peer_client +
                                          "' is not host:port");
    }
    options->ha.peer_client = flags.peer_client;
  }
  if (flags.heartbeat_ms == 0 || flags.heartbeat_ms > 60000) {
    return dtx::Status::InvalidArgument("--heartbeat-ms must be in 1..60000");
  }
  if (flags.suspect_after_ms < flags.heartbeat_ms || flags.suspect_after_ms > 600000) {
    return dtx::Status::InvalidArgument("--suspect-after-ms must be in --heartbeat-ms..600000");
  }
  if (flags.replicate_timeout_ms == 0 || flags.replicate_timeout_ms > 600000) {
    return dtx::Status::InvalidArgument("--replicate-timeout-ms must be in 1..600000");
  }
  if (!(flags.phi_threshold > 0 && flags.phi_threshold < 1000)) {
    return dtx::Status::InvalidArgument("--phi-threshold must be in (0, 1000)");
  }
  options->ha.heartbeat_ms = flags.heartbeat_ms;
  options->ha.detector.suspect_after_ms = flags.suspect_after_ms;
  options->ha.detector.phi_threshold = flags.phi_threshold;
  options->ha.replicate_timeout_ms = flags.replicate_timeout_ms;
  if (flags.detector == "timeout") {
    options->ha.detector.mode = dtx::FailureDetectorOptions::Mode::kTimeout;
  } else if (flags.detector == "phi") {
    options->ha.detector.mode = dtx::FailureDetectorOptions::Mode::kPhiAccrual;
  } else {
    return dtx::Status::InvalidArgument("--failure-detector must be timeout or phi");
  }
  return dtx::Status::OK();
}

dtx::Status ToRuntimeOptions(const Flags& flags, RuntimeOptions* options) {
  DTX_RETURN_IF_ERROR(flags.security.Validate());
  DTX_RETURN_IF_ERROR(CheckAddresses(flags, options));
  DTX_RETURN_IF_ERROR(CheckCoreLimits(flags, options));
  return CheckHa(flags, options);
}

// Before the node starts: failpoints from DTX_FAILPOINTS, NODEDIR/wal, the
// log, and SIGPIPE ignored. Returns the exit code when the process must stop.
std::optional<int> SetUpProcess(const Flags& flags, const po::options_description& desc) {
  dtx::Status s = dtx::fp::InitFromEnvForNode(flags.enable_failpoints);
  if (!s.ok()) {
    std::cerr << "dtx-coordinator: DTX_FAILPOINTS: " << s.ToString() << std::endl;
    return kExitBadUsage;
  }

  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(flags.dir) / "wal", ec);
  if (ec) {
    std::cerr << "dtx-coordinator: cannot create " << flags.dir << "/wal: " << ec.message()
              << std::endl;
    return kExitFailure;
  }
  dtx::log::Options lo;
  lo.node = flags.name;
  lo.file = flags.log_file.empty() ? flags.dir + "/node.log" : flags.log_file;
  lo.level = flags.log_level;
  s = dtx::log::Init(lo);
  if (!s.ok()) {
    if (s.IsInvalidArgument()) return Usage(s.message(), desc);
    std::cerr << "dtx-coordinator: " << s.ToString() << std::endl;
    return kExitFailure;
  }
  if (!flags.enable_failpoints)
    DTX_LOG_INFO("failpoints off (started without --enable-failpoints): SetFailpoint is refused");
  for (const std::string& armed : dtx::fp::Armed())
    DTX_LOG_INFO("failpoint {} armed from the environment", armed);

  // A peer that closes its socket must not kill us with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  return std::nullopt;
}

// Starts the runtime and serves until SIGTERM/SIGINT; the exit code.
int RunUntilStopSignal(const RuntimeOptions& options) {
  int rc = 0;
  {
    dtx::EventLoop loop;
    auto runtime = dtx::coordinator::Runtime::Start(&loop, options);
    if (!runtime.ok()) {
      DTX_LOG_ERROR("cannot start: {}", runtime.status().ToString());
      std::cerr << "dtx-coordinator: cannot start: " << runtime.status().ToString() << std::endl;
      dtx::log::Flush();
      return dtx::node::StopExitCode();  // 74 if a WAL sync failed: not to be restarted blindly
    }
    std::unique_ptr<dtx::coordinator::Runtime> rt = std::move(*runtime);
    dtx::Status s = loop.HandleStopSignals([&](int signum) {
      DTX_LOG_INFO("signal {}: shutting down", signum);
      rt->Shutdown();
      loop.Stop();
    });
    if (!s.ok()) {
      DTX_LOG_ERROR("cannot install signal handlers: {}", s.ToString());
      rc = kExitFailure;
    } else {
      std::printf("dtx-coordinator %s listening on %s\n", options.name.c_str(),
                  rt->address().c_str());
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

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  const po::options_description desc = DescribeFlags(&flags);
  if (std::optional<int> exit_code = ParseCommandLine(argc, argv, desc)) return *exit_code;

  RuntimeOptions options;
  dtx::Status s = ToRuntimeOptions(flags, &options);
  if (!s.ok()) return Usage(s.message(), desc);

  if (std::optional<int> exit_code = SetUpProcess(flags, desc)) return *exit_code;
  auto security = dtx::node::NodeSecurity::FromFlags(flags.security, options.name);
  if (!security.ok()) {
    DTX_LOG_ERROR("cannot start: {}", security.status().ToString());
    std::cerr << "dtx-coordinator: cannot start: " << security.status().ToString() << std::endl;
    dtx::log::Flush();
    return kExitFailure;
  }
  options.security = std::move(*security);
  return RunUntilStopSignal(options);
}
