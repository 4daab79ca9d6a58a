// Test harness for tests that run real processes: run a command with a
// timeout, a temporary directory, and a local cluster (dtxctl cluster up) that
// is always torn down (dtxctl cluster down, then SIGKILL to any pid left in the
// cluster's pid files).
//
// Paths of the binaries come from the build (compile definitions
// DTX_DTXCTL_PATH, DTX_FAKE_NODE_PATH); see tests/CMakeLists.txt.
//
// Thread-safety: none of this is thread-safe; use it from the test's thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tls.h"
#include "dtx/client.h"
#include "tools/admin_client.h"
#include "tools/cluster_config.h"

namespace dtx::testing {

struct CommandResult {
  int exit_code = -1;            // exit status, or 128+signal, or -1 if it could not run
  bool timed_out = false;        // killed after the timeout
  std::string out;               // stdout
  std::string err;               // stderr
  std::string Describe() const;  // "exit 1; stdout: ...; stderr: ..."
};

// Runs argv[0] (a path) with argv, extra "NAME=value" environment entries
// added to ours, and a timeout after which it is SIGKILLed.
CommandResult RunCommand(const std::vector<std::string>& argv, int timeout_ms,
                         const std::vector<std::string>& extra_env = {});

// A fresh directory under $TMPDIR (or /tmp), removed on destruction unless
// Keep() was called.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "dtx-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  void Keep() { keep_ = true; }

 private:
  std::string path_;
  bool keep_ = false;
};

std::string DtxctlPath();

// Polls `pred` every 20 ms until it holds (true) or `timeout` passes (false,
// after one last try). For states a test waits for, never as a timed
// assertion of how fast they come.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// A long-running child (argv[0] a path), stdin from /dev/null, stdout and
// stderr appended to `output_path`. The destructor SIGKILLs and reaps it if
// it is still running, so it never outlives the test.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  Status Start(const std::vector<std::string>& argv, const std::string& output_path);
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // Sends `signum` (no-op once reaped).
  void Signal(int signum);
  // Waits up to timeout_ms for it to exit; then SIGKILLs and reaps it.
  // Returns the exit status (128+signal if killed by one), -1 if not started.
  int Stop(int timeout_ms);

 private:
  pid_t pid_ = -1;
};

// Certificates for a cluster whose nodes a test starts by hand, the way
// `dtxctl cluster up` makes them: DIR/certs holds a CA (common/certs.h), one
// certificate per name in `nodes` (kind coordinator for "coordinator-N",
// participant otherwise), "admin" and "client"; DIR/security.conf says
// `tls on`, so that tools::ToolCredentials::Load(DIR) and WithClusterTls(DIR)
// find them. Nodes then take --certs-dir DIR/certs.
Status MakeClusterCerts(const std::string& cluster_dir, const std::vector<std::string>& nodes);

// TLS for a test that starts nodes by hand and talks to them itself, or
// stands in for one of their peers (a fake participant or coordinator served
// in the test): the certificates of MakeClusterCerts(cluster_dir, nodes) and,
// made once, a client and a server TlsContext for every name in `nodes`,
// "admin" and "client". Nodes take --certs-dir certs_dir(). The kind of a
// node's certificate follows its name as in MakeClusterCerts.
// Immutable after Make(); the contexts are thread-safe (common/tls.h).
class TestTls {
 public:
  static Result<TestTls> Make(const std::string& cluster_dir,
                              const std::vector<std::string>& nodes);
  // DIR/certs: the --certs-dir of every node.
  const std::string& certs_dir() const { return certs_dir_; }
  // `name`'s certificate on the dialing side: a PeerChannel or a stock
  // connection of `name`. `name` must be one Make() was given (or "admin",
  // "client").
  std::shared_ptr<const TlsContext> ClientContext(const std::string& name) const;
  // `name`'s certificate on the serving side, requiring a client certificate:
  // an RpcServer standing in for node `name`.
  std::shared_ptr<const TlsContext> ServerContext(const std::string& name) const;
  // A stock connection (tools::StockConnection) presenting `as`'s
  // certificate to node `node`, whose certificate must name it.
  tools::ConnectionTls Connect(const std::string& as, const std::string& node) const;
  // What a dialer presenting anything expects of node `node` (its name and kind).
  static TlsExpectedPeer Expect(const std::string& node);
  // `options` with the CA and the "client" certificate (WithClusterTls).
  ClientOptions ForClient(ClientOptions options) const;

