// The cluster file and the local-cluster directory written by `dtxctl cluster
// up` (tools/README.md "Cluster directory", docs/deploy.md "The cluster file"):
//
//   DIR/cluster.conf       one line per node: "NAME ADDRESS admin=ADDRESS
//                          peer=ADDRESS" (e.g. "coordinator-0 127.0.0.1:40101
//                          admin=127.0.0.1:40201 peer=127.0.0.1:40301"): the
//                          client listener, the admin listener and the peer
//                          listener; optionally "metrics=ADDRESS" (the node's
//                          Prometheus endpoint) and, for a cluster spread over
//                          hosts, the settings "tls", "certs" and "data"
//                          (below); '#' starts a comment; blank lines are
//                          ignored
//   DIR/<node>/            that node's NODEDIR (wal/, data/, node.log)
//   DIR/<node>/pid         its current pid, written by the supervisor
//   DIR/supervisor.pid     the supervisor's pid
//   DIR/supervisor.log     the supervisor's log
//   DIR/security.conf      TLS on or off, and where the certificates are
//                          (ClusterSecurity below); a cluster.conf with its
//                          own "tls" line does not need it
//   DIR/certs/             the CA and every certificate (common/certs.h
//                          layout), unless the cluster is --insecure
//
// Grammar of cluster.conf:
//   file    = { line "\n" }
//   line    = [ node | setting ] [ ws ] [ "#" comment ]
//   node    = name ws address { ws listener }
//   listener = ( "admin=" | "peer=" | "metrics=" ) address
//                                (each at most once, any order)
//   setting = "tls" ws ( "on" | "off" )   TLS on every listener, or plaintext
//           | "certs" ws path    the certificate directory on each host
//                                (common/certs.h layout: ca.crt and the
//                                NAME.crt/NAME.key of whoever uses the file)
//           | "data" ws path     where each node keeps its NODEDIR: PATH/NAME
//                                (default: the file's directory)
//                                (each setting at most once; "certs" is
//                                required with "tls on"; relative paths are
//                                relative to the file's directory)
//   name    = ("coordinator-" | "participant-") digits
//   address = host ":" port            (port 1..65535)
// A line without admin= or peer= (a file from before those listeners) is read
// with no such address; `dtxctl cluster up` adds them. No address (client,
// admin, peer or metrics) may appear twice in one file.
// Participants must be numbered 0..N-1 without gaps (the order is the shard
// index); names are unique; there is at least coordinator-0.
//
// This library has no Thrift or libuv dependency: the benchmark, the tests,
// the node binaries (--cluster FILE) and other tools link it to find a
// cluster's nodes.
//
// Thread-safety: ClusterConfig and ClusterFile are values; the free functions
// are thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/address.h"
#include "common/status.h"

namespace dtx::tools {

inline constexpr const char* kClusterConfFile = "cluster.conf";
inline constexpr const char* kSupervisorPidFile = "supervisor.pid";
inline constexpr const char* kSupervisorLogFile = "supervisor.log";
inline constexpr const char* kSupervisorLockFile = "supervisor.lock";
inline constexpr const char* kNodePidFile = "pid";
inline constexpr const char* kNodeLogFile = "node.log";
// The node's stdout and stderr (start-up errors before its logger is set up).
inline constexpr const char* kNodeConsoleFile = "console.log";
// Written by the supervisor when it leaves a node down (it exited with
// kSyncFailedExitCode, common/exit_codes.h): why, on the first line, then the
// node's last error. Removing it (`dtxctl restart NODE`, `dtxctl cluster up`)
// lets the supervisor start the node again.
inline constexpr const char* kNodeStoppedFile = "stopped";
inline constexpr const char* kSecurityConfFile = "security.conf";
inline constexpr const char* kCertsDirName = "certs";
// The certificates `dtxctl cluster up` makes besides one per node: the
// operator's (dtxctl's admin calls) and a client's (dtx-bench, the bindings).
inline constexpr const char* kAdminCertName = "admin";
inline constexpr const char* kClientCertName = "client";
inline constexpr size_t kClusterNodesMax = 256;
inline constexpr size_t kClusterConfBytesMax = 64u << 10;

enum class NodeKind { kCoordinator, kParticipant };

struct NodeEntry {
  std::string name;     // "coordinator-0", "participant-3"
  std::string address;  // "127.0.0.1:40102": the client listener
  // The admin listener (SetFailpoint, GetTrace, ListInDoubt); "" if unknown.
  std::string admin_address;
  // The peer listener (ParticipantPeer / CoordinatorPeer: what the other
  // nodes call); "" if unknown.
  std::string peer_address;
  // The Prometheus /metrics endpoint; "" when the file names none (the node
  // then picks a loopback port and writes it to NODEDIR/metrics.addr).
  std::string metrics_address;
  NodeKind role = NodeKind::kParticipant;
  int index = 0;  // the number after the dash
};

// "host:port" -> parts (common/address.h). InvalidArgument names what is wrong.
using ::dtx::HostPort;
using ::dtx::ParseHostPort;

// "coordinator-N" / "participant-N" -> role and N; anything else is
// InvalidArgument.
Result<NodeEntry> ParseNodeName(std::string_view name);

// DIR/security.conf: whether the cluster's nodes use TLS and where its
// certificates are, so that dtxctl, dtx-bench and the bindings find them.
//
//   file  = { line "\n" }
//   line  = [ key ws value ] [ ws ] [ "#" comment ]
//   key   = "tls" | "certs"
//   tls   = "on" | "off"         ("off": started with --insecure, plaintext)
//   certs = path                 the certificate directory (common/certs.h
//                                layout); relative paths are relative to DIR;
//                                required when tls is on
// Each key at most once; tls is required; unknown keys are an error.
struct ClusterSecurity {
  bool tls = true;
  std::string certs_dir;  // as written in the file; "" when !tls

