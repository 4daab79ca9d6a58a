// Failover under the bank workload with real processes: three dtx-participant
// binaries, a primary and a backup dtx-coordinator, and client threads using
// the C++ binding (which knows both coordinators). The primary is killed
// (SIGKILL, or `crash` armed at one coordinator failpoint); the backup takes
// over. Checked afterwards, once no participant has anything in doubt:
//   - the invariant: the balances still sum to the initial total (a transfer
//     applied on one participant and not the other breaks it);
//   - every transfer the client saw COMMITTED is visible (its marker key
//     exists) and no transfer the client saw ABORTED is (its marker is absent);
//   - clients committed transfers against the new primary after the kill.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "Admin.h"
#include "Coordinator.h"
#include "Participant.h"
#include "common/address.h"
#include "common/failure_detector.h"
#include "common/log.h"
#include "dtx/client.h"
#include "tests/harness.h"
#include "tools/admin_client.h"

#ifndef DTX_COORDINATOR_BIN
#error "DTX_COORDINATOR_BIN must name the dtx-coordinator binary"
#endif
#ifndef DTX_PARTICIPANT_BIN
#error "DTX_PARTICIPANT_BIN must name the dtx-participant binary"
#endif

namespace dtx {
namespace {

using testing::FreePort;

using Clock = std::chrono::steady_clock;

// The cluster CA and every certificate, made once per test binary; the nodes
// run with --certs-dir, the test talks to them over TLS.
const testing::TestTls& Tls() { return testing::SharedTestTls(); }

std::string Addr(int port) { return "127.0.0.1:" + std::to_string(port); }

// The peer listener's port of the node whose client listener is on `port`:
// picked once per client port (--peer-listen).
int PeerPort(int port) {
  static std::mutex mu;
  static std::map<int, int> ports;
  std::lock_guard<std::mutex> lock(mu);
  auto it = ports.find(port);
  if (it == ports.end()) it = ports.emplace(port, FreePort()).first;
  return it->second;
}
std::string PeerAddr(int port) { return Addr(PeerPort(port)); }

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/dtx-failover-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    if (std::getenv("DTX_TEST_KEEP_DIR") != nullptr) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A child process, SIGKILLed (after SIGCONT) and reaped on destruction.
class Process {
 public:
  Process(const std::string& bin, std::vector<std::string> args) {
    pid_ = ::fork();
    if (pid_ == 0) {
      // Dies with the test: a test that aborts (a failed check in a thread)
      // must not leave nodes running.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      std::vector<char*> argv;
      std::string b = bin;
      argv.push_back(b.data());
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(b.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~Process() { Kill(); }
  void Kill() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGCONT);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      exited_ = true;
    }
  }
  bool Exited() {
    if (exited_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) exited_ = true;
    return exited_;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
};

// The admin listener's port of the node in `node_dir` (NODEDIR/admin.addr,
// written before the node serves); 0 if unreadable.
int AdminPort(const std::string& node_dir) {
  std::ifstream in(node_dir + "/admin.addr");
  std::string line;
  std::getline(in, line);
  auto hp = ParseHostPort(line);
  return hp.ok() ? hp->port : 0;
}

// A stock synchronous client over TLS presenting `as`'s certificate to any
// node of kind `kind` (tools::StockConnection).
template <typename ClientT>
class Sync {
 public:
  Sync(int port, PrincipalKind kind, const std::string& as = tools::kClientCertName)
      : port_(port),
        tls_{.context = Tls().ClientContext(as), .expected = {.kind = kind, .name = ""}} {}
  bool Open() {
    auto c = tools::StockConnection<ClientT>::Open(
        Addr(port_), {.connect_timeout_ms = 500, .recv_timeout_ms = 2000}, tls_);
    if (!c.ok()) return false;
    conn_ = std::move(*c);
    return true;
  }
  ClientT* operator->() { return &conn_->client(); }

