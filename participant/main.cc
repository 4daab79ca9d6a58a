// dtx-participant: one participant node.
//
//   dtx-participant --name participant-0 --listen 127.0.0.1:PORT --dir NODEDIR
//                   --coordinator 127.0.0.1:PEERPORT [--log-file PATH] [--log-level info]
//                   [--checkpoint-interval-records N] [--checkpoint-interval-ms MS]
//                   [--wal-segment-bytes BYTES] [--metrics-listen HOST:PORT|off]
//                   [--admin-listen HOST:PORT] [--peer-listen HOST:PORT]
//                   [--trace-events N] [--enable-failpoints]
//                   [--disk-free-min-mb MB] [--disk-ballast-mb MB]
//                   (--certs-dir DIR | --insecure)
//   dtx-participant --cluster FILE --name participant-0 [flags above]
//
// --cluster FILE: every flag that follows from a cluster file
// (tools/node_launch.h, docs/deploy.md); flags on the command line win.
// --listen serves clients (Participant: Read, GetStatus), --peer-listen the
// coordinators (ParticipantPeer: Prepare, Commit, Abort, Heartbeat,
// AdoptEpoch), --admin-listen operators (Admin). --coordinator and
// --coordinators name the coordinators' peer addresses.
// NODEDIR holds wal/ (the WAL), data/ (LevelDB) and node.log (the default log
// file). Exit codes: 0 after SIGTERM/SIGINT, 2 for bad flags or a bad
// DTX_FAILPOINTS spec (or one without --enable-failpoints), 1 when the node
// cannot start or fails (WAL/store error),
// 86 for a failpoint crash.
#include <boost/program_options.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include "common/event_loop.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/address.h"
#include "node/access.h"
#include "node/disk_guard.h"
#include "node/fail_stop.h"
#include "node/listeners.h"
#include "node/security.h"
#include "node/wal_appender.h"
#include "participant/runtime.h"
#include "tools/node_launch.h"

namespace po = boost::program_options;