  // Errors are InvalidArgument naming the line.
  static Result<ClusterSecurity> Parse(std::string_view text);
  // Reads DIR/security.conf. NotFound when there is none (a directory written
  // before clusters had TLS, whose nodes speak plaintext).
  static Result<ClusterSecurity> Load(const std::string& dir);
  std::string Serialize() const;
  // Writes DIR/security.conf atomically. InvalidArgument if certs_dir cannot
  // be written in the grammar (a '#' or newline in it), or tls without certs.
  Status Save(const std::string& dir) const;
  // certs_dir resolved against the cluster directory `dir`.
  std::string CertsDir(const std::string& dir) const;
};

class ClusterConfig {
 public:
  ClusterConfig() = default;

  // Parses cluster.conf text. Errors are InvalidArgument/Corruption naming the
  // line number.
  static Result<ClusterConfig> Parse(std::string_view text);
  // Reads DIR/cluster.conf. NotFound when there is none.
  static Result<ClusterConfig> Load(const std::string& dir);

  // Adds a node; InvalidArgument for a bad name or address or a duplicate
  // (also an address used twice across both kinds of listener).
  Status Add(std::string_view name, std::string_view address, std::string_view admin_address = {},
             std::string_view peer_address = {});
  // Sets the admin address of the node `name` (which must exist).
  Status SetAdminAddress(std::string_view name, std::string_view admin_address);
  // Sets the peer address of the node `name` (which must exist).
  Status SetPeerAddress(std::string_view name, std::string_view peer_address);
  // Sets the metrics address of the node `name` (which must exist).
  Status SetMetricsAddress(std::string_view name, std::string_view metrics_address);
  // Checks the whole-file rules (coordinator-0 present, participants 0..N-1).
  Status Validate() const;

  // The cluster.conf text (coordinators first, then participants by index).
  std::string Serialize() const;
  // Writes DIR/cluster.conf atomically (temp file, fsync, rename).
  Status Save(const std::string& dir) const;

  const std::vector<NodeEntry>& nodes() const { return nodes_; }
  const NodeEntry* Find(std::string_view name) const;
  // coordinator-0, the primary at start; nullptr if absent.
  const NodeEntry* primary() const { return Find("coordinator-0"); }
  // Participants ordered by index (= shard index).
  std::vector<NodeEntry> participants() const;

  // The file's "tls"/"certs" lines; nullopt when it has no "tls" line (a
  // local-cluster directory keeps them in security.conf beside it).
  const std::optional<ClusterSecurity>& security() const { return security_; }
  void set_security(ClusterSecurity security) { security_ = std::move(security); }
  // The file's "data" line as written; "" when it has none.
  const std::string& data_dir() const { return data_dir_; }
  void set_data_dir(std::string data_dir) { data_dir_ = std::move(data_dir); }

