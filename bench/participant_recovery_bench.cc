// dtx-participant-recovery-bench: how fast a participant comes back.
//
//   1. Writes a participant WAL of --records records (PREPARE + COMMIT pairs
//      of realistic size, a few transactions in flight at a time, no
//      checkpoint) with the participant's own record codec.
//   2. Replays it in-process (wal::Log::Open + Core + LevelStore, as the
//      runtime does): records replayed per second; also the WAL scan alone.
//   3. Starts the dtx-participant binary on a copy of it and polls GetStatus
//      until it answers: restart-to-serving time.
//   4. Starts a coordinator and two participants, crashes participant-0 with
//      participant.prepare.after_log=crash-after(n) while clients commit
//      concurrently (so several PREPAREs are durable and undecided), restarts
//      it with default settings and times until ListInDoubt is empty.
//
// Steps 3 and 4 run the nodes with TLS (--certs-dir; a CA and certificates
// made in the work directory by tests/harness.h TestTls) and call them over
// TLS, as a deployment does; --insecure runs them in plaintext, to compare.
//
// Every process it starts is killed by pid on exit. Not a test: prints the
// figures (and "target met"/"target missed") and exits 0 unless something
// failed to run.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <thrift/TOutput.h>
#include <thrift/transport/TTransportException.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "Admin.h"
#include "Coordinator.h"
#include "Participant.h"
#include "common/types.h"
#include "participant/core.h"
#include "participant/level_store.h"
#include "participant/records.h"
#include "tests/harness.h"
#include "tools/admin_client.h"
#include "wal/wal.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using dtx::Status;

