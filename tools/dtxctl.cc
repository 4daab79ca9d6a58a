// dtxctl: the admin CLI of dtx. See `dtxctl --help` and README "dtxctl".
//
// Exit codes: 0 success; 1 the operation failed (message on stderr);
// 2 bad usage (unknown command or flag, missing argument).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <ctime>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "common/wire.h"
#include "tools/admin_client.h"
#include "tools/certs_cmd.h"
#include "tools/cluster_config.h"
#include "tools/metrics_text.h"
#include "tools/supervisor.h"
#include "tools/trace_view.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace dtx;
using namespace dtx::tools;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

constexpr int kParticipantsMax = 64;
constexpr int kUpTimeoutSecondsDefault = 20;
constexpr int kSupervisorStartTimeoutMs = 5000;
constexpr int kStopGraceMsDefault = 5000;
constexpr int kStopGraceMsMax = 60000;
constexpr int kDownTimeoutMs = kStopGraceMsMax + 5000;  // > any stop grace period
constexpr int kLeftoverKillTimeoutMs = 5000;
constexpr int kRestartTimeoutMs = 20000;
constexpr int kLogTailLines = 20;
constexpr int kMetricsConnectTimeoutMs = 1000;
constexpr int kMetricsReadTimeoutMs = 5000;
constexpr size_t kMetricsResponseBytesMax = 16 << 20;
constexpr int kTraceTimeoutMsDefault = 2000;
constexpr int kTraceTimeoutMsMax = 60000;
constexpr int kTopIntervalMsDefault = 1000;
constexpr int kTopIntervalMsMin = 100;
constexpr int kTopIntervalMsMax = 60000;
constexpr uint16_t kPortRangeLow = 20000;  // below the usual ephemeral range
constexpr uint16_t kPortRangeHigh = 32000;

const char* kUsage =
    "usage: dtxctl <command> [options]   (--dir defaults to $DTX_CLUSTER_DIR or ./dtx-cluster)\n"
    "       dtxctl --cluster FILE <command> [options]\n"
    "\n"
    "  --dir DIR names a local cluster (made by cluster up). --cluster FILE (before or after\n"
    "  the command) names any cluster by its cluster file, e.g. one on other hosts\n"
    "  (docs/deploy.md): status, failpoint, in-doubt, metrics, trace and top take it; the\n"
    "  operator's certificates are client.* and admin.* in the file's certs directory\n"
    "\n"
    "  cluster up --dir DIR --participants N [--bin-dir D] [--timeout S] [--log-level L]\n"
    "             [--participant-bin PATH] [--coordinator-bin PATH] [--stop-grace-ms MS]\n"
    "             [--backup] [--no-obs] [--insecure]\n"
    "                        start a local cluster (coordinator-0, with --backup coordinator-1,\n"
    "                        participant-0..N-1) under a supervisor that restarts crashed\n"
    "                        nodes; returns when all answer and the primary has heard\n"
    "                        every participant. Creates the CA and every\n"
    "                        certificate in DIR/certs unless --insecure (plaintext)\n"
    "  cluster down --dir DIR\n"
    "                        stop the supervisor and every node\n"
    "  status --dir DIR      node, address, pid, role, epoch, durable LSN, in-flight, in-doubt;\n"
    "                        each listener's address and security (mutual TLS, TLS, plaintext);\n"
    "                        why a node is stopped (left down after a WAL sync failure);\n"
    "                        STATE disk-low: below its free-space watermark, new writes refused\n"
    "  kill NODE --dir DIR   SIGKILL a node (the supervisor restarts it)\n"
    "  restart NODE --dir DIR\n"
    "                        kill a node and wait until it answers again; a node left\n"
    "                        stopped after a WAL sync failure is started again\n"
    "  failpoint NODE NAME ACTION --dir DIR\n"
    "                        arm a failpoint on a running node (docs/failpoints.md)\n"
    "  in-doubt --dir DIR    prepared transactions without a known outcome, per participant\n"
    "  metrics NODE --dir DIR\n"
    "                        print the node's Prometheus metrics (GET /metrics at the address\n"
    "                        in DIR/NODE/metrics.addr)\n"
    "  trace TXID --dir DIR [--json] [--timeout-ms N]\n"
    "                        one transaction's span events from every node, merged into one\n"
    "                        timeline; names silent nodes and where an unfinished one waits\n"
    "  top --dir DIR [--interval-ms 1000] [--iterations N]\n"
    "                        live view per node: role, epoch, tx/s, aborts/s, p99, in-doubt,\n"
    "                        heartbeat ages; DOWN for a node that does not answer\n"
    "  certs create-ca | create-node NAME | create-client NAME [--dir CERTDIR]\n"
    "  certs show FILE [--ca CA]\n"
    "                        make the cluster CA and certificates (keys 0600); `dtxctl certs\n"
    "                        help` for the options\n"
    "  supervise --dir DIR --participant-bin P --coordinator-bin C\n"
    "                        run the supervisor in the foreground (cluster up does this)\n"
    "\n"
    "exit status: 0 ok, 1 failed, 2 bad usage\n";

int Usage(const std::string& error) {
  std::cerr << "dtxctl: " << error << "\n\n" << kUsage;
  return kExitUsage;
}

int Fail(const std::string& message) {
  std::cerr << "dtxctl: " << message << "\n";
  return kExitFailed;
}

std::string SelfExe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

std::string Absolute(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(path, ec);
  return ec ? path : p.lexically_normal().string();
}

// Parses `args` (after the command words) with `desc` and `positional`.
// Returns false after printing the usage error.
bool ParseArgs(const std::vector<std::string>& args, const po::options_description& desc,
               const po::positional_options_description& positional, po::variables_map* vm,
               int* exit_code) {
  try {
    po::store(po::command_line_parser(args).options(desc).positional(positional).run(), *vm);
    if (vm->count("help")) {
      std::cout << kUsage << "\n" << desc;
      *exit_code = kExitOk;
      return false;
    }
    po::notify(*vm);
  } catch (const po::error& e) {
    *exit_code = Usage(e.what());
    return false;
  }
  return true;
}

po::options_description DirOptions(std::string* dir) {
  po::options_description d("options");
  d.add_options()("help,h", "show help")(
      "dir", po::value<std::string>(dir)->default_value(DefaultClusterDir()), "cluster directory");
  return d;
}

// Where a command finds its cluster: --dir DIR, a local cluster `cluster up`
// made (pid files, the supervisor, NODEDIR/metrics.addr), or --cluster FILE,
// any cluster by its cluster file (tools/cluster_config.h ClusterFile;
// docs/deploy.md), with no local state.
struct Target {
  std::string dir;
  std::string file;
};

po::options_description TargetOptions(Target* target) {
  po::options_description d = DirOptions(&target->dir);
  d.add_options()("cluster", po::value<std::string>(&target->file),
                  "cluster file (instead of --dir: a cluster on other hosts)");
  return d;
}

// A cluster as a command sees it.
struct Cluster {
  ClusterConfig config;
  ToolCredentials creds;
  // The local cluster directory (--dir); "" with --cluster FILE.
  std::string dir;
  // "DIR" or "FILE", for messages.
  std::string where;
};

// ---------------------------------------------------------------------------
// The supervisor lock: DIR/supervisor.lock, flock()ed by the running
// supervisor for its whole life. Free lock = no supervisor.

// Opens (creating) the lock file; -1 on error (errno set).
int OpenLock(const std::string& dir, bool cloexec) {
  std::string path = dir + "/" + kSupervisorLockFile;
  return ::open(path.c_str(), O_RDWR | O_CREAT | (cloexec ? O_CLOEXEC : 0), 0644);
}