namespace {

constexpr int kExitBadUsage = 2;
constexpr int kExitFailed = 1;

int Usage(const po::options_description& desc, const std::string& error) {
  std::cerr << "dtx-participant: " << error << "\n" << desc << "\n";
  return kExitBadUsage;
}

// The flags that are not runtime options as they are (the others are bound
// straight to RuntimeOptions fields).
struct Flags {
  std::string name, listen, dir, coordinator, coordinators, log_file, log_level, metrics_listen,
      admin_listen, peer_listen;
  uint64_t idle_timeout_ms = 0;
  uint64_t disk_free_min_mb = 0;
  uint64_t disk_ballast_mb = 0;
  dtx::node::SecurityFlags security;
};

// Every flag, bound to `*flags` and `*options` (which must outlive the
// description).
po::options_description DescribeFlags(Flags* flags, dtx::participant::RuntimeOptions* options) {
  po::options_description desc("Options");
  desc.add_options()("help,h", "print this help")(
      "name", po::value<std::string>(&flags->name)->required(), "node name, e.g. participant-0")(
      "cluster", po::value<std::string>(), dtx::tools::kClusterFlagHelp)(
      "listen", po::value<std::string>(&flags->listen)->required(), "host:port to serve on")(
      "dir", po::value<std::string>(&flags->dir)->required(),
      "node directory (wal/, data/, node.log)")(
      "coordinator", po::value<std::string>(&flags->coordinator)->required(),
      "peer host:port of the coordinator (asked about in-doubt transactions)")(
      "coordinators", po::value<std::string>(&flags->coordinators)->default_value(""),
      "comma-separated NAME=HOST:PORT (or HOST:PORT) of every coordinator's peer listener "
      "(primary and backup); in-doubt transactions are asked of whichever is primary when the one "
      "that "
      "prepared them cannot answer. The named ones are the coordinators allowed to drive this "
      "node once callers are authenticated")("log-file", po::value<std::string>(&flags->log_file),
                                             "log file (default NODEDIR/node.log)")(
      "log-level", po::value<std::string>(&flags->log_level)->default_value("info"),
      "trace, debug, info, warn, error, critical, off")(
      "checkpoint-interval-records",
      po::value<uint64_t>(&options->checkpoint_interval_records)
          ->default_value(options->checkpoint_interval_records),
      "checkpoint after this many WAL records (0: not by count)")(
      "checkpoint-interval-ms",
      po::value<uint64_t>(&options->checkpoint_interval_ms)
          ->default_value(options->checkpoint_interval_ms),
      "checkpoint at least this often when there is something new (0: not by time)")(
      "wal-segment-bytes",
      po::value<uint64_t>(&options->wal.segment_bytes)->default_value(options->wal.segment_bytes),
      dtx::node::kWalSegmentBytesFlagHelp)(
      "carry-forward-records",
      po::value<uint64_t>(&options->core.prepare_relog_lsn_gap)
          ->default_value(dtx::node::kCarryForwardRecordsDefault),
      dtx::node::kCarryForwardFlagHelp)(
      "peer-listen", po::value<std::string>(&flags->peer_listen)->default_value(""),
      "host:port of the peer listener, where the coordinators call (Prepare, Commit, Abort, "
      "Heartbeat, AdoptEpoch; default: the --listen host, any free port; the bound address is "
      "written to NODEDIR/peer.addr)")(
      "admin-listen", po::value<std::string>(&flags->admin_listen)->default_value("127.0.0.1:0"),
      "host:port of the admin listener (SetFailpoint, GetTrace, ListInDoubt; port 0: any free "
      "port; the bound address is written to NODEDIR/admin.addr)")(
      "metrics-listen",
      po::value<std::string>(&flags->metrics_listen)->default_value("127.0.0.1:0"),
      "host:port of the Prometheus /metrics endpoint (port 0: any free port; the bound address is "
      "written to NODEDIR/metrics.addr), or \"off\"")(
      "trace-events",
      po::value<size_t>(&options->trace_events)->default_value(options->trace_events),
      "span events kept in memory for dtxctl trace (GetTrace); 0: tracing off")(
      "certs-dir", po::value<std::string>(&flags->security.certs_dir),
      dtx::node::kCertsDirFlagHelp)("insecure", po::bool_switch(&flags->security.insecure),
                                    dtx::node::kInsecureFlagHelp)(
      "idle-timeout-ms",
      po::value<uint64_t>(&flags->idle_timeout_ms)
          ->default_value(static_cast<uint64_t>(dtx::kRpcIdleTimeoutMs)),
      dtx::node::kIdleTimeoutFlagHelp)("disk-free-min-mb",
                                       po::value<uint64_t>(&flags->disk_free_min_mb)
                                           ->default_value(dtx::node::kDiskFreeMinMbDefault),
                                       dtx::node::kDiskFreeMinFlagHelp)(
      "disk-ballast-mb",
      po::value<uint64_t>(&flags->disk_ballast_mb)->default_value(dtx::node::kDiskBallastMbDefault),
      dtx::node::kDiskBallastFlagHelp)(
      "enable-failpoints", po::bool_switch(&options->enable_failpoints),
      "honour SetFailpoint and DTX_FAILPOINTS (tests and demos; docs/failpoints.md); without "
      "it both are refused");
  return desc;
}

// Parses argv into what `desc` is bound to. Returns the exit code when the
// process is done (--help printed: 0; a bad command line: kExitBadUsage),
// nothing when it goes on.
std::optional<int> ParseCommandLine(int argc, char** argv, const po::options_description& desc) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help") != 0) {
      std::cout << "usage: dtx-participant --name NAME --listen HOST:PORT --dir NODEDIR "
                   "--coordinator HOST:PORT (--certs-dir DIR | --insecure) [--log-file PATH] "
                   "[--log-level LEVEL] [options below]\n"
                   "       dtx-participant --cluster FILE --name NAME [options below]\n"
                << desc << "\n";
      return 0;
    }
    dtx::Status from_file =
        dtx::tools::StoreClusterFileFlags(vm, desc, dtx::tools::NodeKind::kParticipant);
    if (!from_file.ok()) return Usage(desc, from_file.message());
    po::notify(vm);
  } catch (const po::error& e) {
    return Usage(desc, e.what());
  }
  return std::nullopt;
}

// The validation steps below check the flags in the order the usage errors
// are reported and fill `*options`; InvalidArgument carries the usage error.