namespace {

constexpr double kReplayTargetRecordsPerS = 500000;
constexpr double kInDoubtTargetMs = 1000;
constexpr int kReadyTimeoutMs = 120000;
constexpr int kInDoubtTimeoutMs = 30000;
// Transactions in flight at once in the generated WAL (PREPAREs before the
// oldest one's COMMIT), and how many keys they spread over.
constexpr uint64_t kGenInFlight = 8;
constexpr uint64_t kGenKeys = 200000;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// CPU time (user + system) of this thread / of the whole process, in ms.
double CpuMs(int who) {
  rusage u{};
  ::getrusage(who, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000.0 +
         (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1000.0;
}

using dtx::testing::FreePort;

void KillChildren();

[[noreturn]] void Fail(const std::string& why) {
  std::cerr << "dtx-participant-recovery-bench: " << why << "\n";
  KillChildren();
  std::fflush(stdout);
  ::_exit(1);  // not exit(): client threads may still be running
}

// Processes started here; all killed by pid at exit (normal, Fail(), or
// SIGTERM/SIGINT). A fixed array, so the signal handler can walk it.
constexpr int kChildrenMax = 16;
std::atomic<pid_t> g_children[kChildrenMax];

void AddChild(pid_t pid) {
  for (auto& c : g_children) {
    pid_t zero = 0;
    if (c.compare_exchange_strong(zero, pid)) return;
  }
  ::kill(pid, SIGKILL);
  Fail("too many child processes");
}
void ForgetChild(pid_t pid) {
  for (auto& c : g_children) {
    pid_t p = pid;
    c.compare_exchange_strong(p, 0);
  }
}
void KillChildren() {
  for (auto& c : g_children) {
    pid_t pid = c.exchange(0);
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
}
extern "C" void OnStopSignal(int) {
  for (auto& c : g_children) {
    pid_t pid = c.load();
    if (pid > 0) ::kill(pid, SIGKILL);
  }
  ::_exit(1);
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& failpoints) {
  pid_t pid = ::fork();
  if (pid < 0) Fail("fork failed");
  if (pid == 0) {
    if (failpoints.empty()) {
      ::unsetenv("DTX_FAILPOINTS");
    } else {
      ::setenv("DTX_FAILPOINTS", failpoints.c_str(), 1);
    }
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  AddChild(pid);
  return pid;
}

// Waits for `pid` to exit; its status, or nullopt after timeout_ms.
std::optional<int> WaitExit(pid_t pid, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      ForgetChild(pid);
      return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return std::nullopt;
}

// The certificates of the nodes started here (participant-0, participant-1,
// coordinator-0), the client and the operator; null with --insecure. Set once
// in main() before any node starts.
const dtx::testing::TestTls* g_tls = nullptr;

// The node flags for TLS or plaintext.
std::vector<std::string> SecurityFlags() {
  if (g_tls == nullptr) return {"--insecure"};
  return {"--certs-dir", g_tls->certs_dir()};
}

// `NAME=HOST:PORT`: how a node names a peer (the name is what its
// certificate must carry with TLS; accepted as well in plaintext).
std::string Peer(const std::string& name, int port) {
  return name + "=127.0.0.1:" + std::to_string(port);
}

// A stock client connection to node `node` on `port`, presenting `as`'s
// certificate with TLS; throws TTransportException if it cannot be opened.
template <typename C>
class Conn {
 public:
  Conn(int port, int recv_timeout_ms, const std::string& node,
       const std::string& as = dtx::tools::kClientCertName) {
    dtx::tools::ConnectionTls tls;
    if (g_tls != nullptr) tls = g_tls->Connect(as, node);
    auto c = dtx::tools::StockConnection<C>::Open(
        "127.0.0.1:" + std::to_string(port),
        {.connect_timeout_ms = 200, .recv_timeout_ms = recv_timeout_ms}, tls);
    if (!c.ok()) throw apache::thrift::transport::TTransportException(c.status().ToString());
    conn_ = std::move(*c);
  }
  C* operator->() { return &conn_->client(); }

 private:
  std::unique_ptr<dtx::tools::StockConnection<C>> conn_;
};
using PConn = Conn<dtx::rpc::ParticipantClient>;
using CConn = Conn<dtx::rpc::CoordinatorClient>;
// A node's admin listener, as the operator.
struct AConn : Conn<dtx::rpc::AdminClient> {
  AConn(int port, int recv_timeout_ms, const std::string& node)
      : Conn(port, recv_timeout_ms, node, dtx::tools::kAdminCertName) {}
};

// Polls GetStatus on node `node` at `port` until it answers; false on timeout
// or if `pid` exited.
template <typename C>
bool WaitReady(int port, const std::string& node, pid_t pid, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    try {
      Conn<C> c(port, 2000, node);
      dtx::rpc::NodeStatus st;
      c->GetStatus(st);
      return true;
    } catch (const std::exception&) {
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      ForgetChild(pid);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  return false;
}

std::string Key(uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "user%012llu", static_cast<unsigned long long>(i));
  return buf;
}

// --- 1. the WAL --------------------------------------------------------------

// PREPARE{2 writes of ~100-byte values, 1 read key} + COMMIT per transaction,
// kGenInFlight transactions open at a time (their keys are distinct, so
// replay takes every lock without conflict), epoch 1 from the start.
uint64_t WriteWal(const std::string& dir, uint64_t records) {
  using namespace dtx::participant;
  dtx::wal::Options o;
  std::error_code ec;
  fs::create_directories(fs::path(dir).parent_path(), ec);
  auto log = dtx::wal::Log::Open(o, dir, nullptr);
  if (!log.ok()) Fail("opening " + dir + ": " + log.status().ToString());
  auto append = [&](RecordType t, const std::string& payload) {
    auto lsn = (*log)->Append(static_cast<uint8_t>(t), payload);
    if (!lsn.ok()) Fail("append: " + lsn.status().ToString());
  };
  append(RecordType::kEpoch, EncodeEpoch({1}));
  uint64_t n = 1;
  const std::string value(100, 'v');
  dtx::Version version = 0;
  uint64_t tx = 0;
  uint64_t committed = 0;
  while (n < records) {
    if (tx - committed < kGenInFlight && n + 1 < records) {
      PrepareRecord p;
      p.txid = {0xbe7c4, tx};
      p.epoch = 1;
      p.coordinator = "127.0.0.1:40101";
      uint64_t base = (tx * 3) % kGenKeys;
      p.writes.push_back({Key(base), value + std::to_string(tx)});
      p.writes.push_back({Key(base + 1), value});
      p.read_keys.push_back(Key(base + 2));
      append(RecordType::kPrepare, EncodePrepare(p));
      ++tx;
    } else {
      CommitRecord c;
      c.txid = {0xbe7c4, committed};
      c.version = ++version;
      append(RecordType::kCommit, EncodeCommit(c));
      ++committed;
    }
    ++n;
  }
  Status s = (*log)->WaitDurable((*log)->last_lsn());
  if (!s.ok()) Fail("sync: " + s.ToString());
  return n;
}

void CopyDir(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::remove_all(to, ec);
  fs::create_directories(fs::path(to).parent_path(), ec);
  fs::copy(from, to, fs::copy_options::recursive, ec);
  if (ec) Fail("copy " + from + " -> " + to + ": " + ec.message());
}

// --- 2. in-process replay ------------------------------------------------------

struct ReplayResult {
  uint64_t records = 0;
  double ms = 0;
  double end_replay_ms = 0;   // writing the last replay batch to LevelDB
  double thread_cpu_ms = 0;   // CPU of the replaying thread
  double process_cpu_ms = 0;  // ... and of the process (LevelDB's compaction thread too)
};

ReplayResult ReplayInProcess(const std::string& node_dir, bool scan_only) {
  using namespace dtx::participant;
  std::error_code ec;
  fs::create_directories(fs::path(node_dir) / "data", ec);
  auto store = LevelStore::Open((fs::path(node_dir) / "data").string());
  if (!store.ok()) Fail(store.status().ToString());
  Core core({}, store->get());
  ReplayResult r;
  const double thread0 = CpuMs(RUSAGE_THREAD), process0 = CpuMs(RUSAGE_SELF);
  auto t0 = Clock::now();
  (*store)->BeginReplay();
  dtx::wal::ReplayFn fn = [&](dtx::wal::Lsn lsn, uint8_t type, std::string_view payload) {
    ++r.records;
    if (scan_only) return Status::OK();
    return core.Replay(lsn, type, payload);
  };
  auto log = dtx::wal::Log::Open({}, (fs::path(node_dir) / "wal").string(), fn);
  if (!log.ok()) Fail("replay: " + log.status().ToString());
  auto t_end = Clock::now();
  Status s = (*store)->EndReplay();
  if (!s.ok()) Fail("replay: " + s.ToString());
  r.end_replay_ms = Ms(Clock::now() - t_end);
  core.FinishRecovery(0, (*log)->last_lsn());
  r.ms = Ms(Clock::now() - t0);
  r.thread_cpu_ms = CpuMs(RUSAGE_THREAD) - thread0;
  r.process_cpu_ms = CpuMs(RUSAGE_SELF) - process0;
  return r;
}

// --- 3. the binary -------------------------------------------------------------

struct StartResult {
  double ready_ms = 0;
  double cpu_ms = 0;  // the node's CPU time (all threads) until it answered
  int64_t replayed = 0;
};

// utime + stime of `pid` from /proc, in ms; -1 if unreadable.
double ProcessCpuMs(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::vector<std::string> fields;
  std::string f;
  for (size_t i = close + 2; i <= stat.size(); ++i) {
    if (i == stat.size() || stat[i] == ' ') {
      fields.push_back(f);
      f.clear();
    } else {
      f.push_back(stat[i]);
    }
  }
  // After the command: field 3 is the state, so utime (14) and stime (15) are at 11 and 12.
  if (fields.size() < 13) return -1;
  const double tick_ms = 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
  return (std::atof(fields[11].c_str()) + std::atof(fields[12].c_str())) * tick_ms;
}

StartResult StartBinary(const std::string& bin, const std::string& node_dir) {
  int port = FreePort();
  int coord = FreePort();
  auto t0 = Clock::now();
  std::vector<std::string> args = {bin,
                                   "--name",
                                   "participant-0",
                                   "--listen",
                                   "127.0.0.1:" + std::to_string(port),
                                   "--dir",
                                   node_dir,
                                   "--coordinator",
                                   "127.0.0.1:" + std::to_string(coord),
                                   "--coordinators",
                                   Peer("coordinator-0", coord)};
  for (const std::string& f : SecurityFlags()) args.push_back(f);
  pid_t pid = Spawn(args, "");
  if (!WaitReady<dtx::rpc::ParticipantClient>(port, "participant-0", pid, kReadyTimeoutMs))
    Fail("dtx-participant did not come up");
  StartResult r;
  r.ready_ms = Ms(Clock::now() - t0);
  r.cpu_ms = ProcessCpuMs(pid);
  PConn c(port, 5000, "participant-0");
  dtx::rpc::NodeStatus st;
  c->GetStatus(st);
  if (st.counters.count("replayed_records")) r.replayed = st.counters.at("replayed_records");
  ::kill(pid, SIGTERM);
  if (!WaitExit(pid, 30000)) Fail("dtx-participant did not stop on SIGTERM");
  return r;
}

// --- 4. in-doubt resolution ------------------------------------------------------

struct InDoubtResult {
  int64_t in_doubt_after_replay = -1;  // from the recovery log line
  double ready_ms = 0;
  double zero_ms = 0;
  int committed = 0, aborted = 0, failed = 0;
};

int64_t RecoveredInDoubt(const std::string& log_file) {
  std::ifstream in(log_file);
  std::string line;
  int64_t last = -1;
  while (std::getline(in, line)) {
    auto p = line.find("recovered:");
    if (p == std::string::npos) continue;
    auto q = line.find("in_doubt=", p);
    if (q != std::string::npos) last = std::atoll(line.c_str() + q + 9);
  }
  return last;
}

InDoubtResult InDoubt(const std::string& pbin, const std::string& cbin, const std::string& dir,
                      int clients) {
  const int cport = FreePort(), p0 = FreePort(), p1 = FreePort();
  // participant-0's admin listener (failpoints, ListInDoubt), kept across its restart.
  const int admin0 = FreePort();
  const std::string caddr = "127.0.0.1:" + std::to_string(cport);
  // The peer listeners (--peer-listen): where the nodes call each other.
  const int cpeer = FreePort(), pp0 = FreePort(), pp1 = FreePort();
  const std::string cpeer_addr = "127.0.0.1:" + std::to_string(cpeer);
  auto participant = [&](int i, int port, const std::string& fps) {
    std::vector<std::string> args = {pbin,
                                     "--name",
                                     "participant-" + std::to_string(i),
                                     "--listen",
                                     "127.0.0.1:" + std::to_string(port),
                                     "--dir",
                                     dir + "/participant-" + std::to_string(i),
                                     "--peer-listen",
                                     "127.0.0.1:" + std::to_string(i == 0 ? pp0 : pp1),
                                     "--coordinator",
                                     cpeer_addr,
                                     "--coordinators",
                                     Peer("coordinator-0", cpeer),
                                     "--enable-failpoints"};
    for (const std::string& f : SecurityFlags()) args.push_back(f);
    if (i == 0) args.insert(args.end(), {"--admin-listen", "127.0.0.1:" + std::to_string(admin0)});
    return Spawn(args, fps);
  };
  pid_t pid0 = participant(0, p0, "");
  pid_t pid1 = participant(1, p1, "");
  std::vector<std::string> cargs = {
      cbin,
      "--name",
      "coordinator-0",
      "--listen",
      caddr,
      "--peer-listen",
      cpeer_addr,
      "--dir",
      dir + "/coordinator-0",
      "--participants",
      Peer("participant-0", pp0) + "," + Peer("participant-1", pp1),
      "--participant-clients",
      "127.0.0.1:" + std::to_string(p0) + ",127.0.0.1:" + std::to_string(p1)};
  for (const std::string& f : SecurityFlags()) cargs.push_back(f);
  pid_t cpid = Spawn(cargs, "");
  if (!WaitReady<dtx::rpc::ParticipantClient>(p0, "participant-0", pid0, kReadyTimeoutMs) ||
      !WaitReady<dtx::rpc::ParticipantClient>(p1, "participant-1", pid1, kReadyTimeoutMs) ||
      !WaitReady<dtx::rpc::CoordinatorClient>(cport, "coordinator-0", cpid, kReadyTimeoutMs)) {
    Fail("cluster did not come up");
  }
  int64_t map_version = 0;
  {
    CConn c(cport, 5000, "coordinator-0");
    dtx::rpc::ShardMap m;
    c->GetShardMap(m);
    map_version = m.version;
  }
  // Keys: one per shard per client.
  auto key_on = [](int shard, int i) {
    for (int n = 0;; ++n) {
      std::string k = "acct-" + std::to_string(i) + "-" + std::to_string(n);
      if (static_cast<int>(dtx::ShardHash(k) % 2) == shard) return k;
    }
  };
  auto request = [&](int64_t lo, int i) {
    dtx::rpc::CommitRequest req;
    req.txid.hi = 0x1dbe;
    req.txid.lo = lo;
    req.shard_map_version = map_version;
    for (int shard = 0; shard < 2; ++shard) {
      dtx::rpc::WriteItem w;
      w.key = key_on(shard, i);
      w.__set_value("balance-100");
      req.writes.push_back(w);
    }
    return req;
  };
  // Until the coordinator's channels to both participants are up, commits
  // abort with PARTICIPANT_UNAVAILABLE: warm up first.
  {
    auto deadline = Clock::now() + std::chrono::milliseconds(kReadyTimeoutMs);
    CConn c(cport, 10000, "coordinator-0");
    for (int64_t lo = 1000000;; ++lo) {
      dtx::rpc::CommitResult res;
      c->Commit(res, request(lo, 1000));
      if (res.outcome == dtx::rpc::Outcome::COMMITTED) break;
      if (Clock::now() > deadline) Fail("warm-up commit never committed");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // The next clients-1 PREPAREs pass (and vote YES), the one after crashes
  // the node once it is durable: several undecided PREPAREs are in its log.
  {
    AConn c(admin0, 5000, "participant-0");
    c->SetFailpoint("participant.prepare.after_log",
                    "crash-after(" + std::to_string(clients - 1) + ")");
  }
  InDoubtResult r;
  std::atomic<int> committed{0}, aborted{0}, failed{0};
  std::vector<int> outcome(clients, 0);  // 1 committed, 2 aborted
  std::atomic<int> connected{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      try {
        CConn c(cport, 20000, "coordinator-0");
        dtx::rpc::CommitRequest req = request(i + 1, i);
        ++connected;
        while (!go.load()) std::this_thread::yield();
        dtx::rpc::CommitResult res;
        c->Commit(res, req);
        (res.outcome == dtx::rpc::Outcome::COMMITTED ? committed : aborted)++;
        outcome[i] = res.outcome == dtx::rpc::Outcome::COMMITTED ? 1 : 2;
      } catch (const std::exception&) {
        ++failed;
      }
    });
  }
  while (connected.load() + failed.load() < clients)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  go = true;
  for (auto& t : threads) t.join();
  r.committed = committed;
  r.aborted = aborted;
  r.failed = failed;
  auto st = WaitExit(pid0, 10000);
  if (!st.has_value()) Fail("participant-0 did not crash at the failpoint");

  auto t0 = Clock::now();
  pid0 = participant(0, p0, "");
  if (!WaitReady<dtx::rpc::ParticipantClient>(p0, "participant-0", pid0, kReadyTimeoutMs))
    Fail("participant-0 did not restart");
  r.ready_ms = Ms(Clock::now() - t0);
  auto deadline = Clock::now() + std::chrono::milliseconds(kInDoubtTimeoutMs);
  AConn c(admin0, 5000, "participant-0");
  for (;;) {
    std::vector<dtx::rpc::InDoubtTx> txs;
    c->ListInDoubt(txs);
    if (txs.empty()) break;
    if (Clock::now() > deadline)
      Fail("in-doubt transactions not resolved in " + std::to_string(kInDoubtTimeoutMs) + " ms");
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  r.zero_ms = Ms(Clock::now() - t0);
  // Every transaction the client was told committed has its write at
  // participant-0 now; the others do not.
  PConn reader(p0, 5000, "participant-0");
  for (int i = 0; i < clients; ++i) {
    if (outcome[i] == 0) continue;
    dtx::rpc::ReadResult rr;
    reader->Read(rr, key_on(0, i));
    if (rr.found != (outcome[i] == 1)) {
      Fail("after recovery, key of client " + std::to_string(i) + " is " +
           (rr.found ? "" : "not ") + "at participant-0 but its commit was " +
           (outcome[i] == 1 ? "COMMITTED" : "ABORTED"));
    }
  }
  r.in_doubt_after_replay = RecoveredInDoubt(dir + "/participant-0/node.log");
  KillChildren();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t records = 1000000;
  std::string dir, pbin = DTX_PARTICIPANT_BIN, cbin = DTX_COORDINATOR_BIN;
  int clients = 16;
  bool keep = false;
  bool replay_only = false;
  bool insecure = false;
  po::options_description desc("Options");
  desc.add_options()("help,h", "print this help")("records",
                                                  po::value(&records)->default_value(records),
                                                  "WAL records since the last checkpoint")(
      "dir", po::value(&dir), "work directory (default: a new one under /tmp, removed at the end)")(
      "participant-bin", po::value(&pbin)->default_value(pbin), "dtx-participant binary")(
      "coordinator-bin", po::value(&cbin)->default_value(cbin), "dtx-coordinator binary")(
      "clients", po::value(&clients)->default_value(clients),
      "concurrent commits in the in-doubt run (>= 2)")("keep", po::bool_switch(&keep),
                                                       "keep the work directory")(
      "replay-only", po::bool_switch(&replay_only),
      "only generate and replay in-process (for profiling)")(
      "insecure", po::bool_switch(&insecure),
      "run the nodes in plaintext (--insecure) instead of TLS, to compare");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "dtx-participant-recovery-bench: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (records < 2 || clients < 2) {
    std::cerr << "dtx-participant-recovery-bench: --records and --clients must be at least 2\n";
    return 2;
  }
  std::atexit(KillChildren);
  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGINT, OnStopSignal);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  apache::thrift::GlobalOutput.setOutputFunction(
      [](const char*) {});  // connection-refused noise while polling
  const bool made_dir = dir.empty();
  if (made_dir) {
    char tmpl[] = "/tmp/dtx-recovery-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) Fail("mkdtemp failed");
    dir = tmpl;
  }
  fs::create_directories(dir);
  dtx::testing::TestTls tls;
  if (!insecure) {
    auto made = dtx::testing::TestTls::Make(dir + "/tls",
                                            {"participant-0", "participant-1", "coordinator-0"});
    if (!made.ok()) Fail("making the certificates: " + made.status().ToString());
    tls = std::move(*made);
    g_tls = &tls;
  }
  std::printf("nodes run with %s\n", insecure ? "--insecure (plaintext)" : "TLS (--certs-dir)");

  auto t0 = Clock::now();
  uint64_t written = WriteWal(dir + "/gen/wal", records);
  std::printf(
      "generated WAL: %llu records (PREPARE+COMMIT pairs, %llu in flight) in %.0f ms, %.1f MB\n",
      static_cast<unsigned long long>(written), static_cast<unsigned long long>(kGenInFlight),
      Ms(Clock::now() - t0), [&] {
        uint64_t b = 0;
        for (auto& e : fs::directory_iterator(dir + "/gen/wal")) {
          if (e.is_regular_file()) b += e.file_size();
        }
        return static_cast<double>(b) / (1 << 20);
      }());

  CopyDir(dir + "/gen/wal", dir + "/scan/wal");
  ReplayResult scan = ReplayInProcess(dir + "/scan", /*scan_only=*/true);
  std::printf("WAL scan only (read + CRC, no core):  %llu records in %.0f ms = %.0f records/s\n",
              static_cast<unsigned long long>(scan.records), scan.ms,
              scan.records / (scan.ms / 1000));

  CopyDir(dir + "/gen/wal", dir + "/replay/wal");
  ReplayResult rep = ReplayInProcess(dir + "/replay", /*scan_only=*/false);
  double rate = rep.records / (rep.ms / 1000);
  std::printf(
      "in-process replay (WAL + core + LevelDB): %llu records in %.0f ms (%.0f ms of it writing "
      "LevelDB) = "
      "%.0f records/s (target >= %.0f: %s)\n",
      static_cast<unsigned long long>(rep.records), rep.ms, rep.end_replay_ms, rate,
      kReplayTargetRecordsPerS, rate >= kReplayTargetRecordsPerS ? "met" : "MISSED");
  std::printf(
      "  CPU: replaying thread %.0f ms (%.0f records per CPU-second), whole process %.0f ms; load "
      "average now %s",
      rep.thread_cpu_ms, rep.records / (rep.thread_cpu_ms / 1000), rep.process_cpu_ms, [] {
        static char buf[64] = "?\n";
        if (FILE* f = std::fopen("/proc/loadavg", "r")) {
          if (std::fgets(buf, sizeof(buf), f) == nullptr) std::snprintf(buf, sizeof(buf), "?\n");
          std::fclose(f);
        }
        return buf;
      }());

  if (replay_only) {
    KillChildren();
    if (made_dir && !keep) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
    return 0;
  }

  CopyDir(dir + "/gen/wal", dir + "/binary/wal");
  StartResult b = StartBinary(pbin, dir + "/binary");
  std::printf(
      "dtx-participant restart-to-serving on that WAL: %.0f ms (%lld records replayed, %.0f "
      "records/s end to "
      "end; the node used %.0f ms of CPU until then)\n",
      b.ready_ms, static_cast<long long>(b.replayed), b.replayed / (b.ready_ms / 1000), b.cpu_ms);
  StartResult again = StartBinary(pbin, dir + "/binary");
  std::printf(
      "  ... and again after its clean shutdown (checkpoint): %.0f ms (%lld records read, those "
      "below the checkpoint skipped)\n",
      again.ready_ms, static_cast<long long>(again.replayed));

  InDoubtResult d = InDoubt(pbin, cbin, dir + "/cluster", clients);
  std::printf(
      "in-doubt resolution: %d concurrent commits (%d committed, %d aborted, %d failed) while "
      "participant-0 "
      "crashed after a PREPARE; %lld in doubt after replay; restart-to-serving %.0f ms, restart to "
      "zero "
      "in-doubt %.0f ms (target < %.0f: %s)\n",
      clients, d.committed, d.aborted, d.failed, static_cast<long long>(d.in_doubt_after_replay),
      d.ready_ms, d.zero_ms, kInDoubtTargetMs, d.zero_ms < kInDoubtTargetMs ? "met" : "MISSED");

  KillChildren();
  if (made_dir && !keep) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  } else {
    std::printf("work directory: %s\n", dir.c_str());
  }
  return 0;
}
