#include "tools/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <vector>

#include "common/exit_codes.h"
#include "common/log.h"
#include "tools/admin_client.h"

extern char** environ;

namespace dtx::tools {
namespace {

class Supervisor;

// One supervised node. Owned by Supervisor; its handles' `data` point here and
// it outlives the loop (the loop is run to completion before nodes are freed).
struct Node {
  Supervisor* owner = nullptr;
  NodeEntry entry;
  std::string bin;
  std::vector<std::string> args;  // argv[1..], without --role
  // Coordinators with a peer (coordinator-0 + coordinator-1): the role of the
  // first start, and the peer asked before a restart.
  std::string role;
  const NodeEntry* peer = nullptr;
  uv_process_t process{};
  uv_timer_t restart_timer{};
  bool running = false;      // process handle active (spawned, not yet exited)
  bool handle_open = false;  // process handle needs uv_close
  bool started_once = false;
  int backoff_ms = 0;
  uint64_t started_at_ms = 0;
  std::string last_exit;     // "exit status 1" / "killed by signal 9"
  int64_t exit_status = -1;  // of the last exit (-1: killed by a signal, or spawn failed)
  // Left down (NODEDIR/stopped) until that file is removed.
  bool stopped = false;
};

// The last line of the node's log that says why it stopped.
std::string LastErrorLine(const std::string& node_log) {
  constexpr size_t kLinesMax = 200;
  const std::string tail = TailFile(node_log, kLinesMax);
  std::string found;
  size_t pos = 0;
  while (pos < tail.size()) {
    size_t nl = tail.find('\n', pos);
    if (nl == std::string::npos) nl = tail.size();
    std::string_view line(tail.data() + pos, nl - pos);
    if (line.find("fail-stop:") != std::string_view::npos ||
        line.find("cannot start:") != std::string_view::npos) {
      found = line;
    }
    pos = nl + 1;
  }
  return found.empty() ? "(none found in " + node_log + ")" : found;
}

std::string UtcNow() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

class Supervisor {
 public:
  Supervisor(const SupervisorOptions& options, const ClusterConfig& config)
      : options_(options), config_(config) {}