// --dir, --wal-segment-bytes, --trace-events, --idle-timeout-ms, the checkpoint intervals,
// --disk-free-min-mb, --disk-ballast-mb.
dtx::Status CheckStorage(const Flags& flags, dtx::participant::RuntimeOptions* options) {
  options->name = flags.name;
  options->dir = flags.dir;
  options->coordinator = flags.coordinator;
  if (flags.dir.empty()) return dtx::Status::InvalidArgument("--dir must not be empty");
  DTX_RETURN_IF_ERROR(dtx::node::CheckWalSegmentBytes(options->wal.segment_bytes));
  if (options->trace_events > dtx::obs::kTraceEventsMax) {
    return dtx::Status::InvalidArgument("--trace-events must be at most " +
                                        std::to_string(dtx::obs::kTraceEventsMax));
  }
  auto idle = dtx::node::IdleTimeoutFromFlag(flags.idle_timeout_ms);
  if (!idle.ok()) return idle.status();
  options->idle_timeout_ms = *idle;
  DTX_RETURN_IF_ERROR(dtx::node::DiskBytesFromFlags(flags.disk_free_min_mb, flags.disk_ballast_mb,
                                                    &options->disk_free_min_bytes,
                                                    &options->disk_ballast_bytes));
  if (options->checkpoint_interval_records == 0 && options->checkpoint_interval_ms == 0) {
    return dtx::Status::InvalidArgument(
        "--checkpoint-interval-records and --checkpoint-interval-ms cannot both be 0 (the WAL "
        "would grow without bound)");
  }
  return dtx::Status::OK();
}

// --listen, --peer-listen, --admin-listen, --metrics-listen, --coordinator,
// --coordinators.
dtx::Status CheckAddresses(const Flags& flags, dtx::participant::RuntimeOptions* options) {
  auto listen_hp = dtx::ParseHostPort(flags.listen);
  if (!listen_hp.ok())
    return dtx::Status::InvalidArgument("--listen: " + listen_hp.status().message());
  options->listen_host = listen_hp->host;
  options->listen_port = listen_hp->port;
  options->peer_host = listen_hp->host;
  options->peer_port = 0;
  if (!flags.peer_listen.empty()) {
    auto peer_hp = dtx::ParseHostPort(flags.peer_listen, dtx::PortZero::kAllow);
    if (!peer_hp.ok())
      return dtx::Status::InvalidArgument("--peer-listen: " + peer_hp.status().message());
    options->peer_host = peer_hp->host;
    options->peer_port = peer_hp->port;
  }
  auto admin_hp = dtx::ParseHostPort(flags.admin_listen, dtx::PortZero::kAllow);
  if (!admin_hp.ok())
    return dtx::Status::InvalidArgument("--admin-listen: " + admin_hp.status().message());
  options->admin_host = admin_hp->host;
  options->admin_port = admin_hp->port;
  const std::string& metrics_listen = flags.metrics_listen;
  if (metrics_listen == "off") {
    options->metrics_enabled = false;
  } else {
    // Port 0: any free port.
    auto metrics_hp = dtx::ParseHostPort(metrics_listen, dtx::PortZero::kAllow);
    if (!metrics_hp.ok()) {
      return dtx::Status::InvalidArgument(
          "--metrics-listen: expected HOST:PORT (PORT 0..65535) or off, got '" + metrics_listen +
          "'");
    }
    options->metrics_host = metrics_hp->host;
    options->metrics_port = metrics_hp->port;
  }
  if (auto hp = dtx::ParseHostPort(flags.coordinator); !hp.ok()) {
    return dtx::Status::InvalidArgument("--coordinator: " + hp.status().message());
  }
  const std::string& coordinators = flags.coordinators;
  for (size_t start = 0; !coordinators.empty() && start <= coordinators.size();) {
    size_t end = coordinators.find(',', start);
    if (end == std::string::npos) end = coordinators.size();
    std::string c = coordinators.substr(start, end - start);
    DTX_RETURN_IF_ERROR(dtx::node::RequireNamedPeer(flags.security, "--coordinators", c));
    if (c.find('=') != std::string::npos) {
      auto peer = dtx::node::ParseConfiguredPeer(c, dtx::PrincipalKind::kCoordinator);
      if (!peer.ok())
        return dtx::Status::InvalidArgument("--coordinators: " + peer.status().message());
      options->coordinators.push_back(peer->address);
      options->coordinator_peers.push_back(std::move(*peer));
    } else if (auto hp = dtx::ParseHostPort(c); !hp.ok()) {
      return dtx::Status::InvalidArgument("--coordinators: '" + c + "': " + hp.status().message());
    } else {
      // A coordinator without a name: asked about in-doubt transactions,
      // never allowed to drive this node under a secure policy.
      options->coordinators.push_back(c);
    }
    start = end + 1;
  }
  if (flags.security.tls()) {
    // With TLS the coordinator asked by default must be one whose
    // certificate name is known.
    auto hp = dtx::ParseHostPort(flags.coordinator);
    const std::string coordinator = dtx::FormatHostPort(hp->host, hp->port);
    options->coordinator = coordinator;  // the form the named list uses
    bool named = false;
    for (const dtx::node::ConfiguredPeer& p : options->coordinator_peers)
      named |= p.address == coordinator;
    if (!named) {
      return dtx::Status::InvalidArgument(
          "--coordinator " + flags.coordinator +
          ": with TLS (--certs-dir) it must be one of --coordinators NAME=HOST:PORT");
    }
  }
  return dtx::Status::OK();
}