 private:
  int port_;
  tools::ConnectionTls tls_;
  std::unique_ptr<tools::StockConnection<ClientT>> conn_;
};

std::optional<rpc::NodeStatus> CoordinatorStatus(int port) {
  Sync<rpc::CoordinatorClient> c(port, PrincipalKind::kCoordinator);
  if (!c.Open()) return std::nullopt;
  try {
    rpc::NodeStatus st;
    c->GetStatus(st);
    return st;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::optional<rpc::NodeStatus> ParticipantStatus(int port) {
  Sync<rpc::ParticipantClient> c(port, PrincipalKind::kParticipant);
  if (!c.Open()) return std::nullopt;
  try {
    rpc::NodeStatus st;
    c->GetStatus(st);
    return st;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

constexpr int kAccounts = 16;
constexpr int kInitialBalance = 100;
constexpr int kParticipants = 3;

std::string Account(int i) { return "acct-" + std::to_string(i); }

struct Attempt {
  std::string marker;
  enum { kCommitted, kAborted, kUnknown } outcome;
  Clock::time_point at;
};

class Cluster {
 public:
  explicit Cluster(const std::string& dir) : dir_(dir) {
    for (int i = 0; i < kParticipants; ++i) pports_.push_back(FreePort());
    c0_ = FreePort();
    c1_ = FreePort();
    std::string plist, peer_plist;
    for (int p : pports_) plist += (plist.empty() ? "" : ",") + Addr(p);
    for (size_t i = 0; i < pports_.size(); ++i) {
      peer_plist += (peer_plist.empty() ? "" : ",") + std::string("participant-") +
                    std::to_string(i) + "=" + PeerAddr(pports_[i]);
    }
    plist_ = plist;
    peer_plist_ = peer_plist;
    for (int i = 0; i < kParticipants; ++i) participants_.push_back(StartParticipant(i));
    primary_ = StartCoordinator(0, "primary", {});
    backup_ = StartCoordinator(1, "backup", {});
  }

  std::unique_ptr<Process> StartParticipant(int i) {
    return std::make_unique<Process>(
        DTX_PARTICIPANT_BIN,
        std::vector<std::string>{
            "--name", "participant-" + std::to_string(i), "--listen", Addr(pports_[i]),
            "--peer-listen", PeerAddr(pports_[i]), "--dir", dir_ + "/p" + std::to_string(i),
            "--coordinator", PeerAddr(c0_), "--coordinators",
            "coordinator-0=" + PeerAddr(c0_) + ",coordinator-1=" + PeerAddr(c1_),
            "--enable-failpoints", "--certs-dir", Tls().certs_dir()});
  }

  std::unique_ptr<Process> StartCoordinator(int which, const std::string& role,
                                            std::vector<std::string> extra) {
    int port = which == 0 ? c0_ : c1_;
    int peer = which == 0 ? c1_ : c0_;
    std::vector<std::string> args = {
        "--name",
        "coordinator-" + std::to_string(which),
        "--listen",
        Addr(port),
        "--dir",
        dir_ + "/c" + std::to_string(which),
        "--peer-listen",
        PeerAddr(port),
        "--participants",
        peer_plist_,
        "--participant-clients",
        plist_,
        "--role",
        role,
        "--peer",
        "coordinator-" + std::to_string(1 - which) + "=" + PeerAddr(peer),
        "--peer-client",
        Addr(peer),
        "--enable-failpoints",
        "--certs-dir",
        Tls().certs_dir()};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(DTX_COORDINATOR_BIN, args);
  }

  bool WaitServing() {
    return WaitFor(
        [&] {
          for (int p : pports_) {
            if (!ParticipantStatus(p)) return false;
          }
          auto st = CoordinatorStatus(c0_);
          return st && st->role == rpc::NodeRole::PRIMARY && st->counters["backup_in_sync"] == 1;
        },
        std::chrono::seconds(20));
  }

  bool WaitNothingInDoubt() {
    return WaitFor(
        [&] {
          for (int p : pports_) {
            auto st = ParticipantStatus(p);
            if (!st || st->in_flight != 0 || st->in_doubt != 0) return false;
          }
          return true;
        },
        std::chrono::seconds(20));
  }

  int c0_ = 0, c1_ = 0;
  std::vector<int> pports_;
  std::string plist_;       // the participants' client listeners
  std::string peer_plist_;  // their peer listeners
  std::string dir_;
  std::vector<std::unique_ptr<Process>> participants_;
  std::unique_ptr<Process> primary_;
  std::unique_ptr<Process> backup_;
};

// Runs the bank workload; `fault` is called once, `fault_after` into it.
// Returns the attempts seen by clients.
void RunBank(Cluster& cl, const std::function<void()>& fault, std::chrono::milliseconds fault_after,
             std::chrono::milliseconds duration, int64_t* failover_ms, uint64_t* commits_after,
             int threads_n = 4) {
  if (std::getenv("DTX_TEST_CLIENT_LOG") != nullptr) {
    log::Options lo;
    lo.node = "client";
    lo.file = cl.dir_ + "/client.log";
    lo.level = "debug";
    (void)log::Init(lo);
  }
  ClientOptions o = Tls().ForClient({});
  o.coordinators = {Addr(cl.c0_), Addr(cl.c1_)};
  o.commit_timeout_ms = 3000;
  o.request_timeout_ms = 2000;
  auto client = Client::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  // Load the accounts.
  Status s = (*client)->Run([](Transaction& tx) {
    for (int i = 0; i < kAccounts; ++i)
      DTX_RETURN_IF_ERROR(tx.Put(Account(i), std::to_string(kInitialBalance)));
    return Status::OK();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();

  const int kThreads = threads_n;
  std::mutex mu;
  std::vector<Attempt> attempts;
  std::atomic<bool> faulted{false};
  std::atomic<int64_t> fault_at_ns{0};
  std::atomic<int64_t> first_commit_after_ns{-1};
  std::atomic<uint64_t> after{0};
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      for (int i = 0; Clock::now() - start < duration; ++i) {
        int a = static_cast<int>(rng() % kAccounts), b = static_cast<int>(rng() % kAccounts);
        if (a == b) continue;
        int amount = 1 + static_cast<int>(rng() % 5);
        auto tx = (*client)->Begin();
        if (!tx.ok()) continue;
        auto va = tx->Get(Account(a));
        auto vb = tx->Get(Account(b));
        if (!va.ok() || !vb.ok() || !va->has_value() || !vb->has_value()) {
          (void)tx->Abort();
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
          continue;
        }
        std::string marker = "marker-" + std::to_string(t) + "-" + std::to_string(i);
        (void)tx->Put(Account(a), std::to_string(std::stoi(**va) - amount));
        (void)tx->Put(Account(b), std::to_string(std::stoi(**vb) + amount));
        (void)tx->Put(marker, "1");
        Status c = tx->Commit();
        Attempt at{marker, Attempt::kAborted, Clock::now()};
        if (c.ok()) {
          at.outcome = Attempt::kCommitted;
          if (faulted.load()) {
            ++after;
            int64_t expected = -1;
            first_commit_after_ns.compare_exchange_strong(
                expected,
                std::chrono::duration_cast<std::chrono::nanoseconds>(at.at.time_since_epoch())
                    .count());
          }
        } else if (tx->outcome_unknown()) {
          at.outcome = Attempt::kUnknown;
        } else if (!c.IsAborted()) {
          at.outcome = Attempt::kAborted;  // nothing was committed (not sent)
        }
        std::lock_guard<std::mutex> l(mu);
        attempts.push_back(at);
      }
    });
  }
  std::this_thread::sleep_for(fault_after);
  fault_at_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  fault();
  faulted = true;
  for (auto& th : threads) th.join();
  if (first_commit_after_ns >= 0) {
    *failover_ms = (first_commit_after_ns - fault_at_ns) / 1000000;
  } else {
    *failover_ms = -1;
  }
  *commits_after = after;

  ASSERT_TRUE(cl.WaitNothingInDoubt()) << "participants still hold transactions";
  // The invariant and visibility, read through a fresh transaction.
  auto check = (*client)->Begin();
  ASSERT_TRUE(check.ok());
  int64_t sum = 0;
  for (int i = 0; i < kAccounts; ++i) {
    auto v = check->Get(Account(i));
    ASSERT_TRUE(v.ok() && v->has_value()) << Account(i) << " " << v.status().ToString();
    sum += std::stoi(**v);
  }
  EXPECT_EQ(sum, static_cast<int64_t>(kAccounts) * kInitialBalance) << "invariant broken";
  (void)check->Abort();
  size_t committed = 0, aborted = 0, unknown = 0, reads = 0;
  for (const Attempt& at : attempts) {
    if (at.outcome == Attempt::kUnknown) {
      ++unknown;
      continue;
    }
    if (reads++ % 500 == 0) {  // a transaction reads at most kTxKeysMax keys
      (void)check->Abort();
      check = (*client)->Begin();
      ASSERT_TRUE(check.ok());
    }
    auto v = check->Get(at.marker);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    if (at.outcome == Attempt::kCommitted) {
      ++committed;
      EXPECT_TRUE(v->has_value()) << at.marker << " was acknowledged COMMITTED but is not visible";
    } else {
      ++aborted;
      EXPECT_FALSE(v->has_value()) << at.marker << " was reported aborted but is visible";
    }
  }
  (void)check->Abort();
  std::printf("bank: %zu committed, %zu aborted, %zu unknown; %llu committed after the fault\n",
              committed, aborted, unknown, static_cast<unsigned long long>(*commits_after));
  EXPECT_GT(committed, 10u);
}

TEST(FailoverTest, SigkillPrimaryUnderBankWorkload) {
  TempDir dir;
  Cluster cl(dir.path());
  ASSERT_TRUE(cl.WaitServing());
  int64_t failover_ms = -1;
  uint64_t after = 0;
  RunBank(
      cl, [&] { cl.primary_->Kill(); }, std::chrono::milliseconds(1500),
      std::chrono::milliseconds(5000), &failover_ms, &after);
  std::printf(
      "failover under load (SIGKILL primary -> first client commit on the new primary): "
      "%lld ms\n",
      static_cast<long long>(failover_ms));
  EXPECT_GT(after, 0u) << "clients did not carry on against the new primary";
  auto st = CoordinatorStatus(cl.c1_);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->role, rpc::NodeRole::PRIMARY);
  // The old primary comes back: it steps down and follows as an in-sync backup.
  cl.primary_ = cl.StartCoordinator(0, "primary", {});
  EXPECT_TRUE(WaitFor(
      [&] {
        auto s0 = CoordinatorStatus(cl.c0_);
        auto s1 = CoordinatorStatus(cl.c1_);
        return s0 && s0->role == rpc::NodeRole::BACKUP && s1 && s1->counters["backup_in_sync"] == 1;
      },
      std::chrono::seconds(15)));
}

// SIGKILL a real participant 20 times: time until the primary's status shows
// it suspected (printed: p50/p99), and transactions not touching it keep
// committing while it is down.
TEST(FailoverTest, ParticipantKillDetectionAndOthersKeepCommitting) {
  TempDir dir;
  Cluster cl(dir.path());
  ASSERT_TRUE(cl.WaitServing());
  ClientOptions o = Tls().ForClient({});
  o.coordinators = {Addr(cl.c0_), Addr(cl.c1_)};
  auto client = Client::Connect(o);
  ASSERT_TRUE(client.ok());
  // Keys on participants 0 and 1 only.
  std::vector<std::string> keys01;
  for (int i = 0; keys01.size() < 4; ++i) {
    std::string k = "k" + std::to_string(i);
    if ((*client)->ShardOf(k) != 2) keys01.push_back(k);
  }
  std::string key2;
  for (int i = 0; key2.empty(); ++i) {
    std::string k = "x" + std::to_string(i);
    if ((*client)->ShardOf(k) == 2) key2 = k;
  }
  const std::string victim = PeerAddr(cl.pports_[2]);  // as the coordinator knows it
  auto suspected = [&](bool want) {
    auto st = CoordinatorStatus(cl.c0_);
    if (!st) return false;
    for (const auto& p : st->peers) {
      if (p.address == victim) return p.suspected == want && (want || p.heartbeat_age_ms >= 0);
    }
    return false;
  };
  std::vector<int64_t> ms;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(WaitFor([&] { return suspected(false); }, std::chrono::seconds(10))) << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(37 * i % 100));
    auto t0 = Clock::now();
    cl.participants_[2]->Kill();
    ASSERT_TRUE(WaitFor([&] { return suspected(true); }, std::chrono::seconds(5))) << i;
    ms.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
    if (i == 0) {
      // While it is down: a transaction touching it fails fast; others commit.
      auto tx = (*client)->Begin();
      ASSERT_TRUE(tx.ok());
      ASSERT_TRUE(tx->Put(keys01[0], "a").ok());
      ASSERT_TRUE(tx->Put(key2, "b").ok());
      Status s = tx->Commit();
      EXPECT_TRUE(s.IsAborted()) << s.ToString();
      EXPECT_EQ(tx->abort_reason(), AbortReason::kParticipantUnavailable);
      for (int j = 0; j < 20; ++j) {
        Status c = (*client)->Run([&](Transaction& t) {
          DTX_RETURN_IF_ERROR(t.Put(keys01[j % 2], std::to_string(j)));
          return t.Put(keys01[2 + j % 2], std::to_string(j));
        });
        EXPECT_TRUE(c.ok()) << c.ToString();
      }
    }
    cl.participants_[2] = cl.StartParticipant(2);
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "detection (SIGKILL real participant -> primary suspects it), 20 kills, heartbeat "
      "100 ms, suspect-after %llu ms: p50 %lld ms, p99 %lld ms, max %lld ms\n",
      static_cast<unsigned long long>(kSuspectAfterMsDefault),
      static_cast<long long>(ms[ms.size() / 2]),
      static_cast<long long>(ms[std::min(ms.size() - 1, ms.size() * 99 / 100)]),
      static_cast<long long>(ms.back()));
  EXPECT_LE(ms.back(), 1000);
}

// No false suspicions under load with real processes: 16 bank clients for
// DTX_LOAD_SECONDS (default 5); every transition to "suspected" on either
// coordinator is counted.
TEST(FailoverTest, NoFalseSuspicionsUnderBankLoad) {
  TempDir dir;
  Cluster cl(dir.path());
  ASSERT_TRUE(cl.WaitServing());
  const char* env = std::getenv("DTX_LOAD_SECONDS");
  const int seconds = env != nullptr ? std::max(1, std::atoi(env)) : 5;
  int64_t unused_ms = 0;
  uint64_t unused = 0;
  auto start = Clock::now();
  RunBank(
      cl, [] {}, std::chrono::milliseconds(100), std::chrono::seconds(seconds), &unused_ms, &unused,
      16);
  (void)start;
  auto s0 = CoordinatorStatus(cl.c0_);
  auto s1 = CoordinatorStatus(cl.c1_);
  ASSERT_TRUE(s0 && s1);
  std::printf(
      "bank load %d s, 16 clients, real participants: false suspicions primary %lld+%lld, "
      "backup %lld+%lld (participants+peer); backup in sync %lld\n",
      seconds, static_cast<long long>(s0->counters["participant_suspicions"]),
      static_cast<long long>(s0->counters["peer_suspicions"]),
      static_cast<long long>(s1->counters["participant_suspicions"]),
      static_cast<long long>(s1->counters["peer_suspicions"]),
      static_cast<long long>(s0->counters["backup_in_sync"]));
  EXPECT_EQ(s0->counters["participant_suspicions"] + s0->counters["peer_suspicions"], 0);
  EXPECT_EQ(s1->counters["participant_suspicions"] + s1->counters["peer_suspicions"], 0);
}

// `crash` at each coordinator failpoint of the commit path, armed on the
// primary while the workload runs.
class FailpointCrash : public ::testing::TestWithParam<const char*> {};

TEST_P(FailpointCrash, BackupTakesOverAndNothingDiverges) {
  TempDir dir;
  Cluster cl(dir.path());
  ASSERT_TRUE(cl.WaitServing());
  int64_t failover_ms = -1;
  uint64_t after = 0;
  RunBank(
      cl,
      [&] {
        Sync<rpc::AdminClient> c(AdminPort(cl.dir_ + "/c0"), PrincipalKind::kCoordinator,
                                 tools::kAdminCertName);
        ASSERT_TRUE(c.Open());
        c->SetFailpoint(GetParam(), "crash");
        ASSERT_TRUE(WaitFor([&] { return cl.primary_->Exited(); }, std::chrono::seconds(5)))
            << "the failpoint was never reached";
      },
      std::chrono::milliseconds(1000), std::chrono::milliseconds(4000), &failover_ms, &after);
  std::printf("crash at %s: first commit on the new primary %lld ms after arming\n", GetParam(),
              static_cast<long long>(failover_ms));
  EXPECT_GT(after, 0u);
}

INSTANTIATE_TEST_SUITE_P(CoordinatorFailpoints, FailpointCrash,
                         ::testing::Values("coordinator.votes.after_all",
                                           "coordinator.decision.before_log",
                                           "coordinator.decision.after_log",
                                           "coordinator.phase2.after_first_commit",
                                           "coordinator.end.before_log"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string n = info.param;
                           for (char& ch : n) {
                             if (ch == '.') ch = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace dtx