  Status Run() {
    DTX_RETURN_IF_ERROR(LoadSecurity());
    int rc = uv_loop_init(&loop_);
    if (rc != 0) return Status::Internal(std::string("uv_loop_init: ") + uv_strerror(rc));
    BuildEnvironments();
    BuildNodes();
    uv_signal_init(&loop_, &sigterm_);
    uv_signal_init(&loop_, &sigint_);
    sigterm_.data = this;
    sigint_.data = this;
    uv_signal_start(&sigterm_, &Supervisor::OnSignal, SIGTERM);
    uv_signal_start(&sigint_, &Supervisor::OnSignal, SIGINT);
    uv_timer_init(&loop_, &grace_timer_);
    grace_timer_.data = this;
    uv_timer_init(&loop_, &stopped_timer_);
    stopped_timer_.data = this;
    for (auto& n : nodes_) {
      uv_timer_init(&loop_, &n->restart_timer);
      n->restart_timer.data = n.get();
      n->backoff_ms = options_.restart_backoff_min_ms;
      if (::access(StoppedPath(n.get()).c_str(), F_OK) == 0) {
        // Left down by an earlier supervisor; `dtxctl cluster up` removes
        // the file before starting one, so this is `supervise` by hand.
        DTX_LOG_WARN("{}: not starting it: {} exists (remove it to start the node)", n->entry.name,
                     StoppedPath(n.get()));
        n->stopped = true;
        WatchStopped();
        continue;
      }
      Spawn(n.get());
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
    rc = uv_loop_close(&loop_);
    if (rc != 0) DTX_LOG_WARN("uv_loop_close: {}", uv_strerror(rc));
    DTX_LOG_INFO("supervisor stopped; every node is down");
    return Status::OK();
  }

 private:
  void BuildEnvironments() {
    for (char** e = environ; *e != nullptr; ++e) {
      first_env_.emplace_back(*e);
      if (std::string_view(*e).starts_with("DTX_FAILPOINTS=")) continue;
      restart_env_.emplace_back(*e);
    }
  }

  // DIR/security.conf (tools/cluster_config.h): every node gets --certs-dir
  // or --insecure from it; no file (a directory made before TLS) is
  // --insecure. The supervisor's own GetStatus calls use the client
  // certificate.
  Status LoadSecurity() {
    auto sec = ClusterSecurity::Load(options_.dir);
    if (!sec.ok() && !sec.status().IsNotFound()) return sec.status();
    const ClusterSecurity security = sec.ok() ? *sec : ClusterSecurity{.tls = false, .certs_dir = ""};
    security_args_ = SecurityArgs(security, security.CertsDir(options_.dir));
    auto creds = ToolCredentials::Load(options_.dir);
    if (!creds.ok()) return creds.status();
    creds_ = std::move(*creds);
    return Status::OK();
  }

  void BuildNodes() {
    for (const NodeEntry& e : config_.nodes()) {
      auto n = std::make_unique<Node>();
      n->owner = this;
      n->entry = e;
      std::string node_dir = NodeDir(options_.dir, e.name);
      NodeCommandLine cl = MakeNodeCommandLine(config_, e, node_dir);
      n->bin = e.role == NodeKind::kCoordinator ? options_.coordinator_bin
                                                : options_.participant_bin;
      n->role = cl.role;
      n->peer = cl.peer;
      n->args = std::move(cl.args);
      // --enable-failpoints: this is the test and demo harness
      // (docs/failpoints.md); nodes started by hand have failpoints off.
      n->args.push_back("--enable-failpoints");
      n->args.insert(n->args.end(), security_args_.begin(), security_args_.end());
      n->args.insert(n->args.end(), {"--log-file", node_dir + "/" + kNodeLogFile, "--log-level",
                                     options_.log_level});
      if (options_.no_obs) {
        n->args.insert(n->args.end(), {"--trace-events", "0"});
        if (e.metrics_address.empty()) n->args.insert(n->args.end(), {"--metrics-listen", "off"});
      }
      nodes_.push_back(std::move(n));
    }
  }

  static std::vector<char*> CStrings(std::vector<std::string>& v) {
    std::vector<char*> out;
    for (std::string& s : v) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
  }

  void Spawn(Node* n) {
    std::string node_dir = NodeDir(options_.dir, n->entry.name);
    std::string console = node_dir + "/" + kNodeConsoleFile;
    int out_fd = ::open(console.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) {
      DTX_LOG_ERROR("{}: cannot open {}: {}", n->entry.name, console, strerror(errno));
      ScheduleRestart(n, std::string("cannot open console log: ") + strerror(errno));
      return;
    }
    std::vector<std::string> argv_s;
    argv_s.push_back(n->bin);
    argv_s.insert(argv_s.end(), n->args.begin(), n->args.end());
    if (n->peer != nullptr) {
      std::string role = n->started_once ? RestartRole(n) : n->role;
      argv_s.insert(argv_s.end(), {"--role", role});
    }
    std::vector<char*> argv = CStrings(argv_s);
    std::vector<char*> env = CStrings(n->started_once ? restart_env_ : first_env_);

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = out_fd;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = out_fd;
    uv_process_options_t po{};
    po.exit_cb = &Supervisor::OnExit;
    po.file = n->bin.c_str();
    po.args = argv.data();
    po.env = env.data();
    po.cwd = node_dir.c_str();
    po.stdio_count = 3;
    po.stdio = stdio;
    n->process.data = n;
    int rc = uv_spawn(&loop_, &n->process, &po);
    ::close(out_fd);
    n->handle_open = true;
    bool restart = n->started_once;
    n->started_once = true;
    if (rc != 0) {
      DTX_LOG_ERROR("cannot start {} ({}): {}", n->entry.name, n->bin, uv_strerror(rc));
      n->last_exit = std::string("spawn failed: ") + uv_strerror(rc);
      n->running = false;
      n->started_at_ms = uv_now(&loop_);
      uv_close(reinterpret_cast<uv_handle_t*>(&n->process), &Supervisor::OnProcessClosed);
      return;
    }
    n->running = true;
    n->started_at_ms = uv_now(&loop_);
    std::string pid_path = node_dir + "/" + kNodePidFile;
    Status s = WritePidFile(pid_path, n->process.pid);
    if (!s.ok()) DTX_LOG_ERROR("{}: {}", n->entry.name, s.ToString());
    if (restart) {
      DTX_LOG_INFO("restarted {} ({}) pid={}", n->entry.name, n->last_exit, n->process.pid);
    } else {
      DTX_LOG_INFO("started {} pid={} address={}", n->entry.name, n->process.pid, n->entry.address);
    }
  }

  // A coordinator that restarts while its peer serves as primary comes back as
  // the backup (tools/admin_client.h CoordinatorRoleToStart). Blocks the loop
  // for at most about twice kPeerQueryTimeoutMs.
  std::string RestartRole(Node* n) {
    constexpr int kPeerQueryTimeoutMs = 500;
    return CoordinatorRoleToStart(n->entry, *n->peer, creds_, n->role, kPeerQueryTimeoutMs);
  }

  std::string StoppedPath(const Node* n) const {
    return NodeDir(options_.dir, n->entry.name) + "/" + kNodeStoppedFile;
  }

  // A node that stopped because a sync of its WAL failed: its disk may have
  // lost writes it had accepted, and starting it again at once would replay
  // onto the medium that just failed, in a loop. Leave it down, say why in
  // NODEDIR/stopped (what `dtxctl status` shows) and start it again only once
  // an operator removed that file.
  void LeaveStopped(Node* n) {
    const std::string node_dir = NodeDir(options_.dir, n->entry.name);
    const std::string why = n->last_exit + " at " + UtcNow() +
                            ": a sync of its WAL failed, the disk may have lost writes it had "
                            "accepted; not restarted (check the disk, then `dtxctl restart " +
                            n->entry.name + "`)";
    const std::string last = LastErrorLine(node_dir + "/" + kNodeLogFile);
    const std::string path = StoppedPath(n);
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << why << "\n"
          << "last error: " << last << "\n";
      out.close();
      if (!out || std::rename(tmp.c_str(), path.c_str()) != 0) {
        // Without the file there is nothing for an operator to remove: the
        // node stays down until this supervisor is gone.
        DTX_LOG_ERROR(
            "{} stopped: {}; last error: {}; cannot write {} ({}): it stays down until "
            "`dtxctl cluster down` and `cluster up`",
            n->entry.name, why, last, path, strerror(errno));
        return;
      }
    }
    DTX_LOG_ERROR("{} stopped: {}; last error: {}", n->entry.name, why, last);
    n->stopped = true;
    WatchStopped();
  }