dtx::Status ToRuntimeOptions(const Flags& flags, dtx::participant::RuntimeOptions* options) {
  DTX_RETURN_IF_ERROR(flags.security.Validate());
  DTX_RETURN_IF_ERROR(CheckStorage(flags, options));
  return CheckAddresses(flags, options);
}

// Before the node starts: failpoints from DTX_FAILPOINTS, NODEDIR, the log.
// Returns the exit code when the process must stop.
std::optional<int> SetUpProcess(const Flags& flags, const po::options_description& desc,
                                bool enable_failpoints) {
  dtx::Status s = dtx::fp::InitFromEnvForNode(enable_failpoints);
  if (!s.ok()) {
    std::cerr << "dtx-participant: " << s.message() << "\n";
    return kExitBadUsage;
  }

  std::error_code ec;
  std::filesystem::create_directories(flags.dir, ec);
  if (ec) {
    std::cerr << "dtx-participant: cannot create " << flags.dir << ": " << ec.message() << "\n";
    return kExitFailed;
  }
  dtx::log::Options lo;
  lo.node = flags.name;
  lo.file = flags.log_file.empty() ? (std::filesystem::path(flags.dir) / "node.log").string()
                                   : flags.log_file;
  lo.level = flags.log_level;
  s = dtx::log::Init(lo);
  if (!s.ok()) return Usage(desc, "--log-level/--log-file: " + s.message());
  return std::nullopt;
}

// Starts the runtime and serves until SIGTERM/SIGINT; the exit code.
int RunUntilStopSignal(const dtx::participant::RuntimeOptions& options) {
  int rc = 0;
  {
    dtx::EventLoop loop;
    auto rt = dtx::participant::Runtime::Start(&loop, options);
    if (!rt.ok()) {
      DTX_LOG_ERROR("cannot start: {}", rt.status().ToString());
      std::cerr << "dtx-participant: cannot start: " << rt.status().ToString() << "\n";
      dtx::log::Flush();
      return dtx::node::StopExitCode();  // 74 if a WAL sync failed: not to be restarted blindly
    }
    std::unique_ptr<dtx::participant::Runtime> runtime = std::move(rt.value());
    if (!options.enable_failpoints)
      DTX_LOG_INFO("failpoints off (started without --enable-failpoints): SetFailpoint is refused");
    for (const std::string& a : dtx::fp::Armed())
      DTX_LOG_INFO("failpoint armed from DTX_FAILPOINTS: {}", a);
    dtx::Status s = loop.HandleStopSignals([&](int signum) {
      DTX_LOG_INFO("signal {}: shutting down", signum);
      runtime->Shutdown();
      loop.Stop();
    });
    if (!s.ok()) {
      DTX_LOG_ERROR("cannot install signal handlers: {}", s.ToString());
      rc = kExitFailed;
    } else {
      loop.Run();
    }
    runtime->Shutdown();
    runtime.reset();  // closes the WAL (syncing what is queued) and LevelDB
  }
  DTX_LOG_INFO("stopped");
  dtx::log::Flush();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  dtx::participant::RuntimeOptions options;
  const po::options_description desc = DescribeFlags(&flags, &options);
  if (std::optional<int> exit_code = ParseCommandLine(argc, argv, desc)) return *exit_code;

  dtx::Status s = ToRuntimeOptions(flags, &options);
  if (!s.ok()) return Usage(desc, s.message());

  if (std::optional<int> exit_code = SetUpProcess(flags, desc, options.enable_failpoints))
    return *exit_code;
  auto security = dtx::node::NodeSecurity::FromFlags(flags.security, options.name);
  if (!security.ok()) {
    DTX_LOG_ERROR("cannot start: {}", security.status().ToString());
    std::cerr << "dtx-participant: cannot start: " << security.status().ToString() << "\n";
    dtx::log::Flush();
    return kExitFailed;
  }
  options.security = std::move(*security);
  return RunUntilStopSignal(options);
}