 private:
  std::string cluster_dir_;
  std::string certs_dir_;
  std::map<std::string, std::shared_ptr<const TlsContext>> client_;
  std::map<std::string, std::shared_ptr<const TlsContext>> server_;
};

// A loopback TCP port nothing listens on at the moment, from 12000-19999
// (below the ephemeral range, so no outgoing connection takes it later, and
// below `dtxctl cluster up`'s ports), never the same one twice in a process;
// -1 if none could be had. Another process may still take it before the
// caller does.
int FreePort();

// One TestTls for the whole test binary, made at first use in a temporary
// directory that is removed at exit: certificates for coordinator-0,
// coordinator-1 and participant-0 .. participant-3 (and admin, client). For
// suites that start nodes by hand in many tests; making them costs a few
// milliseconds, so a test that wants its own CA calls TestTls::Make.
// Thread-safe (a function-local static).
const TestTls& SharedTestTls();

// `options` with the TLS files of the cluster in `cluster_dir` (its
// security.conf; DIR/certs/ca.crt, client.crt, client.key) when it runs TLS,
// unchanged for an insecure cluster.
ClientOptions WithClusterTls(const std::string& cluster_dir, ClientOptions options);

// The last `lines` lines of a text file ("" if unreadable).
std::string TailOfFile(const std::string& path, size_t lines);

// A cluster started with `dtxctl cluster up` in its own temporary directory.
// The destructor (and Down()) stops it: `dtxctl cluster down`, then SIGKILL to
// the supervisor and every node pid still alive, so nothing outlives the test.
class LocalCluster {
 public:
  struct Options {
    int participants = 3;
    std::string dtxctl;           // the dtxctl that starts and stops it; empty: DtxctlPath()
    std::string bin_dir;          // empty: dtxctl's own search
    std::string participant_bin;  // explicit paths (override bin_dir)
    std::string coordinator_bin;
    std::vector<std::string> env;       // extra environment for cluster up
    std::vector<std::string> up_flags;  // extra flags for cluster up
    int up_timeout_s = 20;
    bool backup = false;  // --backup: coordinator-1 too
  };

  LocalCluster();
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // Runs `dtxctl cluster up`; on failure the status carries its output.
  Status Up(const Options& options);
  void Down();

  // Runs `dtxctl <args...> --dir DIR`.
  CommandResult Dtxctl(std::vector<std::string> args, int timeout_ms = 30000) const;

  const std::string& dir() const { return dir_.path(); }
  const tools::ClusterConfig& config() const { return config_; }
  // What the tools present to this cluster's nodes (plaintext when it was
  // started with --insecure). Valid after a successful Up().
  const tools::ToolCredentials& creds() const { return creds_; }
  // ClientOptions for this cluster: its coordinators (coordinator-0 first)
  // and, with TLS, its client certificate.
  ClientOptions ClientOptionsFor() const;
  // The TLS of a stock connection to the client listener at `address` (the
  // node cluster.conf lists there; plaintext for an insecure cluster).
  tools::ConnectionTls ClientTlsAt(const std::string& address) const;
  std::string coordinator_address() const;
  std::vector<std::string> participant_addresses() const;
  // The node's current pid from its pid file, or -1.
  pid_t NodePid(const std::string& node) const;
  // Tails of supervisor.log and every node's logs, for a failed test.
  std::string LogTails(size_t lines) const;
  // Keeps the directory after the test (for debugging).
  void KeepDir() { dir_.Keep(); }

 private:
  TempDir dir_;
  tools::ClusterConfig config_;
  tools::ToolCredentials creds_;
  std::string dtxctl_ = DtxctlPath();
  bool up_ = false;
};

}  // namespace dtx::testing