bool SupervisorRunning(const std::string& dir) {
  std::string path = dir + "/" + kSupervisorLockFile;
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  bool running = ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // also drops our lock if we got it
  return running;
}

// The first line of NODEDIR/stopped (why the supervisor left the node down),
// or "" if there is none.
std::string StoppedReason(const std::string& dir, const std::string& node) {
  std::ifstream in(NodeDir(dir, node) + "/" + kNodeStoppedFile);
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  return line.empty() ? "no reason given" : line;
}

std::string SupervisorPidText(const std::string& dir) {
  auto pid = ReadPidFile(dir + "/" + kSupervisorPidFile);
  return pid.ok() ? std::to_string(*pid) : "unknown";
}

// Live node processes (by their pid files, checked against /proc cmdline).
std::vector<std::pair<std::string, pid_t>> LiveNodes(const std::string& dir,
                                                     const ClusterConfig& config) {
  std::vector<std::pair<std::string, pid_t>> out;
  for (const NodeEntry& n : config.nodes()) {
    auto pid = ReadPidFile(NodeDir(dir, n.name) + "/" + kNodePidFile);
    if (pid.ok() && IsNodeProcess(*pid, n.name)) out.emplace_back(n.name, *pid);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Binaries

// `exact` (a path given by flag) wins, then `bin_dir`, then places near dtxctl
// (the build tree puts each binary in its part's folder).
std::string FindBinary(const std::string& name, const std::string& exact,
                       const std::string& bin_dir, std::vector<std::string>* tried) {
  std::vector<fs::path> candidates;
  if (!exact.empty()) {
    candidates.push_back(fs::path(exact));
  } else if (!bin_dir.empty()) {
    candidates.push_back(fs::path(bin_dir) / name);
  } else {
    fs::path exe_dir = fs::path(SelfExe()).parent_path();
    std::string part = name.substr(name.find('-') + 1);  // "participant" / "coordinator"
    candidates = {exe_dir / name, exe_dir / ".." / part / name, exe_dir / ".." / "bin" / name,
                  exe_dir / ".." / name};
  }
  for (const fs::path& c : candidates) {
    tried->push_back(c.lexically_normal().string());
    if (::access(c.c_str(), X_OK) == 0 && fs::is_regular_file(c)) {
      return Absolute(c.string());
    }
  }
  return "";
}

// ---------------------------------------------------------------------------
// Ports

bool PortFree(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// `count` distinct free loopback ports from a random start in
// [kPortRangeLow, kPortRangeHigh) (below the ephemeral range, so outgoing
// connections do not take them while a node restarts).
Result<std::vector<uint16_t>> PickPorts(int count) {
  std::random_device rd;
  std::mt19937 rng(rd() ^ static_cast<unsigned>(::getpid()));
  const int span = kPortRangeHigh - kPortRangeLow;
  int start = static_cast<int>(rng() % static_cast<unsigned>(span));
  std::vector<uint16_t> out;
  for (int i = 0; i < span && static_cast<int>(out.size()) < count; ++i) {
    auto port = static_cast<uint16_t>(kPortRangeLow + (start + i) % span);
    if (PortFree(port)) out.push_back(port);
  }
  if (static_cast<int>(out.size()) < count) {
    return Status::Unavailable("could not find " + std::to_string(count) + " free ports");
  }
  return out;
}

// ---------------------------------------------------------------------------
// cluster down (also the clean-up of a failed cluster up)

// Stops the supervisor and any leftover node. Returns a message for what
// could not be stopped, or OK.
Status StopCluster(const std::string& dir, bool quiet) {
  if (SupervisorRunning(dir)) {
    auto pid = ReadPidFile(dir + "/" + kSupervisorPidFile);
    if (!pid.ok()) {
      return Status::Unavailable("a supervisor holds " + dir + "/" + kSupervisorLockFile + " but " +
                                 kSupervisorPidFile + " is unreadable: " + pid.status().ToString());
    }
    if (::kill(*pid, SIGTERM) != 0 && errno != ESRCH) {
      return Status::FromErrno("kill supervisor " + std::to_string(*pid), errno);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kDownTimeoutMs);
    while (SupervisorRunning(dir) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (SupervisorRunning(dir)) {
      std::cerr << "dtxctl: supervisor pid " << *pid << " did not stop within " << kDownTimeoutMs
                << " ms; SIGKILL\n";
      ::kill(*pid, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (!quiet) std::cout << "supervisor pid " << *pid << " stopped\n";
  }
  ::unlink((dir + "/" + kSupervisorPidFile).c_str());
  auto config = ClusterConfig::Load(dir);
  if (!config.ok()) return Status::OK();
  // Nodes left behind by a supervisor that was killed with SIGKILL.
  auto leftovers = LiveNodes(dir, *config);
  for (const auto& [name, pid] : leftovers) {
    std::cerr << "dtxctl: " << name << " pid " << pid << " outlived its supervisor; SIGKILL\n";
    ::kill(pid, SIGKILL);
  }
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kLeftoverKillTimeoutMs);
  for (const auto& [name, pid] : leftovers) {
    while (ProcessAlive(pid) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (ProcessAlive(pid)) {
      return Status::Unavailable(name + " pid " + std::to_string(pid) + " did not die");
    }
  }
  for (const NodeEntry& n : config->nodes()) {
    ::unlink((NodeDir(dir, n.name) + "/" + kNodePidFile).c_str());
  }
  return Status::OK();
}

int CmdClusterDown(const std::vector<std::string>& args) {
  std::string dir;
  po::options_description desc = DirOptions(&dir);
  po::variables_map vm;
  int code = 0;
  if (!ParseArgs(args, desc, {}, &vm, &code)) return code;
  if (!fs::is_directory(dir)) {
    std::cout << "no cluster in " << dir << " (no such directory)\n";
    return kExitOk;
  }
  Status s = StopCluster(Absolute(dir), false);
  if (!s.ok()) return Fail(s.ToString());
  std::cout << "cluster in " << dir << " is down\n";
  return kExitOk;
}

// ---------------------------------------------------------------------------
// cluster up

void PrintNodeLogs(const std::string& dir, const std::string& node) {
  for (const char* file : {kNodeConsoleFile, kNodeLogFile}) {
    std::string path = NodeDir(dir, node) + "/" + file;
    std::string tail = TailFile(path, kLogTailLines);
    if (tail.empty()) continue;
    std::cerr << "---- last lines of " << path << "\n" << tail;
    if (tail.back() != '\n') std::cerr << "\n";
  }
}

// Starts `dtxctl supervise` detached from the terminal (double fork, setsid),
// with the supervisor lock fd `lock_fd` inherited.
Status StartSupervisorDaemon(const std::string& dir, const std::vector<std::string>& flags,
                             int lock_fd) {
  std::string self = SelfExe();
  if (self.empty()) return Status::Internal("cannot read /proc/self/exe");
  std::string log_path = dir + "/" + kSupervisorLogFile;
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return Status::FromErrno(log_path, errno);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    ::close(log_fd);
    return Status::FromErrno("/dev/null", errno);
  }
  std::vector<std::string> argv_s = {self, "supervise", "--dir",
                                     dir,  "--lock-fd", std::to_string(lock_fd)};
  argv_s.insert(argv_s.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  pid_t child = ::fork();
  if (child < 0) {
    int err = errno;
    ::close(log_fd);
    ::close(null_fd);
    return Status::FromErrno("fork", err);
  }
  if (child == 0) {
    // Only async-signal-safe calls from here on.
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) ::_exit(grandchild < 0 ? 1 : 0);
    ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    // A daemon keeps no other directory busy; every path it uses is absolute.
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    const char msg[] = "dtxctl: exec of the supervisor failed\n";
    ssize_t ignored = ::write(2, msg, sizeof(msg) - 1);
    (void)ignored;
    ::_exit(127);
  }
  ::close(log_fd);
  ::close(null_fd);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::Internal("could not daemonise the supervisor");
  }
  return Status::OK();
}

int CmdClusterUp(const std::vector<std::string>& args) {
  std::string dir;
  int participants = 0;
  std::string bin_dir;
  std::string participant_bin_flag;
  std::string coordinator_bin_flag;
  int timeout_s = kUpTimeoutSecondsDefault;
  std::string log_level;
  int stop_grace_ms = 0;
  bool backup = false;
  bool no_obs = false;
  bool insecure = false;
  po::options_description desc = DirOptions(&dir);
  desc.add_options()("participants", po::value<int>(&participants)->required(),
                     "number of participants (1..64)")(
      "no-obs", po::bool_switch(&no_obs),
      "start every node with --metrics-listen off --trace-events 0 (no metrics endpoint, no "
      "tracing: for measuring their overhead)")(
      "backup", po::bool_switch(&backup),
      "also start coordinator-1 as the primary's backup (replication, failover)")(
      "insecure", po::bool_switch(&insecure),
      "no certificates: the nodes speak plaintext and authenticate no one (prints a warning)")(
      "bin-dir", po::value<std::string>(&bin_dir),
      "directory holding dtx-participant and dtx-coordinator (default: next to dtxctl)")(
      "participant-bin", po::value<std::string>(&participant_bin_flag),
      "path of dtx-participant (overrides --bin-dir)")(
      "coordinator-bin", po::value<std::string>(&coordinator_bin_flag),
      "path of dtx-coordinator (overrides --bin-dir)")(
      "timeout", po::value<int>(&timeout_s)->default_value(kUpTimeoutSecondsDefault),
      "seconds to wait for every node to answer")(
      "log-level", po::value<std::string>(&log_level)->default_value("info"), "nodes' log level")(
      "stop-grace-ms", po::value<int>(&stop_grace_ms)->default_value(kStopGraceMsDefault),
      "on cluster down: SIGKILL nodes still alive this long after SIGTERM");
  po::variables_map vm;
  int code = 0;
  if (!ParseArgs(args, desc, {}, &vm, &code)) return code;
  if (participants < 1 || participants > kParticipantsMax) {
    return Usage("--participants must be 1.." + std::to_string(kParticipantsMax));
  }
  if (timeout_s < 1 || timeout_s > 600) return Usage("--timeout must be 1..600 seconds");
  if (stop_grace_ms < 0 || stop_grace_ms > kStopGraceMsMax) {
    return Usage("--stop-grace-ms must be 0.." + std::to_string(kStopGraceMsMax));
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Fail("cannot create " + dir + ": " + ec.message());
  dir = Absolute(dir);

  int lock_fd = OpenLock(dir, /*cloexec=*/false);
  if (lock_fd < 0)
    return Fail("cannot open " + dir + "/" + kSupervisorLockFile + ": " + std::strerror(errno));
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd);
    return Fail("a cluster is already running in " + dir + " (supervisor pid " +
                SupervisorPidText(dir) + "); run `dtxctl cluster down --dir " + dir + "` first");
  }
  auto fail_locked = [&](const std::string& m) {
    ::close(lock_fd);
    return Fail(m);
  };

  std::vector<std::string> tried;
  std::string participant_bin =
      FindBinary("dtx-participant", participant_bin_flag, bin_dir, &tried);
  std::string coordinator_bin =
      FindBinary("dtx-coordinator", coordinator_bin_flag, bin_dir, &tried);
  if (participant_bin.empty() || coordinator_bin.empty()) {
    std::string list;
    for (const auto& t : tried) list += "\n  " + t;
    return fail_locked(std::string("cannot find ") +
                       (participant_bin.empty() ? "dtx-participant" : "dtx-coordinator") +
                       " (use --bin-dir); looked at:" + list);
  }

  // An existing cluster.conf is reused (the data in the node directories was
  // sharded over its participants); otherwise pick fresh ports.
  ClusterConfig config;
  auto existing = ClusterConfig::Load(dir);
  if (existing.ok()) {
    if (static_cast<int>(existing->participants().size()) != participants) {
      return fail_locked(dir + " holds a cluster of " +
                         std::to_string(existing->participants().size()) +
                         " participants; use that number or a new directory");
    }
    if ((existing->Find("coordinator-1") != nullptr) != backup) {
      return fail_locked(dir + " holds a cluster " + (backup ? "without" : "with") +
                         " a backup coordinator; " + (backup ? "drop" : "add") +
                         " --backup or use a new directory");
    }
    auto live = LiveNodes(dir, *existing);
    if (!live.empty()) {
      return fail_locked(live.front().first + " (pid " + std::to_string(live.front().second) +
                         ") from an earlier cluster is still running in " + dir +
                         "; run `dtxctl cluster down --dir " + dir + "` first");
    }
    size_t admin_missing = 0;
    for (const NodeEntry& n : existing->nodes()) {
      for (const std::string& a : {n.address, n.admin_address, n.peer_address}) {
        if (a.empty()) continue;
        auto hp = ParseHostPort(a);
        if (!hp.ok() || !PortFree(hp->port)) {
          return fail_locked(n.name + "'s address " + a + " (from " + dir +
                             "/cluster.conf) is in use by another program");
        }
      }
      if (n.admin_address.empty()) ++admin_missing;
      if (n.peer_address.empty()) ++admin_missing;
    }
    config = *existing;
    // A cluster.conf from before the admin or peer listener: give each node
    // the ones it lacks.
    if (admin_missing > 0) {
      auto ports = PickPorts(static_cast<int>(admin_missing));
      if (!ports.ok()) return fail_locked(ports.status().ToString());
      size_t next = 0;
      Status s;
      for (const NodeEntry& n : existing->nodes()) {
        if (s.ok() && n.admin_address.empty())
          s = config.SetAdminAddress(n.name, "127.0.0.1:" + std::to_string((*ports)[next++]));
        if (s.ok() && n.peer_address.empty())
          s = config.SetPeerAddress(n.name, "127.0.0.1:" + std::to_string((*ports)[next++]));
      }
      if (s.ok()) s = config.Save(dir);
      if (!s.ok()) return fail_locked(s.ToString());
    }
  } else if (existing.status().IsNotFound()) {
    const int coordinators = backup ? 2 : 1;
    const int nodes = participants + coordinators;
    // Per node: its client listener, then (nodes further on) its admin
    // listener, then (2 * nodes further on) its peer listener.
    auto ports = PickPorts(3 * nodes);
    if (!ports.ok()) return fail_locked(ports.status().ToString());
    auto addr = [&](int i) { return "127.0.0.1:" + std::to_string((*ports)[i]); };
    Status s;
    for (int i = 0; s.ok() && i < coordinators; ++i) {
      s = config.Add("coordinator-" + std::to_string(i), addr(i), addr(nodes + i),
                     addr(2 * nodes + i));
    }
    for (int i = 0; s.ok() && i < participants; ++i) {
      s = config.Add("participant-" + std::to_string(i), addr(coordinators + i),
                     addr(nodes + coordinators + i), addr(2 * nodes + coordinators + i));
    }
    if (s.ok()) s = config.Save(dir);
    if (!s.ok()) return fail_locked(s.ToString());
  } else {
    return fail_locked(existing.status().ToString());
  }
  for (const NodeEntry& n : config.nodes()) {
    fs::create_directories(NodeDir(dir, n.name), ec);
    if (ec) return fail_locked("cannot create " + NodeDir(dir, n.name) + ": " + ec.message());
    ::unlink((NodeDir(dir, n.name) + "/" + kNodePidFile).c_str());
    // Starting the cluster again is the operator's go-ahead for a node the
    // supervisor left down (tools/supervisor.h).
    std::string reason = StoppedReason(dir, n.name);
    if (!reason.empty()) {
      std::cout << n.name << " was stopped (" << reason << "); starting it again\n";
      ::unlink((NodeDir(dir, n.name) + "/" + kNodeStoppedFile).c_str());
    }
  }
  ::unlink((dir + "/" + kSupervisorPidFile).c_str());
  if (Status sec = SetUpClusterSecurity(dir, config, insecure); !sec.ok()) {
    return fail_locked("setting up certificates: " + sec.ToString());
  }

  std::vector<std::string> supervisor_args = {
      "--participant-bin", participant_bin, "--coordinator-bin", coordinator_bin,
      "--log-level",       log_level,       "--stop-grace-ms",   std::to_string(stop_grace_ms)};
  if (no_obs) supervisor_args.push_back("--no-obs");
  Status s = StartSupervisorDaemon(dir, supervisor_args, lock_fd);
  ::close(lock_fd);  // the supervisor holds the lock now
  if (!s.ok()) return Fail(s.ToString());

  auto teardown = [&](const std::string& why) {
    std::cerr << "dtxctl: " << why << "\n";
    Status st = StopCluster(dir, true);
    if (!st.ok()) std::cerr << "dtxctl: tearing down: " << st.ToString() << "\n";
    std::cerr << "dtxctl: cluster up failed; everything it started is stopped\n";
    return kExitFailed;
  };

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  auto start_deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kSupervisorStartTimeoutMs);
  while (!ReadPidFile(dir + "/" + kSupervisorPidFile).ok()) {
    if (std::chrono::steady_clock::now() > start_deadline || !SupervisorRunning(dir)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (ReadPidFile(dir + "/" + kSupervisorPidFile).ok()) break;
      std::cerr << "---- last lines of " << dir << "/" << kSupervisorLogFile << "\n"
                << TailFile(dir + "/" + kSupervisorLogFile, kLogTailLines);
      return teardown("the supervisor did not start");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  auto creds = ToolCredentials::Load(dir);
  if (!creds.ok()) return teardown(creds.status().ToString());
  for (const NodeEntry& n : config.nodes()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    Status ready = WaitUntilReady(n, *creds, static_cast<int>(std::max<int64_t>(left.count(), 1)));
    if (!ready.ok()) {
      PrintNodeLogs(dir, n.name);
      return teardown(n.name + " (" + n.address + ") is not ready: " + ready.message());
    }
  }
  // A node answering is not yet a cluster that commits: the primary
  // coordinator suspects a participant it has not heard a heartbeat from
  // (a slow start, e.g. under a sanitizer), and would refuse the first
  // transactions. Wait until it has heard every participant.
  for (const NodeEntry& n : config.nodes()) {
    if (n.role != NodeKind::kCoordinator) continue;
    std::string unheard;
    for (;;) {
      auto st = GetNodeStatus(n, *creds);
      unheard.clear();
      if (!st.ok()) {
        unheard = st.status().ToString();
      } else if (st->role == rpc::NodeRole::PRIMARY) {
        for (const rpc::PeerStatus& p : st->peers) {
          if (p.name.rfind("participant-", 0) != 0) continue;
          if (p.suspected || p.heartbeat_age_ms < 0) unheard += (unheard.empty() ? "" : ", ") + p.name;
        }
      }
      if (unheard.empty()) break;
      if (std::chrono::steady_clock::now() > deadline) {
        PrintNodeLogs(dir, n.name);
        return teardown(n.name + " has not heard from " + unheard);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // A node can answer before the supervisor has written its pid file; users
  // of the pid files (kill, the bench's CPU accounting) need them now.
  for (const NodeEntry& n : config.nodes()) {
    std::string pid_path = NodeDir(dir, n.name) + "/" + kNodePidFile;
    for (;;) {
      auto pid = ReadPidFile(pid_path);
      if (pid.ok() && IsNodeProcess(*pid, n.name)) break;
      if (std::chrono::steady_clock::now() > deadline) {
        return teardown(n.name + " answers but " + pid_path + " names no live " + n.name);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  std::cout << "cluster up in " << dir << " (supervisor pid " << SupervisorPidText(dir) << ")\n";
  for (const NodeEntry& n : config.nodes()) std::cout << "  " << n.name << " " << n.address << "\n";
  std::cout << (insecure ? "INSECURE: plaintext, no certificates\n"
                         : "certificates in " + dir + "/" + kCertsDirName + "\n");
  return kExitOk;
}

// ---------------------------------------------------------------------------
// supervise

int CmdSupervise(const std::vector<std::string>& args) {
  std::string dir;
  SupervisorOptions options;
  int lock_fd = -1;
  po::options_description desc = DirOptions(&dir);
  desc.add_options()("participant-bin",
                     po::value<std::string>(&options.participant_bin)->required(),
                     "dtx-participant binary")(
      "coordinator-bin", po::value<std::string>(&options.coordinator_bin)->required(),
      "dtx-coordinator binary")("log-level",
                                po::value<std::string>(&options.log_level)->default_value("info"),
                                "nodes' log level")(
      "stop-grace-ms", po::value<int>(&options.stop_grace_ms)->default_value(kStopGraceMsDefault),
      "SIGKILL nodes still alive this long after SIGTERM")(
      "no-obs", po::bool_switch(&options.no_obs),
      "start the nodes with --metrics-listen off --trace-events 0")(
      "lock-fd", po::value<int>(&lock_fd),
      "inherited descriptor of the locked supervisor.lock (internal)");
  po::variables_map vm;
  int code = 0;
  if (!ParseArgs(args, desc, {}, &vm, &code)) return code;
  dir = Absolute(dir);
  options.dir = dir;

  log::Options lo;
  lo.node = "supervisor";
  Status s = log::Init(lo);
  if (!s.ok()) return Fail(s.ToString());
  spdlog::default_logger()->flush_on(spdlog::level::info);

  if (lock_fd >= 0) {
    struct stat fd_st {};
    struct stat path_st {};
    std::string path = dir + "/" + kSupervisorLockFile;
    if (::fstat(lock_fd, &fd_st) != 0 || ::stat(path.c_str(), &path_st) != 0 ||
        fd_st.st_ino != path_st.st_ino || fd_st.st_dev != path_st.st_dev) {
      return Fail("--lock-fd " + std::to_string(lock_fd) + " is not " + path);
    }
    ::fcntl(lock_fd, F_SETFD, FD_CLOEXEC);
  } else {
    lock_fd = OpenLock(dir, /*cloexec=*/true);
    if (lock_fd < 0) return Fail("cannot open lock in " + dir + ": " + std::strerror(errno));
  }
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    return Fail("a supervisor is already running in " + dir + " (pid " + SupervisorPidText(dir) +
                ")");
  }
  auto config = ClusterConfig::Load(dir);
  if (!config.ok()) return Fail(config.status().ToString());
  s = WritePidFile(dir + "/" + kSupervisorPidFile, ::getpid());
  if (!s.ok()) return Fail(s.ToString());
  DTX_LOG_INFO("supervisor pid={} dir={} nodes={}", ::getpid(), dir, config->nodes().size());
  s = RunSupervisor(options, *config);
  ::unlink((dir + "/" + kSupervisorPidFile).c_str());
  if (!s.ok()) {
    DTX_LOG_ERROR("supervisor: {}", s.ToString());
    return kExitFailed;
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------
// status, kill, restart, failpoint, in-doubt

Result<ClusterConfig> LoadOrExplain(const std::string& dir) {
  auto config = ClusterConfig::Load(dir);
  if (!config.ok() && config.status().IsNotFound()) {
    return Status::NotFound("no cluster in " + dir +
                            " (no cluster.conf; start one with "
                            "`dtxctl cluster up --dir " +
                            dir + " --participants N`)");
  }
  return config;
}

Result<Cluster> OpenCluster(const Target& target) {
  Cluster c;
  if (!target.file.empty()) {
    auto file = ClusterFile::Load(target.file);
    if (!file.ok()) {
      if (file.status().IsNotFound()) return Status::NotFound("no cluster file " + target.file);
      return file.status();
    }
    auto creds = ToolCredentials::FromClusterFile(*file);
    if (!creds.ok()) return creds.status();
    c.config = std::move(file->config);
    c.creds = std::move(*creds);
    c.where = target.file;
    return c;
  }
  auto config = LoadOrExplain(target.dir);
  if (!config.ok()) return config.status();
  auto creds = ToolCredentials::Load(target.dir);
  if (!creds.ok()) return creds.status();
  c.config = std::move(*config);
  c.creds = std::move(*creds);
  c.dir = target.dir;
  c.where = target.dir;
  return c;
}

int CmdStatus(const std::vector<std::string>& args) {
  Target target;
  po::options_description desc = TargetOptions(&target);
  po::variables_map vm;
  int code = 0;
  if (!ParseArgs(args, desc, {}, &vm, &code)) return code;
  auto cluster = OpenCluster(target);
  if (!cluster.ok()) return Fail(cluster.status().ToString());
  const std::string& dir = cluster->dir;
  const ClusterConfig* config = &cluster->config;
  const ToolCredentials* creds = &cluster->creds;
  if (dir.empty()) {
    std::printf("cluster file: %s\n", cluster->where.c_str());
  } else if (SupervisorRunning(dir)) {
    std::printf("supervisor: running, pid %s\n", SupervisorPidText(dir).c_str());
  } else {
    std::printf("supervisor: not running\n");
  }
  std::printf("%-15s %-21s %-8s %-12s %6s %12s %9s %8s %s\n", "NODE", "ADDRESS", "PID", "ROLE",
              "EPOCH", "DURABLE_LSN", "IN_FLIGHT", "IN_DOUBT", "STATE");
  AdminTimeouts t{.connect_timeout_ms = 500, .recv_timeout_ms = 2000};
  for (const NodeEntry& n : config->nodes()) {
    // Pids and the supervisor's stopped files exist only for a local cluster.
    std::string pid_text = "-";
    if (!dir.empty()) {
      auto pid = ReadPidFile(NodeDir(dir, n.name) + "/" + kNodePidFile);
      if (pid.ok() && IsNodeProcess(*pid, n.name)) pid_text = std::to_string(*pid);
    }
    auto st = GetNodeStatus(n, *creds, t);
    if (st.ok()) {
      // Below its free-space watermark (docs/design.md "Full disk").
      auto counter = [&](const char* name) -> long long {
        auto it = st->counters.find(name);
        return it == st->counters.end() ? 0 : static_cast<long long>(it->second);
      };
      const bool disk_low = counter("disk_low") == 1;
      std::printf("%-15s %-21s %-8s %-12s %6lld %12lld %9lld %8lld %s\n", n.name.c_str(),
                  n.address.c_str(), pid_text.c_str(), NodeRoleName(st->role),
                  static_cast<long long>(st->epoch), static_cast<long long>(st->durable_lsn),
                  static_cast<long long>(st->in_flight), static_cast<long long>(st->in_doubt),
                  disk_low ? "disk-low" : "up");
      // Indented, so that a row still starts with a node's name.
      const std::string listeners = DescribeListeners(*st);
      if (!listeners.empty()) std::printf("  listeners: %s\n", listeners.c_str());
      if (disk_low) {
        std::printf("  disk: %lld MiB free; new writes refused until space returns (%lld so far)\n",
                    counter("disk_free_bytes") >> 20, counter("disk_low_refusals"));
      }
    } else {
      const std::string stopped = dir.empty() ? "" : StoppedReason(dir, n.name);
      std::printf("%-15s %-21s %-8s %-12s %6s %12s %9s %8s %s\n", n.name.c_str(), n.address.c_str(),
                  pid_text.c_str(), "-", "-", "-", "-", "-", stopped.empty() ? "down" : "stopped");
      if (!stopped.empty()) {
        std::printf("  stopped: %s\n", stopped.c_str());
        const std::string all = TailFile(NodeDir(dir, n.name) + "/" + kNodeStoppedFile, 8);
        const size_t nl = all.find('\n');
        if (nl != std::string::npos && nl + 1 < all.size()) {
          std::printf("  %s", all.substr(nl + 1).c_str());
        }
      }
      // A running node that does not answer: say why (a refused TLS
      // handshake, a timeout, ...). Remote nodes: always.
      if (pid_text != "-" || dir.empty()) {
        std::fprintf(stderr, "dtxctl: %s: %s\n", n.name.c_str(), st.status().ToString().c_str());
      }
    }
  }
  return kExitOk;
}

struct NodeArgs {
  Target target;
  std::string node;
};

// Parses "NODE --dir DIR" (plus `extra` positional names after NODE).
bool ParseNodeCommand(const std::vector<std::string>& args, NodeArgs* out,
                      const std::vector<std::pair<const char*, std::string*>>& extra,
                      int* exit_code) {
  po::options_description desc = TargetOptions(&out->target);
  po::options_description hidden;
  hidden.add_options()("node", po::value<std::string>(&out->node)->required(), "node name");
  for (const auto& [name, target] : extra) {
    hidden.add_options()(name, po::value<std::string>(target)->required(), name);
  }
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description pos;
  pos.add("node", 1);
  for (const auto& [name, target] : extra) pos.add(name, 1);
  po::variables_map vm;
  return ParseArgs(args, all, pos, &vm, exit_code);
}

Result<NodeEntry> FindNode(const Cluster& cluster, const std::string& name) {
  const NodeEntry* n = cluster.config.Find(name);
  if (n == nullptr) {
    std::string names;
    for (const NodeEntry& e : cluster.config.nodes()) names += " " + e.name;
    return Status::NotFound("no node '" + name + "' in " + cluster.where + " (nodes:" + names +
                            ")");
  }
  return *n;
}

// kill and restart act on local processes: --dir only.
Result<Cluster> OpenLocalCluster(const Target& target, const char* command) {
  if (!target.file.empty()) {
    return Status::InvalidArgument(std::string(command) +
                                   " works on a local cluster (--dir); a node on another host "
                                   "is stopped and started there (docs/deploy.md)");
  }
  return OpenCluster(target);
}

Result<pid_t> KillNode(const std::string& dir, const NodeEntry& n) {
  auto pid = ReadPidFile(NodeDir(dir, n.name) + "/" + kNodePidFile);
  if (!pid.ok() || !IsNodeProcess(*pid, n.name)) {
    return Status::Unavailable(n.name + " is not running");
  }
  if (::kill(*pid, SIGKILL) != 0) return Status::FromErrno("kill " + std::to_string(*pid), errno);
  return *pid;
}

int CmdKill(const std::vector<std::string>& args) {
  NodeArgs a;
  int code = 0;
  if (!ParseNodeCommand(args, &a, {}, &code)) return code;
  auto cluster = OpenLocalCluster(a.target, "kill");
  if (!cluster.ok()) return Fail(cluster.status().ToString());
  const std::string& dir = cluster->dir;
  auto n = FindNode(*cluster, a.node);
  if (!n.ok()) return Fail(n.status().message());
  auto pid = KillNode(dir, *n);
  if (!pid.ok()) return Fail(pid.status().message());
  std::cout << "killed " << a.node << " (pid " << *pid << ")"
            << (SupervisorRunning(dir) ? "; the supervisor will restart it"
                                       : "; no supervisor is running to restart it")
            << "\n";
  return kExitOk;
}

int CmdRestart(const std::vector<std::string>& args) {
  NodeArgs a;
  int code = 0;
  if (!ParseNodeCommand(args, &a, {}, &code)) return code;
  auto cluster = OpenLocalCluster(a.target, "restart");
  if (!cluster.ok()) return Fail(cluster.status().ToString());
  const std::string& dir = cluster->dir;
  auto n = FindNode(*cluster, a.node);
  if (!n.ok()) return Fail(n.status().message());
  if (!SupervisorRunning(dir)) return Fail("no supervisor is running in " + dir);
  auto old_pid = KillNode(dir, *n);
  if (!old_pid.ok()) {
    // A node the supervisor left down: removing NODEDIR/stopped is the
    // go-ahead it waits for (tools/supervisor.h).
    const std::string stopped = StoppedReason(dir, a.node);
    if (stopped.empty()) return Fail(old_pid.status().message());
    const std::string path = NodeDir(dir, a.node) + "/" + kNodeStoppedFile;
    if (::unlink(path.c_str()) != 0)
      return Fail("cannot remove " + path + ": " + std::strerror(errno));
    std::cout << a.node << " was stopped (" << stopped << "); starting it again\n";
    old_pid = pid_t{0};
  }
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + std::chrono::milliseconds(kRestartTimeoutMs);
  std::string pid_path = NodeDir(dir, a.node) + "/" + kNodePidFile;
  pid_t new_pid = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    auto pid = ReadPidFile(pid_path);
    if (pid.ok() && *pid != *old_pid && IsNodeProcess(*pid, a.node)) {
      new_pid = *pid;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (new_pid == 0) {
    PrintNodeLogs(dir, a.node);
    return Fail(a.node + " was not started again within " + std::to_string(kRestartTimeoutMs) +
                " ms");
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  Status s =
      WaitUntilReady(*n, cluster->creds, static_cast<int>(std::max<int64_t>(left.count(), 1)));
  if (!s.ok()) {
    PrintNodeLogs(dir, a.node);
    return Fail(s.message());
  }
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  std::cout << "restarted " << a.node << ": pid "
            << (*old_pid == 0 ? std::string("-") : std::to_string(*old_pid)) << " -> " << new_pid
            << ", answering after " << took.count() << " ms\n";
  return kExitOk;
}

int CmdFailpoint(const std::vector<std::string>& args) {
  NodeArgs a;
  std::string name;
  std::string action;
  int code = 0;
  if (!ParseNodeCommand(args, &a, {{"name", &name}, {"action", &action}}, &code)) return code;
  auto cluster = OpenCluster(a.target);
  if (!cluster.ok()) return Fail(cluster.status().ToString());
  auto n = FindNode(*cluster, a.node);
  if (!n.ok()) return Fail(n.status().message());
  Status s = SetNodeFailpoint(*n, cluster->creds, name, action);
  if (!s.ok()) return Fail(s.ToString());
  std::cout << a.node << ": " << name << "=" << action << "\n";
  return kExitOk;
}

int CmdInDoubt(const std::vector<std::string>& args) {
  Target target;
  po::options_description desc = TargetOptions(&target);
  po::variables_map vm;
  int code = 0;
  if (!ParseArgs(args, desc, {}, &vm, &code)) return code;
  auto cluster = OpenCluster(target);
  if (!cluster.ok()) return Fail(cluster.status().ToString());
  const ClusterConfig* config = &cluster->config;
  const ToolCredentials* creds = &cluster->creds;
  std::printf("%-15s %-32s %10s %s\n", "PARTICIPANT", "TXID", "AGE_MS", "COORDINATOR");
  int failed = 0;
  size_t total = 0;
  for (const NodeEntry& n : config->participants()) {
    auto list = ListNodeInDoubt(n, *creds, {.connect_timeout_ms = 1000, .recv_timeout_ms = 2000});
    if (!list.ok()) {
      std::fprintf(stderr, "dtxctl: %s\n", list.status().ToString().c_str());
      ++failed;
      continue;
    }
    for (const rpc::InDoubtTx& tx : *list) {
      std::printf("%-15s %-32s %10lld %s\n", n.name.c_str(), TxIdHex(tx.txid).c_str(),
                  static_cast<long long>(tx.age_ms), tx.coordinator.c_str());
    }
    total += list->size();
  }
  std::printf("%zu in-doubt transaction(s)%s\n", total,
              failed > 0 ? " (incomplete: some participants did not answer)" : "");
  return failed > 0 ? kExitFailed : kExitOk;
}

// GET /metrics from an IPv4 "host:port" over a plain socket (HTTP/1.0, the
// server closes after the response). Returns the body of a 200 response.
Result<std::string> HttpGetMetrics(const std::string& address) {
  auto hp = ParseHostPort(address);
  if (!hp.ok()) return hp.status();
  const std::string& host = hp->host;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(hp->port);
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return Status::InvalidArgument("not an IPv4 address: '" + host + "'");
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    if (errno != EINPROGRESS) return Status::FromErrno("connect " + address, errno);
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, kMetricsConnectTimeoutMs) != 1)
      return Status::Unavailable("connect " + address + ": timed out");
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return Status::FromErrno("connect " + address, err);
  }
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
  size_t sent = 0;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kMetricsReadTimeoutMs);
  auto left_ms = [&] {
    return static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now())
               .count()));
  };
  while (sent < req.size()) {
    ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR)
      return Status::FromErrno("send to " + address, errno);
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, left_ms()) != 1)
      return Status::Unavailable("send to " + address + ": timed out");
  }
  std::string resp;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      resp.append(buf, static_cast<size_t>(n));
      if (resp.size() > kMetricsResponseBytesMax)
        return Status::Corruption("response from " + address + " too large");
      continue;
    }
    if (n == 0) break;
    if (errno != EAGAIN && errno != EINTR) return Status::FromErrno("recv from " + address, errno);
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, left_ms()) != 1)
      return Status::Unavailable("reading from " + address + ": timed out");
  }
  const size_t eol = resp.find("\r\n");
  const size_t body = resp.find("\r\n\r\n");
  if (eol == std::string::npos || body == std::string::npos || resp.compare(0, 5, "HTTP/") != 0) {
    return Status::Corruption("not an HTTP response from " + address);
  }
  const std::string status_line = resp.substr(0, eol);
  const size_t sp = status_line.find(' ');
  if (sp == std::string::npos || status_line.compare(sp + 1, 3, "200") != 0) {
    return Status::Unavailable(address + " answered '" + status_line + "'");
  }
  return resp.substr(body + 4);
}