 private:
  // InvalidArgument when a node other than `name` already uses `address`.
  Status CheckUnused(std::string_view address, std::string_view name) const;
  // Sets one listener address (admin_address or peer_address) of node `name`:
  // a valid host:port that no other listener of the cluster uses.
  Status SetListenerAddress(std::string_view name, std::string NodeEntry::*listener,
                            std::string_view address);
  std::vector<NodeEntry> nodes_;  // kept sorted: coordinators, then participants
  std::optional<ClusterSecurity> security_;
  std::string data_dir_;
};

// A cluster file read by a node or a tool that runs without the local
// supervisor (`dtx-participant --cluster FILE --name participant-1`,
// `dtxctl --cluster FILE status`, `dtx-bench --cluster-file FILE`;
// docs/deploy.md). Every host gets a copy of the same file. A local
// cluster's DIR/cluster.conf is one too: its security comes from
// DIR/security.conf.
struct ClusterFile {
  std::string path;  // as given
  std::string dir;   // the file's directory: relative paths are relative to it
  ClusterConfig config;
  // The file's "tls"/"certs" lines, else security.conf beside the file.
  ClusterSecurity security;

  // NotFound when there is no such file; InvalidArgument naming the file and
  // line of a malformed one, or when neither the file nor its directory says
  // whether the cluster uses TLS (there is no insecure default).
  static Result<ClusterFile> Load(const std::string& path);
  // The certificate directory, resolved; "" without TLS.
  std::string CertsDir() const;
  // Where node `name` keeps its NODEDIR: DATA/name with a "data" line, else
  // the file's directory/name (the local-cluster layout).
  std::string NodeDir(std::string_view name) const;
};

// How the node `node` of `config` is started: the flags both node binaries
// take that follow from the file (docs/deploy.md "Starting a node"), used by
// the local supervisor (tools/supervisor.cc) and by `--cluster FILE` in the
// node binaries, so that the two cannot drift apart.
struct NodeCommandLine {
  // --name --listen --dir --peer-listen [--admin-listen] [--metrics-listen];
  // a coordinator's --participants and --participant-clients (and, in a
  // pair, --peer and --peer-client); a participant's --coordinator and
  // --coordinators. Not: --role, TLS, logging, failpoints.
  std::vector<std::string> args;
  // A coordinator of the pair coordinator-0/coordinator-1: its role at a
  // first start ("primary" for coordinator-0, "backup" for coordinator-1)
  // and its peer (pointing into `config`). "" and nullptr otherwise.
  std::string role;
  const NodeEntry* peer = nullptr;
};
NodeCommandLine MakeNodeCommandLine(const ClusterConfig& config, const NodeEntry& node,
                                    const std::string& node_dir);
// --certs-dir CERTS or --insecure.
std::vector<std::string> SecurityArgs(const ClusterSecurity& security, const std::string& certs_dir);


// DIR/<node>
std::string NodeDir(const std::string& dir, std::string_view node);
// $DTX_CLUSTER_DIR, or "./dtx-cluster".
std::string DefaultClusterDir();

// Reads a pid file ("<pid>\n"). NotFound if missing; Corruption if garbled.
Result<pid_t> ReadPidFile(const std::string& path);
// Writes "<pid>\n" atomically (temp file + rename).
Status WritePidFile(const std::string& path, pid_t pid);
// Writes `text` to `path` atomically (temp file, fsync, rename).
Status WriteFileAtomic(const std::string& path, std::string_view text);

// True if `pid` is a live process (not a zombie).
bool ProcessAlive(pid_t pid);
// True if `pid` is alive and its command line contains the argument pair
// "--name <node>", i.e. it is that dtx node and not a recycled pid.
bool IsNodeProcess(pid_t pid, std::string_view node);
// utime + stime of `pid` in seconds, from /proc/<pid>/stat. NotFound if gone.
Result<double> ProcessCpuSeconds(pid_t pid);

// Context switches of a process: the sum over its live threads of
// /proc/<pid>/task/<tid>/status voluntary_ctxt_switches (the thread waited:
// a read, a futex, epoll) and nonvoluntary_ctxt_switches (preempted). Threads
// that already exited are not counted. NotFound if the process is gone.
struct ContextSwitches {
  uint64_t voluntary = 0;
  uint64_t involuntary = 0;
};
Result<ContextSwitches> ProcessContextSwitches(pid_t pid);

// The last `lines_max` lines of a file (empty if it cannot be read).
std::string TailFile(const std::string& path, size_t lines_max);

}  // namespace dtx::tools