  // Polls NODEDIR/stopped of the nodes left down while there are any.
  void WatchStopped() {
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&stopped_timer_))) return;
    const auto every = static_cast<uint64_t>(options_.stopped_poll_ms);
    uv_timer_start(&stopped_timer_, &Supervisor::OnStoppedTimer, every, every);
  }

  static void OnStoppedTimer(uv_timer_t* timer) {
    auto* self = static_cast<Supervisor*>(timer->data);
    bool any = false;
    for (auto& n : self->nodes_) {
      if (!n->stopped) continue;
      if (::access(self->StoppedPath(n.get()).c_str(), F_OK) == 0) {
        any = true;
        continue;
      }
      n->stopped = false;
      n->backoff_ms = self->options_.restart_backoff_min_ms;
      DTX_LOG_INFO("{}: {} was removed; starting it again", n->entry.name,
                   self->StoppedPath(n.get()));
      self->Spawn(n.get());
    }
    if (!any) uv_timer_stop(timer);
  }

  void ScheduleRestart(Node* n, const std::string& why) {
    if (stopping_) return;
    uint64_t ran_ms = uv_now(&loop_) - n->started_at_ms;
    if (ran_ms >= static_cast<uint64_t>(options_.stable_run_ms)) {
      n->backoff_ms = options_.restart_backoff_min_ms;
    }
    DTX_LOG_WARN("{} exited ({}) after {} ms; restarting in {} ms", n->entry.name, why, ran_ms,
                 n->backoff_ms);
    n->last_exit = why;
    uv_timer_start(&n->restart_timer, &Supervisor::OnRestartTimer,
                   static_cast<uint64_t>(n->backoff_ms), 0);
    n->backoff_ms = std::min(n->backoff_ms * 2, options_.restart_backoff_max_ms);
  }

  static void OnExit(uv_process_t* process, int64_t exit_status, int term_signal) {
    auto* n = static_cast<Node*>(process->data);
    n->running = false;
    if (term_signal != 0) {
      n->last_exit = "killed by signal " + std::to_string(term_signal);
      n->exit_status = -1;
    } else {
      n->last_exit = "exit status " + std::to_string(exit_status);
      n->exit_status = exit_status;
    }
    ::unlink((NodeDir(n->owner->options_.dir, n->entry.name) + "/" + kNodePidFile).c_str());
    if (n->owner->stopping_) {
      DTX_LOG_INFO("{} stopped ({})", n->entry.name, n->last_exit);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(process), &Supervisor::OnProcessClosed);
  }

  static void OnProcessClosed(uv_handle_t* handle) {
    auto* n = static_cast<Node*>(handle->data);
    n->handle_open = false;
    Supervisor* self = n->owner;
    if (self->stopping_) {
      self->MaybeFinish();
      return;
    }
    if (n->exit_status == kSyncFailedExitCode) {
      self->LeaveStopped(n);
      return;
    }
    self->ScheduleRestart(n, n->last_exit);
  }

  static void OnRestartTimer(uv_timer_t* timer) {
    auto* n = static_cast<Node*>(timer->data);
    if (n->owner->stopping_ || n->handle_open) return;
    n->owner->Spawn(n);
  }

  static void OnSignal(uv_signal_t* handle, int signum) {
    auto* self = static_cast<Supervisor*>(handle->data);
    self->Stop(signum);
  }

  void Stop(int signum) {
    if (stopping_) {
      DTX_LOG_INFO("signal {} again while stopping; killing every node now", signum);
      KillAll(SIGKILL);
      return;
    }
    stopping_ = true;
    DTX_LOG_INFO("signal {}: stopping every node (SIGTERM, SIGKILL after {} ms)", signum,
                 options_.stop_grace_ms);
    for (auto& n : nodes_) uv_timer_stop(&n->restart_timer);
    uv_timer_stop(&stopped_timer_);
    KillAll(SIGTERM);
    uv_timer_start(&grace_timer_, &Supervisor::OnGraceTimer,
                   static_cast<uint64_t>(options_.stop_grace_ms), 0);
    MaybeFinish();
  }

  void KillAll(int signum) {
    for (auto& n : nodes_) {
      if (n->running) {
        int rc = uv_process_kill(&n->process, signum);
        if (rc != 0 && rc != UV_ESRCH) {
          DTX_LOG_WARN("kill {} pid={}: {}", n->entry.name, n->process.pid, uv_strerror(rc));
        }
      }
    }
  }

  static void OnGraceTimer(uv_timer_t* timer) {
    auto* self = static_cast<Supervisor*>(timer->data);
    for (auto& n : self->nodes_) {
      if (n->running) {
        DTX_LOG_WARN("{} pid={} still running after {} ms; SIGKILL", n->entry.name, n->process.pid,
                     self->options_.stop_grace_ms);
      }
    }
    self->KillAll(SIGKILL);
  }

  void MaybeFinish() {
    if (finished_) return;
    for (auto& n : nodes_) {
      if (n->running || n->handle_open) return;
    }
    finished_ = true;
    auto close = [](auto* h) { uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr); };
    close(&sigterm_);
    close(&sigint_);
    close(&grace_timer_);
    close(&stopped_timer_);
    for (auto& n : nodes_) close(&n->restart_timer);
  }

  const SupervisorOptions& options_;
  const ClusterConfig& config_;
  uv_loop_t loop_{};
  uv_signal_t sigterm_{};
  uv_signal_t sigint_{};
  uv_timer_t grace_timer_{};
  uv_timer_t stopped_timer_{};  // WatchStopped()
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::string> security_args_;  // --certs-dir DIR/certs or --insecure
  ToolCredentials creds_;
  std::vector<std::string> first_env_;
  std::vector<std::string> restart_env_;
  bool stopping_ = false;
  bool finished_ = false;
};

}  // namespace

Status RunSupervisor(const SupervisorOptions& options, const ClusterConfig& config) {
  DTX_RETURN_IF_ERROR(config.Validate());
  for (const NodeEntry& n : config.nodes()) {
    if (n.peer_address.empty()) {
      return Status::InvalidArgument(n.name +
                                     " has no peer= address in cluster.conf (`dtxctl cluster up` "
                                     "adds one)");
    }
  }
  if (options.participant_bin.empty() || options.coordinator_bin.empty()) {
    return Status::InvalidArgument("supervisor needs the participant and coordinator binaries");
  }
  // A terminal hang-up must not stop the cluster (cluster up detaches anyway).
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  Supervisor supervisor(options, config);
  return supervisor.Run();
}

}  // namespace dtx::tools