// The text of GET /metrics of `node`: at its metrics= address in the
// cluster file, else (a local cluster) at the one in DIR/NODE/metrics.addr.
Result<std::string> ScrapeNode(const Cluster& cluster, const NodeEntry& node) {
  std::string address = node.metrics_address;
  if (address.empty() && cluster.dir.empty()) {
    return Status::NotFound(cluster.where + " names no metrics= address for " + node.name);
  }
  if (address.empty()) {
    const std::string file = NodeDir(cluster.dir, node.name) + "/metrics.addr";
    std::ifstream in(file);
    if (!in || !std::getline(in, address) || address.empty()) {
      return Status::NotFound("cannot read " + file +
                              " (node never started, or started with --metrics-listen off)");
    }
  }
  auto body = HttpGetMetrics(address);
  if (!body.ok())
    return Status::Unavailable(node.name + " did not answer at " + address + ": " +
                               body.status().ToString());
  return body;
}

int CmdMetrics(const std::vector<std::string>& args) {
  NodeArgs a;
  int code = 0;
  if (!ParseNodeCommand(args, &a, {}, &code)) return code;
  auto cluster = OpenCluster(a.target);
  if (!cluster.ok()) return Fail(cluster.status().ToString());
  auto n = FindNode(*cluster, a.node);
  if (!n.ok()) return Fail(n.status().message());
  auto body = ScrapeNode(*cluster, *n);
  if (!body.ok()) return Fail(body.status().message());
  std::fwrite(body->data(), 1, body->size(), stdout);
  return std::fflush(stdout) == 0 ? kExitOk : kExitFailed;
}

// ---------------------------------------------------------------------------
// trace

// "connection refused", "timed out", ... from an admin call's error.
std::string ShortReason(const Status& s) {
  const std::string m = s.message();
  if (m.find("Connection refused") != std::string::npos) return "connection refused";
  if (s.IsTimeout() || m.find("timed out") != std::string::npos ||
      m.find("EAGAIN") != std::string::npos) {
    return "timed out";
  }
  if (m.find("No more data") != std::string::npos || m.find("reset") != std::string::npos) {
    return "connection closed: " + m;
  }
  return m;
}

int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int CmdTrace(const std::vector<std::string>& args) {
  Target target;
  std::string txid_text;
  bool json = false;
  int timeout_ms = kTraceTimeoutMsDefault;
  po::options_description desc = TargetOptions(&target);
  desc.add_options()("json", po::bool_switch(&json), "print one JSON object")(
      "timeout-ms", po::value<int>(&timeout_ms)->default_value(kTraceTimeoutMsDefault),
      "per-node connect + answer timeout");
  po::options_description hidden;
  hidden.add_options()("txid", po::value<std::string>(&txid_text)->required(), "txid");
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description pos;
  pos.add("txid", 1);
  po::variables_map vm;
  int code = 0;
  if (!ParseArgs(args, all, pos, &vm, &code)) return code;
  if (timeout_ms < 1 || timeout_ms > kTraceTimeoutMsMax) {
    return Usage("--timeout-ms must be 1.." + std::to_string(kTraceTimeoutMsMax));
  }
  auto txid = ParseTxId(txid_text);
  if (!txid.ok()) return Usage(txid.status().message());
  auto cluster = OpenCluster(target);
  if (!cluster.ok()) return Fail(cluster.status().ToString());
  const ClusterConfig* config = &cluster->config;
  const ToolCredentials* creds = &cluster->creds;

  // Every node at once, each with its own connection and timeout.
  const std::vector<NodeEntry>& nodes = config->nodes();
  std::vector<NodeAnswer> answers(nodes.size());
  std::vector<std::thread> threads;
  rpc::TxId wire;
  wire.hi = static_cast<int64_t>(txid->hi);
  wire.lo = static_cast<int64_t>(txid->lo);
  AdminTimeouts t{.connect_timeout_ms = std::min(timeout_ms, 1000), .recv_timeout_ms = timeout_ms};
  for (size_t i = 0; i < nodes.size(); ++i) {
    threads.emplace_back([&, i] {
      NodeAnswer& a = answers[i];
      a.node = nodes[i].name;
      a.coordinator = nodes[i].role == NodeKind::kCoordinator;
      auto r = GetNodeTrace(nodes[i], *creds, wire, t);
      if (!r.ok()) {
        a.error = ShortReason(r.status());
        return;
      }
      a.answered = true;
      for (const rpc::SpanEventMsg& m : r->events) {
        obs::SpanEvent e;
        e.txid = *txid;
        // Event names must have static storage: keep one copy per distinct name.
        static std::mutex names_mu;
        static std::set<std::string> names;
        {
          std::lock_guard<std::mutex> lock(names_mu);
          e.event = names.insert(m.event).first->c_str();
        }
        e.mono_ns = static_cast<uint64_t>(m.mono_ns);
        e.unix_ns = m.unix_ns;
        e.seq = static_cast<uint64_t>(m.seq);
        if (m.__isset.detail) e.detail = m.detail;
        a.events.push_back(std::move(e));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  TraceReport report = AnalyzeTrace(*txid, std::move(answers), WallNowNs());
  const std::string out = json ? RenderTraceJson(report) : RenderTraceText(report);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  if (report.state == "not_found") {
    bool any_answered = false;
    for (const NodeAnswer& a : report.nodes) any_answered = any_answered || a.answered;
    std::cerr << "dtxctl: " << (any_answered ? "no node knows txid " : "no node answered for txid ")
              << txid->ToString() << "\n";
    return kExitFailed;
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------
// top

struct TopSample {
  bool up = false;
  std::string error;
  rpc::NodeStatus status;
  bool scraped = false;
  Exposition metrics;
  std::chrono::steady_clock::time_point at;
};

TopSample SampleNode(const Cluster& cluster, const NodeEntry& n) {
  TopSample s;
  s.at = std::chrono::steady_clock::now();
  auto st = GetNodeStatus(n, cluster.creds, {.connect_timeout_ms = 500, .recv_timeout_ms = 1000});
  if (!st.ok()) {
    s.error = ShortReason(st.status());
    return s;
  }
  s.up = true;
  s.status = *st;
  auto body = ScrapeNode(cluster, n);
  if (body.ok()) {
    auto e = ParseExposition(*body);
    if (e.ok()) {
      s.metrics = std::move(*e);
      s.scraped = true;
    }
  }
  return s;
}

int64_t Counter(const rpc::NodeStatus& st, const std::string& name) {
  if (!st.__isset.counters) return 0;
  auto it = st.counters.find(name);
  return it == st.counters.end() ? 0 : it->second;
}

std::string FormatRate(double v) {
  if (v < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

std::string FormatLatency(double seconds) {
  if (seconds < 0) return "-";
  char buf[32];
  if (seconds < 1e-3) {
    std::snprintf(buf, sizeof(buf), "%.0fus", seconds * 1e6);
  } else if (seconds < 1) {
    std::snprintf(buf, sizeof(buf), "%.2fms", seconds * 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.2fs", seconds);
  }
  return buf;
}

// One frame: rates and p99 between `before` and `now` (per node).
std::string TopFrame(const std::string& where, const std::vector<NodeEntry>& nodes,
                     const std::vector<TopSample>& before, const std::vector<TopSample>& now,
                     int frame) {
  std::string out;
  char line[512];
  const time_t t = std::time(nullptr);
  struct tm tm;
  gmtime_r(&t, &tm);
  std::snprintf(line, sizeof(line), "dtxctl top  %s  %04d-%02d-%02d %02d:%02d:%02d UTC  frame %d\n",
                where.c_str(), tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                tm.tm_sec, frame);
  out += line;
  std::snprintf(line, sizeof(line), "%-15s %-5s %-11s %5s %9s %9s %9s %8s %s\n", "NODE", "STATE",
                "ROLE", "EPOCH", "TX/S", "ABORTS/S", "P99", "IN_DOUBT",
                "PEERS (heartbeat age, * suspected)");
  out += line;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const TopSample& a = before[i];
    const TopSample& b = now[i];
    if (!b.up) {
      std::snprintf(line, sizeof(line), "%-15s %-5s %-11s %5s %9s %9s %9s %8s %s\n",
                    nodes[i].name.c_str(), "DOWN", "-", "-", "-", "-", "-", "-", b.error.c_str());
      out += line;
      continue;
    }
    const bool coordinator = nodes[i].role == NodeKind::kCoordinator;
    double tx_rate = -1, abort_rate = -1, p99 = -1;
    const double secs = std::chrono::duration<double>(b.at - a.at).count();
    if (a.up && secs > 0) {
      if (coordinator && a.scraped && b.scraped) {
        tx_rate = (SumSamples(b.metrics, "dtx_commits_total") -
                   SumSamples(a.metrics, "dtx_commits_total")) /
                  secs;
        abort_rate = (SumSamples(b.metrics, "dtx_aborts_total") -
                      SumSamples(a.metrics, "dtx_aborts_total")) /
                     secs;
      } else if (coordinator) {
        tx_rate =
            static_cast<double>(Counter(b.status, "commits") - Counter(a.status, "commits")) / secs;
        abort_rate =
            static_cast<double>(Counter(b.status, "aborts") - Counter(a.status, "aborts")) / secs;
      } else {
        tx_rate =
            static_cast<double>(Counter(b.status, "commits") - Counter(a.status, "commits")) / secs;
        abort_rate =
            static_cast<double>(Counter(b.status, "aborts") - Counter(a.status, "aborts")) / secs;
      }
      if (tx_rate < 0) tx_rate = -1;  // the node restarted between the samples
      if (abort_rate < 0) abort_rate = -1;
      if (a.scraped && b.scraped) {
        const std::string family = coordinator ? "dtx_phase_seconds" : "dtx_prepare_seconds";
        const std::map<std::string, std::string> match =
            coordinator ? std::map<std::string, std::string>{{"phase", "total"}}
                        : std::map<std::string, std::string>{};
        p99 = QuantileOfDelta(HistogramBuckets(a.metrics, family, match),
                              HistogramBuckets(b.metrics, family, match), 0.99);
      }
    }
    std::string peers;
    for (const rpc::PeerStatus& p : b.status.peers) {
      if (!peers.empty()) peers += "  ";
      peers +=
          (p.name.empty() ? p.address : p.name.substr(0, p.name.find(' '))) + "@" + p.address + " ";
      peers += p.heartbeat_age_ms < 0 ? "never" : std::to_string(p.heartbeat_age_ms) + "ms";
      if (p.suspected) peers += "*";
    }
    std::snprintf(line, sizeof(line), "%-15s %-5s %-11s %5lld %9s %9s %9s %8lld %s\n",
                  nodes[i].name.c_str(), "up", NodeRoleName(b.status.role),
                  static_cast<long long>(b.status.epoch), FormatRate(tx_rate).c_str(),
                  FormatRate(abort_rate).c_str(), FormatLatency(p99).c_str(),
                  static_cast<long long>(b.status.in_doubt), peers.c_str());
    out += line;
  }
  out +=
      "TX/S, ABORTS/S: coordinator commits/aborts (participant: commits/aborts applied here); P99: "
      "coordinator "
      "commit total, participant prepare (from /metrics histograms over the interval)\n";
  return out;
}

int CmdTop(const std::vector<std::string>& args) {
  Target target;
  int interval_ms = kTopIntervalMsDefault;
  int iterations = 0;
  po::options_description desc = TargetOptions(&target);
  desc.add_options()(
      "interval-ms", po::value<int>(&interval_ms)->default_value(kTopIntervalMsDefault),
      "refresh interval")("iterations", po::value<int>(&iterations)->default_value(0),
                          "stop after this many frames (0: until interrupted)");
  po::variables_map vm;
  int code = 0;
  if (!ParseArgs(args, desc, {}, &vm, &code)) return code;
  if (interval_ms < kTopIntervalMsMin || interval_ms > kTopIntervalMsMax) {
    return Usage("--interval-ms must be " + std::to_string(kTopIntervalMsMin) + ".." +
                 std::to_string(kTopIntervalMsMax));
  }
  if (iterations < 0) return Usage("--iterations must be >= 0");
  auto cluster = OpenCluster(target);
  if (!cluster.ok()) return Fail(cluster.status().ToString());
  const std::vector<NodeEntry>& nodes = cluster->config.nodes();
  auto sample_all = [&] {
    std::vector<TopSample> out(nodes.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < nodes.size(); ++i) {
      threads.emplace_back([&, i] { out[i] = SampleNode(*cluster, nodes[i]); });
    }
    for (std::thread& t : threads) t.join();
    return out;
  };
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  std::vector<TopSample> before = sample_all();
  for (int frame = 1; iterations == 0 || frame <= iterations; ++frame) {
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
    std::vector<TopSample> now = sample_all();
    std::string text = TopFrame(cluster->where, nodes, before, now, frame);
    if (tty) text = "\033[H\033[2J" + text;  // home + clear
    else text += "\n";
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (std::fflush(stdout) != 0) return kExitFailed;
    before = std::move(now);
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  QuietThriftLogging();
  std::vector<std::string> args(argv + 1, argv + argc);
  // `dtxctl --cluster FILE COMMAND ...` is `dtxctl COMMAND ... --cluster FILE`.
  std::vector<std::string> global;
  if (!args.empty() && (args[0] == "--cluster" || args[0].starts_with("--cluster="))) {
    if (args[0] == "--cluster") {
      if (args.size() < 2) return Usage("--cluster needs a FILE");
      global = {args[0], args[1]};
      args.erase(args.begin(), args.begin() + 2);
    } else {
      global = {args[0]};
      args.erase(args.begin());
    }
  }
  if (args.empty()) return Usage("missing command");
  std::string cmd = args[0];
  args.erase(args.begin());
  args.insert(args.end(), global.begin(), global.end());
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::cout << kUsage;
    return kExitOk;
  }
  try {
    if (cmd == "cluster") {
      if (args.empty()) return Usage("cluster: expected 'up' or 'down'");
      std::string sub = args[0];
      args.erase(args.begin());
      if (sub == "up") return CmdClusterUp(args);
      if (sub == "down") return CmdClusterDown(args);
      return Usage("cluster: unknown subcommand '" + sub + "' (expected 'up' or 'down')");
    }
    if (cmd == "certs") return RunCertsCommand(args);
    if (cmd == "supervise") return CmdSupervise(args);
    if (cmd == "status") return CmdStatus(args);
    if (cmd == "kill") return CmdKill(args);
    if (cmd == "restart") return CmdRestart(args);
    if (cmd == "failpoint") return CmdFailpoint(args);
    if (cmd == "in-doubt") return CmdInDoubt(args);
    if (cmd == "metrics") return CmdMetrics(args);
    if (cmd == "trace") return CmdTrace(args);
    if (cmd == "top") return CmdTop(args);
  } catch (const std::exception& e) {
    return Fail(std::string("unexpected error: ") + e.what());
  }
  return Usage("unknown command '" + cmd + "'");
}
