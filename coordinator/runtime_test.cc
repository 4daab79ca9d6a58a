// Process-level tests of dtx-coordinator: the real binary on loopback, called
// with the stock synchronous Thrift CoordinatorClient, against fake
// participants (ParticipantCobSvIf on an RpcServer in this process) that
// record every call. End-to-end tests with real participants live in tests/.
#include <fcntl.h>
#include <poll.h>
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
#include <sstream>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "Coordinator.h"
#include "Admin.h"
#include "CoordinatorPeer.h"
#include "Participant.h"
#include "ParticipantPeer.h"
#include "common/address.h"
#include "common/event_loop.h"
#include "common/exit_codes.h"
#include "common/failpoint.h"
#include "common/failure_detector.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/types.h"
#include "tests/harness.h"
#include "tests/metrics_scrape.h"
#include "tools/admin_client.h"

#ifndef DTX_COORDINATOR_BIN
#error "DTX_COORDINATOR_BIN must name the dtx-coordinator binary"
#endif

namespace dtx {
namespace {

using apache::thrift::TDelayedException;
using testing::FreePort;
using Clock = std::chrono::steady_clock;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/dtx-coord-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    if (std::getenv("DTX_TEST_KEEP_DIR") != nullptr) return;  // for debugging
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A child process, SIGKILLed and reaped on destruction if still running.
class Process {
 public:
  Process(std::vector<std::string> args, std::string failpoints = {}) {
    pid_ = ::fork();
    if (pid_ == 0) {
      // Dies with the test: a test that aborts (a failed check in a thread)
      // must not leave nodes running.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      if (!failpoints.empty()) ::setenv("DTX_FAILPOINTS", failpoints.c_str(), 1);
      std::vector<char*> argv;
      std::string bin = DTX_COORDINATOR_BIN;
      argv.push_back(bin.data());
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~Process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void Signal(int sig) { ::kill(pid_, sig); }
  // Exit status (or 128+signal), or nullopt if still running after timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
};

// The cluster CA and the certificates of every node these tests start or
// fake, the client and the operator, made once per test binary. Nodes run
// with --certs-dir.
const testing::TestTls& Tls() { return testing::SharedTestTls(); }

// Ports of coordinators a test started with --insecure (the only such test:
// PrimaryBackupPartitionNeverGivesTwoPrimariesInOneEpoch); clients speak
// plaintext to them.
std::mutex plaintext_mu;
std::set<int> plaintext_ports;  // GUARDED_BY(plaintext_mu)
bool IsPlaintextPort(int port) {
  std::lock_guard<std::mutex> lock(plaintext_mu);
  return plaintext_ports.count(port) != 0;
}

// A stock synchronous client (what any Thrift user would write) of a
// coordinator, over TLS with `as`'s certificate (tools::StockConnection).
template <typename ThriftClient>
class BasicClient {
 public:
  BasicClient(int port, int timeout_ms, std::string as)
      : port_(port), timeout_ms_(timeout_ms), as_(std::move(as)) {}
  bool Open() {
    tools::ConnectionTls tls;
    if (!IsPlaintextPort(port_)) {
      tls = {.context = Tls().ClientContext(as_),
             .expected = {.kind = PrincipalKind::kCoordinator, .name = ""}};
    }
    auto c = tools::StockConnection<ThriftClient>::Open(
        "127.0.0.1:" + std::to_string(port_),
        {.connect_timeout_ms = 1000, .recv_timeout_ms = timeout_ms_}, tls);
    if (!c.ok()) return false;
    conn_ = std::move(*c);
    return true;
  }
  ThriftClient* operator->() { return &conn_->client(); }

 private:
  int port_;
  int timeout_ms_;
  std::string as_;
  std::unique_ptr<tools::StockConnection<ThriftClient>> conn_;
};
// The client listener (Coordinator), as a client.
struct Client : BasicClient<rpc::CoordinatorClient> {
  explicit Client(int port, int timeout_ms = 5000)
      : BasicClient(port, timeout_ms, tools::kClientCertName) {}
};
// The peer listener (CoordinatorPeer), as participant-0 (QueryDecision).
struct PeerClient : BasicClient<rpc::CoordinatorPeerClient> {
  explicit PeerClient(int port) : BasicClient(port, 5000, "participant-0") {}
};
// The node's admin listener (SetFailpoint, GetTrace), as the operator.
struct AdminClient : BasicClient<rpc::AdminClient> {
  explicit AdminClient(int port) : BasicClient(port, 5000, tools::kAdminCertName) {}
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

// The peer listener's port of the coordinator whose client listener is on
// `port`: picked once per client port, passed as --peer-listen by Args().
int PeerPort(int port) {
  static std::mutex mu;
  static std::map<int, int> ports;
  std::lock_guard<std::mutex> lock(mu);
  auto it = ports.find(port);
  if (it == ports.end()) it = ports.emplace(port, FreePort()).first;
  return it->second;
}

// QueryDecision on the peer listener of the coordinator serving clients on
// `port` (what participant-0 asks).
rpc::Decision::type QueryDecisionAt(int port, const rpc::TxId& txid) {
  PeerClient c(PeerPort(port));
  EXPECT_TRUE(c.Open()) << "peer listener of :" << port;
  return c->QueryDecision(txid, std::string(), rpc::Attempt());
}

// Waits until GetStatus answers.
bool WaitReady(int port, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    Client c(port, 1000);
    if (c.Open()) {
      try {
        rpc::NodeStatus st;
        c->GetStatus(st);
        return true;
      } catch (const std::exception&) {
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Records every call; votes `vote` on Prepare; acks Commit/Abort. Keeps an
// epoch like a real participant: calls stamped with an older epoch get
// STALE_EPOCH (and are recorded as refused), a newer one is adopted;
// AdoptEpoch follows the ParticipantPeer contract (newer, or equal from the
// same coordinator).
class FakeParticipant : public rpc::ParticipantPeerCobSvIf {
 public:
  struct Call {
    std::string method;  // Prepare, Commit, Abort
    TxId txid;
    int64_t epoch = 0;
    rpc::PrepareRequest prepare;
  };

  void Prepare(std::function<void(const rpc::PrepareResponse&)> cob,
               std::function<void(apache::thrift::TDelayedException*)> exn_cob,
               const rpc::PrepareRequest& req) override {
    rpc::PrepareResponse resp;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!EpochOk(req.epoch)) {
        calls_.push_back(Call{"RefusedPrepare", FromRpc(req.txid), req.epoch, req});
        return exn_cob(Stale(req.epoch));
      }
      calls_.push_back(Call{"Prepare", FromRpc(req.txid), req.epoch, req});
      resp.vote = vote_;
    }
    if (resp.vote == rpc::Vote::NO) {
      resp.__set_reason(rpc::AbortReason::CONFLICT);
      resp.__set_detail("fake says no");
    }
    cob(resp);
  }
  void Commit(std::function<void()> cob,
              std::function<void(apache::thrift::TDelayedException*)> exn_cob,
              const rpc::TxId& txid, const rpc::Epoch epoch) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!EpochOk(epoch)) {
        calls_.push_back(Call{"RefusedCommit", FromRpc(txid), epoch, {}});
        return exn_cob(Stale(epoch));
      }
      if (refuse_commits_) {
        calls_.push_back(Call{"FailedCommit", FromRpc(txid), epoch, {}});
        return exn_cob(apache::thrift::TDelayedException::delayException(
            MakeDtxError(rpc::ErrorCode::UNAVAILABLE, "fake refuses commits")));
      }
    }
    Record("Commit", txid, epoch);
    cob();
  }
  void Abort(std::function<void()> cob,
             std::function<void(apache::thrift::TDelayedException*)> exn_cob, const rpc::TxId& txid,
             const rpc::Epoch epoch, const rpc::Attempt&) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!EpochOk(epoch)) {
        calls_.push_back(Call{"RefusedAbort", FromRpc(txid), epoch, {}});
        return exn_cob(Stale(epoch));
      }
    }
    Record("Abort", txid, epoch);
    cob();
  }
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob,
                 std::function<void(TDelayedException*)>, const rpc::HeartbeatRequest&) override {
    rpc::HeartbeatResponse r;
    r.name = "fake";
    r.__set_role(rpc::NodeRole::PARTICIPANT);
    std::lock_guard<std::mutex> l(mu_);
    r.epoch = epoch_;
    cob(r);
  }
  void AdoptEpoch(std::function<void()> cob,
                  std::function<void(apache::thrift::TDelayedException*)> exn_cob,
                  const rpc::Epoch epoch, const std::string& coordinator) override {
    std::lock_guard<std::mutex> l(mu_);
    if (epoch > epoch_ || (epoch == epoch_ && owner_ == coordinator)) {
      epoch_ = epoch;
      owner_ = coordinator;
      adoptions_.emplace_back(epoch, coordinator);
      return cob();
    }
    exn_cob(Stale(epoch));
  }
  int64_t epoch() {
    std::lock_guard<std::mutex> l(mu_);
    return epoch_;
  }
  std::vector<std::pair<int64_t, std::string>> adoptions() {
    std::lock_guard<std::mutex> l(mu_);
    return adoptions_;
  }
  void SetRefuseCommits(bool refuse) {
    std::lock_guard<std::mutex> l(mu_);
    refuse_commits_ = refuse;
  }
  // Every accepted call (not refused), in arrival order.
  std::vector<Call> AllCalls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    cob(rpc::NodeStatus());
  }

  void SetVote(rpc::Vote::type v) {
    std::lock_guard<std::mutex> l(mu_);
    vote_ = v;
  }
  std::vector<Call> Calls(const std::string& method, const TxId& txid) {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<Call> out;
    for (const Call& c : calls_) {
      if (c.method == method && c.txid == txid) out.push_back(c);
    }
    return out;
  }
  // Waits until at least n calls of `method` for txid arrived.
  bool WaitCalls(const std::string& method, const TxId& txid, size_t n,
                 std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (Calls(method, txid).size() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

 private:
  void Record(const char* method, const rpc::TxId& txid, int64_t epoch) {
    std::lock_guard<std::mutex> l(mu_);
    calls_.push_back(Call{method, FromRpc(txid), epoch, {}});
  }
  // REQUIRES mu_ held.
  bool EpochOk(int64_t epoch) {
    if (epoch < epoch_) return false;
    if (epoch > epoch_) {
      epoch_ = epoch;
      owner_.clear();  // adopted from a call: owner unknown
    }
    return true;
  }
  apache::thrift::TDelayedException* Stale(int64_t epoch) {
    return apache::thrift::TDelayedException::delayException(
        MakeDtxError(rpc::ErrorCode::STALE_EPOCH,
                     "epoch " + std::to_string(epoch) + " < " + std::to_string(epoch_)));
  }
  int64_t epoch_ = 0;                                       // GUARDED_BY(mu_)
  std::string owner_;                                       // GUARDED_BY(mu_)
  bool refuse_commits_ = false;                             // GUARDED_BY(mu_)
  std::vector<std::pair<int64_t, std::string>> adoptions_;  // GUARDED_BY(mu_)
  std::mutex mu_;
  std::vector<Call> calls_;                // GUARDED_BY(mu_)
  rpc::Vote::type vote_ = rpc::Vote::YES;  // GUARDED_BY(mu_)
};

// N fake participants served from one loop thread, fake participant i with
// participant-i's certificate (plaintext if !tls), requiring the caller's.
class FakeCluster {
 public:
  explicit FakeCluster(size_t n, bool tls = true) : tls_(tls) {
    thread_.Start();
    thread_.RunSync([&] {
      for (size_t i = 0; i < n; ++i) {
        auto fake = std::make_shared<FakeParticipant>();
        RpcServerOptions o;
        o.name = "fake-participant-" + std::to_string(i);
        if (tls_) o.tls = Tls().ServerContext(Name(i));
        auto server = std::make_unique<RpcServer>(
            thread_.loop(), std::make_shared<rpc::ParticipantPeerAsyncProcessor>(fake), o);
        EXPECT_TRUE(server->Start().ok());
        addresses_.push_back(server->address());
        fakes_.push_back(fake);
        servers_.push_back(std::move(server));
      }
    });
  }
  ~FakeCluster() {
    thread_.RunSync([&] { servers_.clear(); });
    thread_.Stop();
  }
  FakeParticipant& at(size_t i) { return *fakes_[i]; }
  // Closes participant i's server (its connections drop; nothing answers).
  void Stop(size_t i) {
    thread_.RunSync([&] { servers_[i].reset(); });
  }
  // Serves participant i again on the same port.
  bool Restart(size_t i) {
    bool ok = false;
    thread_.RunSync([&] {
      RpcServerOptions o;
      o.name = "fake-participant-" + std::to_string(i);
      o.port = ParseHostPort(addresses_[i])->port;
      if (tls_) o.tls = Tls().ServerContext(Name(i));
      auto server = std::make_unique<RpcServer>(
          thread_.loop(), std::make_shared<rpc::ParticipantPeerAsyncProcessor>(fakes_[i]), o);
      ok = server->Start().ok();
      servers_[i] = std::move(server);
    });
    return ok;
  }
  static std::string Name(size_t i) { return "participant-" + std::to_string(i); }
  // "participant-0=HOST:PORT,...": the form of --participants.
  std::string addresses() const {
    std::string out;
    for (size_t i = 0; i < addresses_.size(); ++i) {
      out += (out.empty() ? "" : ",") + Name(i) + "=" + addresses_[i];
    }
    return out;
  }
  const std::string& address(size_t i) const { return addresses_[i]; }

 private:
  bool tls_;
  LoopThread thread_;
  std::vector<std::shared_ptr<FakeParticipant>> fakes_;
  std::vector<std::unique_ptr<RpcServer>> servers_;
  std::vector<std::string> addresses_;
};

// "HOST:PORT,..." of "NAME=HOST:PORT,...".
std::string WithoutNames(const std::string& named) {
  std::string out;
  std::stringstream in(named);
  for (std::string item; std::getline(in, item, ',');) {
    out += (out.empty() ? "" : ",") + item.substr(item.find('=') + 1);
  }
  return out;
}

// `participants` is "participant-0=HOST:PORT,..." (FakeCluster::addresses()).
std::vector<std::string> Args(int port, const std::string& dir, const std::string& participants) {
  // Tests index this list from both ends: a[1] is the name, the last item
  // the log level; a[5] is --certs-dir.
  return {"--name", "coordinator-0", "--listen", "127.0.0.1:" + std::to_string(port),
          "--enable-failpoints", "--certs-dir", Tls().certs_dir(), "--dir", dir, "--participants",
          participants,
          // The fakes serve the peer service only; clients get them too.
          "--participant-clients", WithoutNames(participants), "--peer-listen",
          "127.0.0.1:" + std::to_string(PeerPort(port)), "--log-level", "debug"};
}

// A key that the "hash" scheme places on `shard` of `n`.
std::string KeyOn(size_t shard, size_t n) {
  for (int i = 0;; ++i) {
    std::string k = "key" + std::to_string(i);
    if (ShardHash(k) % n == shard) return k;
  }
}

rpc::CommitRequest WriteReq(TxId txid, const std::vector<std::string>& keys) {
  rpc::CommitRequest req;
  req.txid = ToRpc(txid);
  req.shard_map_version = 1;
  for (const std::string& k : keys) {
    rpc::WriteItem w;
    w.key = k;
    w.__set_value("value-of-" + k);
    req.writes.push_back(w);
  }
  return req;
}

TEST(CoordinatorBinary, BadFlagsExitTwo) {
  TempDir dir;
  std::string d = dir.path() + "/n";
  std::vector<std::vector<std::string>> bad = {
      {"--bogus"},
      {"--listen", "127.0.0.1:1"},  // no --dir
      {"--dir", d},                 // no --listen
      {"--listen", "nonsense", "--dir", d},
      {"--listen", "127.0.0.1:70000", "--dir", d},
      {"--listen", "127.0.0.1:0", "--dir", d, "--participants", "a,b"},
      {"--listen", "127.0.0.1:0", "--dir", d, "--participants", "127.0.0.1:1,127.0.0.1:1"},
      {"--listen", "127.0.0.1:0", "--dir", d, "--log-level", "loud"},
      {"--listen", "127.0.0.1:0", "--dir", d, "stray-positional"},
      {"--listen", "127.0.0.1:0", "--dir", d, "--prepare-timeout-ms", "x"},
  };
  for (std::vector<std::string> args : bad) {
    args.push_back("--insecure");  // each case is bad for its own reason
    Process p(args);
    EXPECT_EQ(p.Wait(), 2) << "args: " << ::testing::PrintToString(args);
  }
  // Transport security: exactly one of --certs-dir and --insecure; with TLS
  // every peer named.
  std::vector<std::vector<std::string>> security = {
      {"--listen", "127.0.0.1:0", "--dir", d},
      {"--listen", "127.0.0.1:0", "--dir", d, "--insecure", "--certs-dir", d},
      {"--listen", "127.0.0.1:0", "--dir", d, "--certs-dir", d, "--participants", "127.0.0.1:1"},
      {"--listen", "127.0.0.1:0", "--dir", d, "--certs-dir", d, "--peer", "127.0.0.1:1"},
  };
  for (const auto& args : security) {
    Process p(args);
    EXPECT_EQ(p.Wait(), 2) << "args: " << ::testing::PrintToString(args);
  }
  // A certificate directory without this node's files: cannot start.
  Process no_certs({"--listen", "127.0.0.1:0", "--dir", d, "--certs-dir", d + "/none"});
  EXPECT_EQ(no_certs.Wait(), 1) << "missing certificate files";
  Process p({"--listen", "127.0.0.1:0", "--dir", d, "--enable-failpoints", "--insecure"},
            "no.such.point=crash");
  EXPECT_EQ(p.Wait(), 2) << "bad DTX_FAILPOINTS";
  Process off({"--listen", "127.0.0.1:0", "--dir", d, "--insecure"},
              "coordinator.end.before_log=crash");
  EXPECT_EQ(off.Wait(), 2) << "DTX_FAILPOINTS without --enable-failpoints";
}

TEST(CoordinatorBinary, ServesShardMapStatusAndClearErrorsWithoutParticipants) {
  TempDir dir;
  int port = FreePort();
  Process p(Args(port, dir.path() + "/n", ""));
  ASSERT_TRUE(WaitReady(port));
  Client c(port);
  ASSERT_TRUE(c.Open());

  rpc::ShardMap map;
  c->GetShardMap(map);
  EXPECT_EQ(map.version, 1);
  EXPECT_EQ(map.scheme, "hash");
  EXPECT_TRUE(map.participants.empty());

  rpc::NodeStatus st;
  c->GetStatus(st);
  EXPECT_EQ(st.name, "coordinator-0");
  EXPECT_EQ(st.role, rpc::NodeRole::PRIMARY);
  EXPECT_EQ(st.epoch, 1);
  EXPECT_GE(st.durable_lsn, 1) << "the EPOCH record is durable";
  EXPECT_EQ(st.in_flight, 0);
  EXPECT_TRUE(st.peers.empty());

  auto expect_error = [&](const rpc::CommitRequest& req, rpc::ErrorCode::type code) {
    rpc::CommitResult res;
    try {
      c->Commit(res, req);
      ADD_FAILURE() << "no error";
    } catch (const rpc::DtxError& e) {
      EXPECT_EQ(e.code, code) << e.message;
      EXPECT_FALSE(e.message.empty());
    }
  };
  expect_error(WriteReq(TxId{1, 1}, {"k"}), rpc::ErrorCode::UNAVAILABLE);  // no participants
  expect_error(WriteReq(TxId{1, 2}, {""}), rpc::ErrorCode::BAD_ARGUMENT);
  expect_error(WriteReq(TxId{1, 3}, {std::string(kKeyBytesMax + 1, 'k')}),
               rpc::ErrorCode::BAD_ARGUMENT);
  rpc::CommitRequest wrong = WriteReq(TxId{1, 4}, {"k"});
  wrong.shard_map_version = 7;
  expect_error(wrong, rpc::ErrorCode::WRONG_SHARD);

  // No participant is configured: participant-0 may not ask (presumed abort
  // of an unknown txid: TwoPhaseCommitAgainstFakeParticipants).
  try {
    QueryDecisionAt(port, ToRpc(TxId{5, 5}));
    ADD_FAILURE() << "QueryDecision from a participant that is not configured";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::PERMISSION_DENIED) << e.message;
  }
  AdminClient admin(AdminPort(dir.path() + "/n"));
  ASSERT_TRUE(admin.Open());
  try {
    admin->SetFailpoint("no.such.point", "crash");
    ADD_FAILURE() << "no error";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::BAD_ARGUMENT);
  }
  admin->SetFailpoint("coordinator.end.before_log", "off");

  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(), 0);
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/n/node.log"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/n/wal"));

  // The epoch comes back from the log, and the restart moves to the next one
  // (docs/design.md "Attempts": every incarnation decides at an epoch of its
  // own).
  Process again(Args(port, dir.path() + "/n", ""));
  ASSERT_TRUE(WaitReady(port));
  Client c2(port);
  ASSERT_TRUE(c2.Open());
  c2->GetStatus(st);
  EXPECT_EQ(st.epoch, 2);
}

TEST(CoordinatorBinary, TwoPhaseCommitAgainstFakeParticipants) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  Process p(Args(port, dir.path() + "/n", fakes.addresses()));
  ASSERT_TRUE(WaitReady(port));
  Client c(port);
  ASSERT_TRUE(c.Open());

  rpc::ShardMap map;
  c->GetShardMap(map);
  ASSERT_EQ(map.participants.size(), 2u);
  EXPECT_EQ(map.participants[0], fakes.address(0));

  // Two participants: two-phase commit.
  TxId tx{0xfeed, 1};
  rpc::CommitResult res;
  c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  for (size_t i = 0; i < 2; ++i) {
    auto prepares = fakes.at(i).Calls("Prepare", tx);
    ASSERT_EQ(prepares.size(), 1u);
    EXPECT_EQ(prepares[0].epoch, 1);
    EXPECT_FALSE(prepares[0].prepare.one_phase);
    EXPECT_FALSE(prepares[0].prepare.read_only_tx);
    EXPECT_EQ(prepares[0].prepare.coordinator, "127.0.0.1:" + std::to_string(PeerPort(port)));
    ASSERT_EQ(prepares[0].prepare.writes.size(), 1u);
    EXPECT_EQ(prepares[0].prepare.writes[0].key, KeyOn(i, 2));
    EXPECT_TRUE(fakes.at(i).WaitCalls("Commit", tx, 1));
  }
  // Idempotent by txid.
  c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  EXPECT_EQ(fakes.at(0).Calls("Prepare", tx).size(), 1u);
  EXPECT_EQ(QueryDecisionAt(port, ToRpc(tx)), rpc::Decision::COMMIT);
  EXPECT_EQ(QueryDecisionAt(port, ToRpc(TxId{5, 5})), rpc::Decision::ABORT) << "presumed abort";
  EXPECT_EQ(c->GetOutcome(ToRpc(tx)), rpc::Outcome::COMMITTED);
  // GetOutcome changes nothing: a txid it did not know still commits after
  // (a QueryDecision would have aborted it for good, presumed abort).
  TxId asked{0xfeed, 99};
  EXPECT_EQ(c->GetOutcome(ToRpc(asked)), rpc::Outcome::UNKNOWN);
  c->Commit(res, WriteReq(asked, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  EXPECT_EQ(c->GetOutcome(ToRpc(asked)), rpc::Outcome::COMMITTED);

  // One participant: one-phase.
  TxId one{0xfeed, 2};
  c->Commit(res, WriteReq(one, {KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  auto prepares = fakes.at(1).Calls("Prepare", one);
  ASSERT_EQ(prepares.size(), 1u);
  EXPECT_TRUE(prepares[0].prepare.one_phase);
  EXPECT_TRUE(fakes.at(0).Calls("Prepare", one).empty());

  // A NO vote: ABORTED with the reason; the YES voter hears ABORT.
  fakes.at(1).SetVote(rpc::Vote::NO);
  TxId no{0xfeed, 3};
  c->Commit(res, WriteReq(no, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::ABORTED);
  EXPECT_EQ(res.reason, rpc::AbortReason::CONFLICT);
  EXPECT_NE(res.detail.find("fake says no"), std::string::npos);
  EXPECT_TRUE(fakes.at(0).WaitCalls("Abort", no, 1));
  EXPECT_TRUE(fakes.at(0).Calls("Commit", no).empty());

  rpc::NodeStatus st;
  c->GetStatus(st);
  EXPECT_EQ(st.counters["commits"], 2);  // tx and `asked`
  EXPECT_EQ(st.counters["commits_one_phase"], 1);
  EXPECT_EQ(st.counters["aborts_conflict"], 1);
  ASSERT_EQ(st.peers.size(), 2u);
  EXPECT_EQ(st.peers[1].address, fakes.address(1));
  // The fakes answer GetStatus, the coordinator's heartbeat probe.
  EXPECT_GE(st.peers[1].heartbeat_age_ms, 0);
  EXPECT_FALSE(st.peers[1].suspected);

  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(), 0);
}

// "event detail" lines of txid's span events at the coordinator, in record order.
// Asked on the admin listener of the node in `node_dir`.
std::vector<std::string> TraceOf(const std::string& node_dir, const TxId& txid) {
  AdminClient admin(AdminPort(node_dir));
  EXPECT_TRUE(admin.Open());
  rpc::TraceResponse resp;
  admin->GetTrace(resp, ToRpc(txid));
  std::vector<std::string> out;
  for (const rpc::SpanEventMsg& e : resp.events) {
    out.push_back(e.event + (e.detail.empty() ? "" : " " + e.detail));
  }
  return out;
}

bool Has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(CoordinatorBinary, TraceRecordsEveryStepOfATransaction) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  Process p(Args(port, dir.path() + "/n", fakes.addresses()));
  ASSERT_TRUE(WaitReady(port));
  Client c(port);
  ASSERT_TRUE(c.Open());
  TxId tx{0x7ace, 1};
  rpc::CommitResult res;
  c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));
  ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  std::vector<std::string> ev;
  auto deadline = Clock::now() + std::chrono::seconds(5);
  do {
    ev = TraceOf(dir.path() + "/n", tx);
    if (Has(ev, "ended")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (Clock::now() < deadline);
  const std::vector<std::string> want = {"received",
                                         "prepare participant-0",
                                         "prepare participant-1",
                                         "voted participant-0 yes",
                                         "voted participant-1 yes",
                                         "logged",
                                         "synced",
                                         "decided commit",
                                         "replied committed",
                                         "acked participant-0",
                                         "acked participant-1",
                                         "ended"};
  for (const std::string& w : want)
    EXPECT_TRUE(Has(ev, w)) << w << " in " << ::testing::PrintToString(ev);
  // Record order: received first, ended last; logged before synced before replied.
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.front(), "received");
  EXPECT_EQ(ev.back(), "ended");
  auto at = [&](const std::string& s) { return std::find(ev.begin(), ev.end(), s) - ev.begin(); };
  EXPECT_LT(at("logged"), at("synced"));
  EXPECT_LT(at("synced"), at("decided commit"));
  EXPECT_LT(at("decided commit"), at("replied committed"));

  // A NO vote: the voter and the reason show.
  fakes.at(1).SetVote(rpc::Vote::NO);
  TxId no{0x7ace, 2};
  c->Commit(res, WriteReq(no, {KeyOn(0, 2), KeyOn(1, 2)}));
  ASSERT_EQ(res.outcome, rpc::Outcome::ABORTED);
  ev = TraceOf(dir.path() + "/n", no);
  EXPECT_TRUE(Has(ev, "voted participant-1 no")) << ::testing::PrintToString(ev);
  EXPECT_TRUE(Has(ev, "decided abort conflict")) << ::testing::PrintToString(ev);
  // The ABORTED answer is logged first (docs/design.md "Aborts answered are logged").
  EXPECT_LT(at("logged"), at("synced")) << ::testing::PrintToString(ev);
  EXPECT_LT(at("synced"), at("replied aborted")) << ::testing::PrintToString(ev);
  EXPECT_LT(at("replied aborted"), static_cast<ptrdiff_t>(ev.size()));
  EXPECT_TRUE(TraceOf(dir.path() + "/n", TxId{0x7ace, 99}).empty()) << "unknown txid";

  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(), 0);
  // --log-level debug: each event is a log line too.
  std::ifstream log(dir.path() + "/n/node.log");
  std::stringstream body;
  body << log.rdbuf();
  EXPECT_NE(body.str().find("trace txid=" + tx.ToString() + " event=ended"), std::string::npos);
}

TEST(CoordinatorBinary, TraceEventsZeroTurnsTracingOff) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  auto bad = Args(port, dir.path() + "/b", fakes.addresses());
  bad.insert(bad.end(), {"--trace-events", "99999999999"});
  Process b(bad);
  EXPECT_EQ(b.Wait(), 2);
  auto args = Args(port, dir.path() + "/n", fakes.addresses());
  args.insert(args.end(), {"--trace-events", "0"});
  Process p(args);
  ASSERT_TRUE(WaitReady(port));
  Client c(port);
  ASSERT_TRUE(c.Open());
  TxId tx{0x7ace, 3};
  rpc::CommitResult res;
  c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));
  ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  EXPECT_TRUE(TraceOf(dir.path() + "/n", tx).empty());
  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(), 0);
}

using test_metrics::HttpGetMetrics;
using test_metrics::ParseMetrics;

TEST(CoordinatorBinary, MetricsCountOutcomesAndPhases) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  Process p(Args(port, dir.path() + "/n", fakes.addresses()));
  ASSERT_TRUE(WaitReady(port));
  std::ifstream f(dir.path() + "/n/metrics.addr");
  std::string addr;
  ASSERT_TRUE(std::getline(f, addr)) << "metrics.addr missing";
  ASSERT_EQ(addr.rfind("127.0.0.1:", 0), 0u) << addr;
  const int metrics_port = ParseHostPort(addr)->port;
  Client c(port);
  ASSERT_TRUE(c.Open());
  rpc::CommitResult res;
  TxId tx{0xbeef, 1};
  c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));
  ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));  // a retry counts once
  ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  fakes.at(1).SetVote(rpc::Vote::NO);
  c->Commit(res, WriteReq(TxId{0xbeef, 2}, {KeyOn(0, 2), KeyOn(1, 2)}));
  ASSERT_EQ(res.outcome, rpc::Outcome::ABORTED);
  // Plaintext garbage on the admin listener (nothing else calls it here):
  // the TLS handshake fails.
  const int admin_port = AdminPort(dir.path() + "/n");
  ASSERT_GT(admin_port, 0);
  EXPECT_TRUE(test_metrics::SendGarbage(admin_port));
  const auto listener = test_metrics::ListenerSeries;

  std::map<std::string, double> m;
  auto deadline = Clock::now() + std::chrono::seconds(5);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::string resp = HttpGetMetrics(metrics_port);
    ASSERT_EQ(resp.find(" 200 OK\r\n"), 8u) << resp.substr(0, 200);
    m = ParseMetrics(resp.substr(resp.find("\r\n\r\n") + 4));
  } while ((m["dtx_phase_seconds_count{phase=\"phase2\"}"] < 1 ||
            m["dtx_heartbeat_age_seconds{peer=\"" + fakes.address(1) + "\"}"] < 0 ||
            m[listener("dtx_rpc_tls_handshakes_failed_total", "admin")] < 1 ||
            m[listener("dtx_rpc_connections_open", "admin")] != 0) &&
           Clock::now() < deadline);
  EXPECT_EQ(m["dtx_commits_total"], 1);
  EXPECT_EQ(m["dtx_aborts_total{reason=\"conflict\"}"], 1);
  EXPECT_EQ(m["dtx_aborts_total{reason=\"timeout\"}"], 0);
  EXPECT_EQ(m["dtx_phase_seconds_count{phase=\"prepare\"}"], 2);
  EXPECT_GE(m["dtx_phase_seconds_count{phase=\"decision\"}"], 1);
  EXPECT_GE(m["dtx_phase_seconds_count{phase=\"phase2\"}"], 1);
  EXPECT_EQ(m["dtx_phase_seconds_count{phase=\"total\"}"], 3);
  EXPECT_GT(m["dtx_phase_seconds_sum{phase=\"total\"}"], 0);
  EXPECT_EQ(m["dtx_role{role=\"primary\"}"], 1);
  EXPECT_EQ(m["dtx_role{role=\"backup\"}"], 0);
  EXPECT_EQ(m["dtx_epoch"], 1);
  EXPECT_EQ(m.count("dtx_in_flight"), 1u);
  EXPECT_GE(m["dtx_heartbeat_age_seconds{peer=\"" + fakes.address(1) + "\"}"], 0);
  EXPECT_EQ(m["dtx_peer_suspected{peer=\"" + fakes.address(0) + "\"}"], 0);
  EXPECT_GE(m["dtx_wal_syncs_total"], 1);
  EXPECT_GE(m["dtx_wal_records_synced_total"], 2);
  // The WAL histograms (on_sync): one observation per successful group commit.
  EXPECT_GE(m["dtx_wal_sync_seconds_count"], 1);
  EXPECT_EQ(m["dtx_wal_sync_seconds_count"], m["dtx_wal_records_per_sync_count"]);
  EXPECT_GT(m["dtx_wal_sync_seconds_sum"], 0);
  EXPECT_GE(m["dtx_wal_records_per_sync_sum"], m["dtx_wal_records_per_sync_count"]);
  EXPECT_EQ(m.count("dtx_wal_sync_seconds_bucket{le=\"+Inf\"}"), 1u);
  EXPECT_GT(m["process_resident_memory_bytes"], 0);
  // Each listener's connections (node/listener_metrics.h): the client
  // listener's GetStatus probes and the three commits over TLS, `c` still
  // open; the garbage on the admin listener.
  EXPECT_GE(m[listener("dtx_rpc_frames_received_total", "client")], 4);
  EXPECT_GE(m[listener("dtx_rpc_replies_sent_total", "client")], 4);
  EXPECT_GE(m[listener("dtx_rpc_reply_writes_total", "client")], 1);
  EXPECT_GE(m[listener("dtx_rpc_tls_handshakes_total", "client")], 1);
  EXPECT_GE(m[listener("dtx_rpc_connections_open", "client")], 1);
  EXPECT_EQ(m[listener("dtx_rpc_connections_accepted_total", "admin")], 1);
  EXPECT_EQ(m[listener("dtx_rpc_tls_handshakes_failed_total", "admin")], 1);
  EXPECT_EQ(m[listener("dtx_rpc_tls_handshakes_total", "admin")], 0);
  EXPECT_EQ(m[listener("dtx_rpc_connections_open", "admin")], 0);
  EXPECT_EQ(m.count(listener("dtx_rpc_connections_accepted_total", "peer")), 1u);
  rpc::NodeStatus st;
  c->GetStatus(st);
  EXPECT_EQ(st.counters["metrics_port"], metrics_port);

  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(), 0);
  EXPECT_TRUE(HttpGetMetrics(metrics_port).empty()) << "the endpoint closes on shutdown";
}

TEST(CoordinatorBinary, MetricsOffWritesNoAddressAndBadFlagExitsTwo) {
  TempDir dir;
  int port = FreePort();
  auto bad = Args(port, dir.path() + "/b", "");
  bad.insert(bad.end(), {"--metrics-listen", "nope"});
  Process b(bad);
  EXPECT_EQ(b.Wait(), 2);
  auto args = Args(port, dir.path() + "/n", "");
  args.insert(args.end(), {"--metrics-listen", "off"});
  Process p(args);
  ASSERT_TRUE(WaitReady(port));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/n/metrics.addr"));
}

TEST(CoordinatorBinary, PrepareTimeoutAbortsWhenAParticipantIsDown) {
  FakeCluster fakes(1);
  TempDir dir;
  int port = FreePort();
  int dead = FreePort();  // nothing listens there
  std::string participants =
      "participant-0=" + fakes.address(0) + ",participant-1=127.0.0.1:" + std::to_string(dead);
  Process p(Args(port, dir.path() + "/n", participants));
  ASSERT_TRUE(WaitReady(port));
  Client c(port);
  ASSERT_TRUE(c.Open());
  TxId tx{0xdead, 1};
  rpc::CommitResult res;
  c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::ABORTED);
  EXPECT_EQ(res.reason, rpc::AbortReason::PARTICIPANT_UNAVAILABLE);
  EXPECT_TRUE(fakes.at(0).WaitCalls("Abort", tx, 1));
}

TEST(CoordinatorBinary, CrashAfterFirstCommitIsRedrivenAfterRestart) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  auto p = std::make_unique<Process>(Args(port, dir.path() + "/n", fakes.addresses()));
  ASSERT_TRUE(WaitReady(port));
  TxId tx{0xc0ffee, 1};
  {
    Client c(port);
    ASSERT_TRUE(c.Open());
    AdminClient admin(AdminPort(dir.path() + "/n"));
    ASSERT_TRUE(admin.Open());
    admin->SetFailpoint("coordinator.phase2.after_first_commit", "crash");
    rpc::CommitResult res;
    // The client hears COMMITTED (the reply was handed over before COMMIT
    // went out) or loses the connection; either way the decision is durable.
    try {
      c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));
    } catch (const std::exception&) {
    }
  }
  EXPECT_EQ(p->Wait(), fp::kCrashExitCode);
  p.reset();
  size_t commits_before = fakes.at(1).Calls("Commit", tx).size();
  EXPECT_EQ(commits_before, 0u) << "the crash came right after the first COMMIT";

  p = std::make_unique<Process>(Args(port, dir.path() + "/n", fakes.addresses()));
  ASSERT_TRUE(WaitReady(port));
  // Recovery re-sends COMMIT to every participant of the DECISION.
  EXPECT_TRUE(fakes.at(0).WaitCalls("Commit", tx, 1));
  EXPECT_TRUE(fakes.at(1).WaitCalls("Commit", tx, 1));
  Client c(port);
  ASSERT_TRUE(c.Open());
  EXPECT_EQ(QueryDecisionAt(port, ToRpc(tx)), rpc::Decision::COMMIT);
  rpc::CommitResult res;
  c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  EXPECT_EQ(fakes.at(0).Calls("Prepare", tx).size(), 1u) << "no second 2PC run";
}

TEST(CoordinatorBinary, CrashBeforeDecisionIsLoggedMeansAbort) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  auto p = std::make_unique<Process>(Args(port, dir.path() + "/n", fakes.addresses()),
                                     "coordinator.decision.before_log=crash");
  ASSERT_TRUE(WaitReady(port));
  TxId tx{0xc0ffee, 2};
  {
    Client c(port);
    ASSERT_TRUE(c.Open());
    rpc::CommitResult res;
    EXPECT_ANY_THROW(c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)})));
  }
  EXPECT_EQ(p->Wait(), fp::kCrashExitCode);
  p = std::make_unique<Process>(Args(port, dir.path() + "/n", fakes.addresses()));
  ASSERT_TRUE(WaitReady(port));
  Client c(port);
  ASSERT_TRUE(c.Open());
  EXPECT_EQ(QueryDecisionAt(port, ToRpc(tx)), rpc::Decision::ABORT);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_TRUE(fakes.at(0).Calls("Commit", tx).empty());
  EXPECT_TRUE(fakes.at(1).Calls("Commit", tx).empty());
}

}  // namespace
}  // namespace dtx

namespace dtx {
namespace {

using testing::FreePort;

// Bounded load: 16 client threads commit two-participant transactions for
// 2 s. Checks every one commits and prints the rate and the WAL's group
// commit (records per fdatasync). The floor is low on purpose: the machine is
// shared; this catches a stall or a lost reply, not a regression of a few %.
TEST(CoordinatorBinary, ConcurrentCommitsShareSyncs) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  std::vector<std::string> args = Args(port, dir.path() + "/n", fakes.addresses());
  args.back() = "info";  // --log-level
  Process p(args);
  ASSERT_TRUE(WaitReady(port));
  constexpr int kThreads = 16;
  const auto duration = std::chrono::seconds(2);
  std::atomic<uint64_t> committed{0}, failed{0};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Client c(port);
      if (!c.Open()) {
        ++failed;
        return;
      }
      for (uint64_t i = 0; Clock::now() - start < duration; ++i) {
        rpc::CommitResult res;
        try {
          c->Commit(res,
                    WriteReq(TxId{static_cast<uint64_t>(1000 + t), i}, {KeyOn(0, 2), KeyOn(1, 2)}));
          if (res.outcome == rpc::Outcome::COMMITTED) ++committed;
          else ++failed;
        } catch (const std::exception&) {
          ++failed;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  Client c(port);
  ASSERT_TRUE(c.Open());
  rpc::NodeStatus st;
  c->GetStatus(st);
  double per_sync = st.counters["wal_syncs"] > 0
                        ? static_cast<double>(st.counters["wal_records_synced"]) /
                              static_cast<double>(st.counters["wal_syncs"])
                        : 0;
  std::printf(
      "coordinator: %llu commits in %.2f s = %.0f/s with %d clients; "
      "%lld syncs, %.1f records per sync\n",
      static_cast<unsigned long long>(committed.load()), secs, committed / secs, kThreads,
      static_cast<long long>(st.counters["wal_syncs"]), per_sync);
  EXPECT_EQ(failed.load(), 0u);
  EXPECT_GT(committed.load(), 100u);
  EXPECT_EQ(st.counters["commits"], static_cast<int64_t>(committed.load()));
  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(), 0);
}

// ---- heartbeats, failure detection, replication -----------------------------------

rpc::NodeStatus StatusOf(int port) {
  Client c(port, 2000);
  rpc::NodeStatus st;
  if (!c.Open()) return st;
  try {
    c->GetStatus(st);
  } catch (const std::exception&) {
  }
  return st;
}

const rpc::PeerStatus* PeerAt(const rpc::NodeStatus& st, const std::string& address) {
  for (const rpc::PeerStatus& p : st.peers) {
    if (p.address == address) return &p;
  }
  return nullptr;
}

// Polls GetStatus until pred(status) holds; the elapsed ms, or -1 on timeout.
template <typename Pred>
int64_t WaitStatus(int port, Pred pred,
                   std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto start = Clock::now();
  Client c(port, 2000);
  if (!c.Open()) return -1;
  while (Clock::now() - start < timeout) {
    rpc::NodeStatus st;
    try {
      c->GetStatus(st);
    } catch (const std::exception&) {
      return -1;
    }
    if (pred(st)) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return -1;
}

std::vector<std::string> HaArgs(int port, const std::string& dir, const std::string& participants,
                                const std::string& name, const std::string& role, int peer_port) {
  std::vector<std::string> a = Args(port, dir, participants);
  a[1] = name;
  const std::string peer_name = name == "coordinator-0" ? "coordinator-1" : "coordinator-0";
  a.insert(a.end(), {"--role", role, "--peer",
                     peer_name + "=127.0.0.1:" + std::to_string(PeerPort(peer_port)),
                     "--peer-client", "127.0.0.1:" + std::to_string(peer_port)});
  return a;
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

// Waits until the coordinator on `port` says it is the established primary.
int64_t WaitPrimary(int port, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  if (!WaitReady(port, timeout)) return -1;
  return WaitStatus(
      port, [](const rpc::NodeStatus& st) { return st.role == rpc::NodeRole::PRIMARY; }, timeout);
}

TEST(CoordinatorBinary, SuspectedParticipantFailsFastAndOthersKeepCommitting) {
  FakeCluster fakes(3);
  TempDir dir;
  int port = FreePort();
  std::vector<std::string> args = Args(port, dir.path() + "/n", fakes.addresses());
  args.insert(args.end(), {"--heartbeat-ms", "50", "--suspect-after-ms", "250"});
  Process p(args);
  ASSERT_TRUE(WaitReady(port));
  const std::string down = fakes.address(2);
  ASSERT_GE(WaitStatus(port,
                       [&](const rpc::NodeStatus& st) {
                         const rpc::PeerStatus* ps = PeerAt(st, down);
                         return ps != nullptr && ps->heartbeat_age_ms >= 0 && !ps->suspected;
                       }),
            0);
  fakes.Stop(2);
  int64_t detect_ms = WaitStatus(port, [&](const rpc::NodeStatus& st) {
    const rpc::PeerStatus* ps = PeerAt(st, down);
    return ps != nullptr && ps->suspected;
  });
  ASSERT_GE(detect_ms, 0) << "never suspected";
  // How long it took is a measurement, not a check (a loaded machine
  // stretches it): printed only.
  std::printf("suspected %lld ms after the stop (suspect-after 250 ms)\n",
              static_cast<long long>(detect_ms));
  Client c(port);
  ASSERT_TRUE(c.Open());
  // Touching the suspected participant: ABORTED/PARTICIPANT_UNAVAILABLE at once.
  auto t0 = Clock::now();
  rpc::CommitResult res;
  c->Commit(res, WriteReq(TxId{0x5a5, 1}, {KeyOn(0, 3), KeyOn(2, 3)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::ABORTED);
  EXPECT_EQ(res.reason, rpc::AbortReason::PARTICIPANT_UNAVAILABLE);
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(200));
  EXPECT_TRUE(fakes.at(0).Calls("Prepare", TxId{0x5a5, 1}).empty()) << "nothing was sent";
  // Not touching it: commits.
  c->Commit(res, WriteReq(TxId{0x5a5, 2}, {KeyOn(0, 3), KeyOn(1, 3)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  // It returns: no longer suspected, and transactions reach it again.
  ASSERT_TRUE(fakes.Restart(2));
  ASSERT_GE(WaitStatus(port,
                       [&](const rpc::NodeStatus& st) {
                         const rpc::PeerStatus* ps = PeerAt(st, down);
                         return ps != nullptr && !ps->suspected;
                       }),
            0);
  c->Commit(res, WriteReq(TxId{0x5a5, 3}, {KeyOn(0, 3), KeyOn(2, 3)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(), 0);
}

// Measured: kill (server closed) -> suspected, over 20 kills, default
// heartbeat 100 ms / suspect-after 400 ms (kSuspectAfterMsDefault). Checked:
// every kill is suspected (WaitStatus's timeout). The times are printed, not
// asserted: a bound on them failed CI on a loaded machine (2026-12-07), and a
// timed test is no benchmark.
TEST(CoordinatorBinary, DetectionTimeOverTwentyKills) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  std::vector<std::string> args = Args(port, dir.path() + "/n", fakes.addresses());
  args.back() = "info";
  Process p(args);
  ASSERT_TRUE(WaitReady(port));
  const std::string victim = fakes.address(1);
  auto healthy = [&](const rpc::NodeStatus& st) {
    const rpc::PeerStatus* ps = PeerAt(st, victim);
    return ps != nullptr && ps->heartbeat_age_ms >= 0 && ps->heartbeat_age_ms < 150 &&
           !ps->suspected;
  };
  std::vector<int64_t> ms;
  for (int i = 0; i < 20; ++i) {
    ASSERT_GE(WaitStatus(port, healthy), 0) << "kill " << i;
    // Kill at a random point of the heartbeat cycle.
    std::this_thread::sleep_for(std::chrono::milliseconds(37 * i % 100));
    fakes.Stop(1);
    int64_t d = WaitStatus(port, [&](const rpc::NodeStatus& st) {
      const rpc::PeerStatus* ps = PeerAt(st, victim);
      return ps != nullptr && ps->suspected;
    });
    ASSERT_GE(d, 0) << "kill " << i << " never suspected";
    ms.push_back(d);
    ASSERT_TRUE(fakes.Restart(1));
  }
  std::sort(ms.begin(), ms.end());
  int64_t p50 = ms[ms.size() / 2];
  int64_t p99 = ms[std::min(ms.size() - 1, static_cast<size_t>(ms.size() * 0.99))];
  std::printf(
      "detection (participant server closed -> suspected), 20 kills, heartbeat 100 ms, "
      "suspect-after %llu ms: p50 %lld ms, p99 %lld ms, max %lld ms\n",
      static_cast<unsigned long long>(kSuspectAfterMsDefault),
      static_cast<long long>(p50), static_cast<long long>(p99), static_cast<long long>(ms.back()));
  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(), 0);
}

TEST(CoordinatorBinary, BackupHoldsEveryDecisionAndPrimaryCarriesOnAloneWhenItIsDown) {
  FakeCluster fakes(2);
  TempDir dir;
  int pport = FreePort(), bport = FreePort();
  Process primary(
      HaArgs(pport, dir.path() + "/c0", fakes.addresses(), "coordinator-0", "primary", bport));
  auto backup = std::make_unique<Process>(
      HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "backup", pport));
  ASSERT_TRUE(WaitReady(pport));
  ASSERT_TRUE(WaitReady(bport));
  ASSERT_GE(
      WaitStatus(pport, [](rpc::NodeStatus& st) { return st.counters["backup_in_sync"] == 1; }), 0);
  EXPECT_EQ(StatusOf(bport).role, rpc::NodeRole::BACKUP);
  EXPECT_EQ(StatusOf(bport).counters["in_sync"], 1);

  Client c(pport);
  ASSERT_TRUE(c.Open());
  rpc::CommitResult res;
  TxId tx1{0xbac, 1};
  c->Commit(res, WriteReq(tx1, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  {
    // The trace shows the backup's ack before the decision.
    std::vector<std::string> ev = TraceOf(dir.path() + "/c0", tx1);
    auto at = [&](const std::string& s) { return std::find(ev.begin(), ev.end(), s) - ev.begin(); };
    EXPECT_TRUE(Has(ev, "replicated")) << ::testing::PrintToString(ev);
    EXPECT_LT(at("replicated"), at("decided commit")) << ::testing::PrintToString(ev);
  }
  {
    // The backup has the DECISION (the commit point waited for it) but
    // answers nothing itself and refuses to decide.
    Client b(bport);
    ASSERT_TRUE(b.Open());
    EXPECT_GE(StatusOf(bport).counters["replicated_records"], 3);
    EXPECT_EQ(QueryDecisionAt(bport, ToRpc(tx1)), rpc::Decision::UNKNOWN);
    try {
      b->Commit(res, WriteReq(TxId{0xbac, 2}, {KeyOn(0, 2), KeyOn(1, 2)}));
      ADD_FAILURE() << "a backup accepted a commit";
    } catch (const rpc::DtxError& e) {
      EXPECT_EQ(e.code, rpc::ErrorCode::NOT_PRIMARY);
      EXPECT_EQ(e.primary, "127.0.0.1:" + std::to_string(pport));
    }
  }
  // Pause the backup: the next commit waits for it, then goes ahead alone
  // once the backup is suspected; status says so.
  backup->Signal(SIGSTOP);
  auto t0 = Clock::now();
  TxId tx3{0xbac, 3};
  c->Commit(res, WriteReq(tx3, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(100)) << "did not wait for the backup";
  rpc::NodeStatus st = StatusOf(pport);
  EXPECT_EQ(st.counters["committing_alone"], 1);
  EXPECT_EQ(st.counters["backup_in_sync"], 0);
  for (int i = 4; i < 10; ++i) {
    c->Commit(res, WriteReq(TxId{0xbac, static_cast<uint64_t>(i)}, {KeyOn(0, 2), KeyOn(1, 2)}));
    EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  }
  // Kill it and start it again: it catches up and counts as in sync again.
  backup->Signal(SIGCONT);
  backup.reset();  // SIGKILL
  backup = std::make_unique<Process>(
      HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "backup", pport));
  ASSERT_TRUE(WaitReady(bport));
  ASSERT_GE(WaitStatus(pport, [](rpc::NodeStatus& s) { return s.counters["backup_in_sync"] == 1; }),
            0);
  EXPECT_EQ(StatusOf(bport).counters["in_sync"], 1);
  TxId tx10{0xbac, 10};
  c->Commit(res, WriteReq(tx10, {KeyOn(0, 2), KeyOn(1, 2)}));
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  EXPECT_GE(StatusOf(bport).counters["replicated_records"], 3);
  // The restarted backup holds tx10's DECISION: once the primary is gone it
  // takes over and answers COMMIT.
  primary.Signal(SIGKILL);
  ASSERT_GE(WaitPrimary(bport), 0);
  Client b(bport);
  ASSERT_TRUE(b.Open());
  EXPECT_EQ(QueryDecisionAt(bport, ToRpc(tx10)), rpc::Decision::COMMIT);
}

// Kill the primary (SIGKILL) with a decision whose COMMIT is not yet
// delivered: the in-sync backup gets a majority of participants to adopt
// epoch 2, re-sends COMMIT at epoch 2, answers QueryDecision, and commits new
// transactions. Failover time (kill -> new primary committing) is printed.
TEST(CoordinatorBinary, KillPrimaryBackupTakesOverAndRedrivesDecisions) {
  FakeCluster fakes(3);
  TempDir dir;
  int pport = FreePort(), bport = FreePort();
  auto primary = std::make_unique<Process>(
      HaArgs(pport, dir.path() + "/c0", fakes.addresses(), "coordinator-0", "primary", bport));
  Process backup(
      HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "backup", pport));
  ASSERT_GE(WaitPrimary(pport), 0);
  ASSERT_GE(
      WaitStatus(pport, [](rpc::NodeStatus& st) { return st.counters["backup_in_sync"] == 1; }), 0);
  EXPECT_EQ(StatusOf(pport).epoch, 1);
  EXPECT_EQ(fakes.at(0).epoch(), 1);

  fakes.at(1).SetRefuseCommits(true);  // phase 2 cannot finish: no END
  TxId tx{0xfa11, 1};
  {
    Client c(pport);
    ASSERT_TRUE(c.Open());
    rpc::CommitResult res;
    c->Commit(res, WriteReq(tx, {KeyOn(0, 3), KeyOn(1, 3)}));
    ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  }
  ASSERT_TRUE(fakes.at(0).WaitCalls("Commit", tx, 1));
  auto killed_at = Clock::now();
  primary.reset();  // SIGKILL
  fakes.at(1).SetRefuseCommits(false);
  // The new primary re-drives the decision at the new epoch.
  ASSERT_TRUE(fakes.at(1).WaitCalls("Commit", tx, 1));
  EXPECT_EQ(fakes.at(1).Calls("Commit", tx).back().epoch, 2);
  // It commits new transactions.
  Client c(bport);
  ASSERT_TRUE(c.Open());
  int64_t failover_ms = -1;
  for (uint64_t i = 2; Clock::now() - killed_at < std::chrono::seconds(10); ++i) {
    rpc::CommitResult res;
    try {
      c->Commit(res, WriteReq(TxId{0xfa11, i}, {KeyOn(0, 3), KeyOn(2, 3)}));
      if (res.outcome == rpc::Outcome::COMMITTED) {
        failover_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed_at).count();
        break;
      }
    } catch (const rpc::DtxError&) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GE(failover_ms, 0);
  std::printf(
      "failover (SIGKILL primary -> backup committing), heartbeat 100 ms, suspect-after "
      "%llu ms: %lld ms\n",
      static_cast<unsigned long long>(kSuspectAfterMsDefault),
      static_cast<long long>(failover_ms));
  rpc::NodeStatus st = StatusOf(bport);
  EXPECT_EQ(st.role, rpc::NodeRole::PRIMARY);
  EXPECT_EQ(st.epoch, 2);
  EXPECT_EQ(st.counters["promotions"], 1);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(fakes.at(i).epoch(), 2) << i;
  EXPECT_EQ(QueryDecisionAt(bport, ToRpc(tx)), rpc::Decision::COMMIT);
  // A repeated commit of the same txid is idempotent: COMMITTED, not run again.
  rpc::CommitResult again;
  c->Commit(again, WriteReq(tx, {KeyOn(0, 3), KeyOn(1, 3)}));
  EXPECT_EQ(again.outcome, rpc::Outcome::COMMITTED);
  EXPECT_EQ(fakes.at(0).Calls("Prepare", tx).size(), 1u);
  // Never heard of: presumed abort.
  EXPECT_EQ(QueryDecisionAt(bport, ToRpc(TxId{0xfa11, 999})), rpc::Decision::ABORT);
  backup.Signal(SIGTERM);
  EXPECT_EQ(backup.Wait(), 0);
}

// Pause the primary past the detection time: the backup promotes; resumed,
// the old primary steps down, and no participant accepts a call of its after
// it adopted the new epoch. The old primary then follows as an in-sync backup.
TEST(CoordinatorBinary, PausedPrimaryStepsDownAfterBackupPromotes) {
  FakeCluster fakes(3);
  TempDir dir;
  int pport = FreePort(), bport = FreePort();
  Process primary(
      HaArgs(pport, dir.path() + "/c0", fakes.addresses(), "coordinator-0", "primary", bport));
  Process backup(
      HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "backup", pport));
  ASSERT_GE(WaitPrimary(pport), 0);
  ASSERT_GE(
      WaitStatus(pport, [](rpc::NodeStatus& st) { return st.counters["backup_in_sync"] == 1; }), 0);
  {
    Client c(pport);
    ASSERT_TRUE(c.Open());
    rpc::CommitResult res;
    c->Commit(res, WriteReq(TxId{0x57, 1}, {KeyOn(0, 3), KeyOn(1, 3)}));
    ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  }
  primary.Signal(SIGSTOP);
  ASSERT_GE(WaitPrimary(bport), 0);
  EXPECT_EQ(StatusOf(bport).epoch, 2);
  primary.Signal(SIGCONT);
  ASSERT_GE(
      WaitStatus(pport, [](const rpc::NodeStatus& st) { return st.role == rpc::NodeRole::BACKUP; }),
      0);
  // It knew it had been paused (stopped for at least the backup's detection
  // window): its detectors started over instead of suspecting on silence it
  // slept through (HaCore::Tick).
  EXPECT_GE(StatusOf(pport).counters["own_pauses"], 1);
  {
    Client old(pport);
    ASSERT_TRUE(old.Open());
    rpc::CommitResult res;
    try {
      old->Commit(res, WriteReq(TxId{0x57, 2}, {KeyOn(0, 3), KeyOn(1, 3)}));
      ADD_FAILURE() << "the deposed primary accepted a commit";
    } catch (const rpc::DtxError& e) {
      EXPECT_EQ(e.code, rpc::ErrorCode::NOT_PRIMARY);
    }
  }
  // The new primary re-syncs the old one as its backup.
  ASSERT_GE(
      WaitStatus(bport, [](rpc::NodeStatus& st) { return st.counters["backup_in_sync"] == 1; }), 0);
  // Commits go on - at whichever coordinator is primary, as the bindings
  // follow it. A single Commit at bport failed CI once (2026-12-07: UNKNOWN,
  // "epoch 3 is held by another coordinator"; not reproduced in 15 runs).
  // Most likely the resumed primary, suspecting its backup on waking before
  // it read that it was deposed, had sent AdoptEpoch for a fencing epoch of
  // its own, granted after its step-down: the new primary then steps down
  // too. A liveness hiccup, not a safety one: the same txid, retried, commits.
  rpc::CommitResult res;
  std::string last;
  rpc::CommitRequest req = WriteReq(TxId{0x57, 3}, {KeyOn(0, 3), KeyOn(1, 3)});
  for (int attempt = 0; attempt < 100 && res.outcome != rpc::Outcome::COMMITTED; ++attempt) {
    if (attempt > 0) {
      req.__set_is_retry(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    Client c(attempt % 2 == 0 ? bport : pport);
    if (!c.Open()) continue;
    try {
      c->Commit(res, req);
      last = res.detail;
    } catch (const rpc::DtxError& e) {
      last = e.message;
    } catch (const apache::thrift::TException& e) {
      last = e.what();
    }
  }
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED) << last;
  // Fencing: every call a participant accepted after adopting epoch 2 is
  // stamped 2 or later.
  for (size_t i = 0; i < 3; ++i) {
    bool adopted = false;
    for (const auto& call : fakes.at(i).AllCalls()) {
      if (call.method.rfind("Refused", 0) == 0) continue;
      if (call.epoch >= 2) adopted = true;
      if (adopted) {
        EXPECT_GE(call.epoch, 2) << "participant " << i << " accepted " << call.method;
      }
    }
  }
  EXPECT_GE(StatusOf(pport).counters["step_downs"], 1);
  primary.Signal(SIGTERM);
  backup.Signal(SIGTERM);
  EXPECT_EQ(primary.Wait(), 0);
  EXPECT_EQ(backup.Wait(), 0);
}

// A backup that is not in sync never promotes: start the backup alone (its
// primary never existed) - it stays backup and no participant adopts a
// newer epoch.
TEST(CoordinatorBinary, BackupThatIsNotInSyncNeverPromotes) {
  FakeCluster fakes(3);
  TempDir dir;
  int pport = FreePort(), bport = FreePort();
  Process backup(
      HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "backup", pport));
  ASSERT_TRUE(WaitReady(bport));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  rpc::NodeStatus st = StatusOf(bport);
  EXPECT_EQ(st.role, rpc::NodeRole::BACKUP);
  EXPECT_EQ(st.counters["in_sync"], 0);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(fakes.at(i).adoptions().empty());
}

// No false suspicions at full load: 32 client threads against a primary with
// a backup, for DTX_LOAD_SECONDS (default 5; the report's figure used 60).
// Counts every transition to "suspected" on both coordinators.
TEST(CoordinatorBinary, NoFalseSuspicionsAtFullLoad) {
  FakeCluster fakes(3);
  TempDir dir;
  int pport = FreePort(), bport = FreePort();
  std::vector<std::string> pargs =
      HaArgs(pport, dir.path() + "/c0", fakes.addresses(), "coordinator-0", "primary", bport);
  pargs[pargs.size() - 7] = "info";
  std::vector<std::string> bargs =
      HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "backup", pport);
  bargs[bargs.size() - 7] = "info";
  if (const char* d = std::getenv("DTX_TEST_DETECTOR")) {  // timeout (default) or phi
    pargs.insert(pargs.end(), {"--failure-detector", d});
    bargs.insert(bargs.end(), {"--failure-detector", d});
  }
  Process primary(pargs);
  Process backup(bargs);
  ASSERT_GE(WaitPrimary(pport), 0);
  ASSERT_GE(WaitStatus(pport, [](rpc::NodeStatus& s) { return s.counters["backup_in_sync"] == 1; }),
            0);
  const char* env = std::getenv("DTX_LOAD_SECONDS");
  const int seconds = env != nullptr ? std::max(1, std::atoi(env)) : 5;
  constexpr int kThreads = 32;
  std::atomic<uint64_t> committed{0}, failed{0};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Client c(pport);
      if (!c.Open()) {
        ++failed;
        return;
      }
      for (uint64_t i = 0; Clock::now() - start < std::chrono::seconds(seconds); ++i) {
        rpc::CommitResult res;
        try {
          c->Commit(res, WriteReq(TxId{static_cast<uint64_t>(7000 + t), i},
                                  {KeyOn(0, 3), KeyOn(1, 3), KeyOn(2, 3)}));
          if (res.outcome == rpc::Outcome::COMMITTED) ++committed;
          else ++failed;
        } catch (const std::exception&) {
          ++failed;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  rpc::NodeStatus ps = StatusOf(pport), bs = StatusOf(bport);
  std::printf(
      "full load %d s, %d clients, 3-participant commits with an in-sync backup: %.0f/s; "
      "false suspicions: primary %lld (participants) + %lld (peer), backup %lld "
      "(participants) + %lld (peer)\n",
      seconds, kThreads, committed / secs,
      static_cast<long long>(ps.counters["participant_suspicions"]),
      static_cast<long long>(ps.counters["peer_suspicions"]),
      static_cast<long long>(bs.counters["participant_suspicions"]),
      static_cast<long long>(bs.counters["peer_suspicions"]));
  EXPECT_EQ(failed.load(), 0u);
  EXPECT_EQ(ps.counters["participant_suspicions"], 0);
  EXPECT_EQ(ps.counters["peer_suspicions"], 0);
  EXPECT_EQ(bs.counters["participant_suspicions"], 0);
  EXPECT_EQ(bs.counters["peer_suspicions"], 0);
  EXPECT_EQ(ps.counters["backup_in_sync"], 1);
}

// A TCP relay on loopback standing for a network link: it accepts on its own
// port and pipes every connection to `target_port`. Cut() drops every
// connection and refuses new ones (a partition of that link, both ways);
// Heal() accepts again. Used instead of network namespaces, which need
// privileges CI does not have.
class Relay {
 public:
  explicit Relay(int target_port) : target_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    EXPECT_EQ(::listen(listen_fd_, 64), 0);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~Relay() {
    stop_ = true;
    acceptor_.join();
    for (auto& t : pumps_) t.join();
    ::close(listen_fd_);
  }
  int port() const { return port_; }
  void Cut() {
    cut_ = true;
    ++cut_generation_;
  }
  void Heal() { cut_ = false; }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      if (cut_) {
        ::close(fd);
        continue;
      }
      int out = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(target_));
      if (::connect(out, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(fd);
        ::close(out);
        continue;
      }
      int gen = cut_generation_;
      pumps_.emplace_back([this, fd, out, gen] { Pump(fd, out, gen); });
    }
  }
  void Pump(int a, int b, int gen) {
    char buf[65536];
    while (!stop_ && !cut_ && cut_generation_ == gen) {
      pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
      if (::poll(p, 2, 20) <= 0) continue;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof(buf));
        if (n <= 0) {
          done = true;
          break;
        }
        int to = i == 0 ? b : a;
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
          if (w <= 0) {
            done = true;
            break;
          }
          off += w;
        }
      }
      if (done) break;
    }
    ::close(a);
    ::close(b);
  }

  int target_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  std::atomic<int> cut_generation_{0};
  std::thread acceptor_;
  std::vector<std::thread> pumps_;  // acceptor thread only, joined at the end
};

// Every epoch was granted (AdoptEpoch) to one coordinator only, across all
// participants.
void ExpectOneOwnerPerEpoch(FakeCluster& fakes, size_t n) {
  std::map<int64_t, std::string> owner;
  for (size_t i = 0; i < n; ++i) {
    for (const auto& [epoch, who] : fakes.at(i).adoptions()) {
      auto [it, inserted] = owner.emplace(epoch, who);
      EXPECT_EQ(it->second, who) << "epoch " << epoch << " granted to two coordinators";
    }
  }
}

// Partition the primary from the backup (both still reach the participants):
// one of them ends up the only primary; the other refuses commits; no epoch
// is granted to two coordinators; after healing, the survivor re-syncs the
// other as its backup.
//
// Plaintext (--insecure), the one test here that is: each coordinator reaches
// the other through a relay, so the address it is configured with for its
// peer (the relay's) is not the address the peer claims in Heartbeat and
// Replicate (its own listener's), which the secure access policy refuses
// (node/access.h RequirePeerClaiming). The same partition with TLS on:
// tests/ha_netns_test.cc, with network namespaces instead of relays.
TEST(CoordinatorBinary, PrimaryBackupPartitionNeverGivesTwoPrimariesInOneEpoch) {
  FakeCluster fakes(3, /*tls=*/false);
  TempDir dir;
  int pport = FreePort(), bport = FreePort();
  {
    std::lock_guard<std::mutex> lock(plaintext_mu);
    plaintext_ports.insert({pport, bport});
  }
  Relay to_backup(PeerPort(bport)), to_primary(PeerPort(pport));
  std::vector<std::string> pargs = Args(pport, dir.path() + "/c0", fakes.addresses());
  pargs[5] = "--insecure";
  pargs.erase(pargs.begin() + 6);  // the --certs-dir directory
  pargs.insert(pargs.end(), {"--role", "primary", "--peer",
                             "coordinator-1=127.0.0.1:" + std::to_string(to_backup.port())});
  std::vector<std::string> bargs = Args(bport, dir.path() + "/c1", fakes.addresses());
  bargs[1] = "coordinator-1";
  bargs[5] = "--insecure";
  bargs.erase(bargs.begin() + 6);
  bargs.insert(bargs.end(), {"--role", "backup", "--peer",
                             "coordinator-0=127.0.0.1:" + std::to_string(to_primary.port())});
  Process primary(pargs);
  Process backup(bargs);
  ASSERT_GE(WaitPrimary(pport), 0);
  ASSERT_GE(WaitStatus(pport, [](rpc::NodeStatus& s) { return s.counters["backup_in_sync"] == 1; }),
            0);
  // Load while the partition starts, so the old primary has decisions in flight.
  std::atomic<bool> stop{false};
  std::thread load([&] {
    for (uint64_t i = 0; !stop; ++i) {
      Client c(pport, 2000);
      if (!c.Open()) continue;
      try {
        rpc::CommitResult res;
        c->Commit(res, WriteReq(TxId{0x9a7, i}, {KeyOn(0, 3), KeyOn(1, 3)}));
      } catch (const std::exception&) {
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  to_backup.Cut();
  to_primary.Cut();
  // Settles: exactly one established primary, at epoch 2.
  auto one_primary = [&] {
    rpc::NodeStatus a = StatusOf(pport), b = StatusOf(bport);
    int primaries = (a.role == rpc::NodeRole::PRIMARY) + (b.role == rpc::NodeRole::PRIMARY);
    return primaries == 1 && (a.role == rpc::NodeRole::PRIMARY ? a.epoch : b.epoch) == 2 &&
           (a.role == rpc::NodeRole::BACKUP || b.role == rpc::NodeRole::BACKUP);
  };
  EXPECT_TRUE(WaitFor(one_primary, std::chrono::seconds(10)));
  stop = true;
  load.join();
  rpc::NodeStatus a = StatusOf(pport), b = StatusOf(bport);
  std::printf(
      "partition primary|backup: coordinator-0 %s epoch %lld, coordinator-1 %s epoch %lld\n",
      NodeRoleName(a.role), static_cast<long long>(a.epoch), NodeRoleName(b.role),
      static_cast<long long>(b.epoch));
  ExpectOneOwnerPerEpoch(fakes, 3);
  const int winner = a.role == rpc::NodeRole::PRIMARY ? pport : bport;
  const int loser = winner == pport ? bport : pport;
  {
    Client c(loser);
    ASSERT_TRUE(c.Open());
    rpc::CommitResult res;
    try {
      c->Commit(res, WriteReq(TxId{0x9a7, 1u << 20}, {KeyOn(0, 3), KeyOn(1, 3)}));
      ADD_FAILURE() << "the coordinator that is not primary accepted a commit";
    } catch (const rpc::DtxError& e) {
      EXPECT_EQ(e.code, rpc::ErrorCode::NOT_PRIMARY);
    }
    Client w(winner);
    ASSERT_TRUE(w.Open());
    // Status may show epoch 2 a moment before its EPOCH record is durable;
    // until then commits are refused UNAVAILABLE ("coordinator is starting").
    for (int attempt = 0;; ++attempt) {
      try {
        w->Commit(res, WriteReq(TxId{0x9a7, (1u << 20) + 1}, {KeyOn(0, 3), KeyOn(1, 3)}));
        break;
      } catch (const rpc::DtxError& e) {
        if (e.code != rpc::ErrorCode::UNAVAILABLE || attempt >= 100) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  }
  // Heal: the survivor re-syncs the other.
  to_backup.Heal();
  to_primary.Heal();
  EXPECT_GE(
      WaitStatus(winner, [](rpc::NodeStatus& s) { return s.counters["backup_in_sync"] == 1; }), 0);
  ExpectOneOwnerPerEpoch(fakes, 3);
}

// Cut the backup off from the participants (it still reaches the primary),
// then kill the primary: the backup cannot get a majority for epoch 2 and
// does not promote; once its links heal, it does.
TEST(CoordinatorBinary, BackupCutOffFromParticipantsCannotPromoteUntilHealed) {
  FakeCluster fakes(3);
  TempDir dir;
  int pport = FreePort(), bport = FreePort();
  std::vector<std::unique_ptr<Relay>> links;
  std::string via;
  for (size_t i = 0; i < 3; ++i) {
    std::string a = fakes.address(i);
    links.push_back(std::make_unique<Relay>(ParseHostPort(a)->port));
    via += (via.empty() ? "" : ",") + FakeCluster::Name(i) +
           "=127.0.0.1:" + std::to_string(links.back()->port());
  }
  Process primary(
      HaArgs(pport, dir.path() + "/c0", fakes.addresses(), "coordinator-0", "primary", bport));
  // The backup reaches the participants only through the relays.
  auto backup = std::make_unique<Process>(
      HaArgs(bport, dir.path() + "/c1", via, "coordinator-1", "backup", pport));
  ASSERT_GE(WaitPrimary(pport), 0);
  ASSERT_GE(WaitStatus(pport, [](rpc::NodeStatus& s) { return s.counters["backup_in_sync"] == 1; }),
            0);
  for (auto& l : links) l->Cut();
  EXPECT_GE(WaitStatus(bport,
                       [](rpc::NodeStatus& s) {
                         for (const auto& p : s.peers) {
                           if (p.name.rfind("participant", 0) == 0 && !p.suspected) return false;
                         }
                         return true;
                       }),
            0)
      << "the backup should suspect every participant";
  primary.Signal(SIGKILL);
  EXPECT_EQ(primary.Wait(), 128 + SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  rpc::NodeStatus st = StatusOf(bport);
  EXPECT_EQ(st.role, rpc::NodeRole::BACKUP) << "promoted without a majority of participants";
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(fakes.at(i).epoch(), 1);
  for (auto& l : links) l->Heal();
  EXPECT_GE(WaitPrimary(bport), 0);
  EXPECT_EQ(StatusOf(bport).epoch, 2);
  ExpectOneOwnerPerEpoch(fakes, 3);
}

// Both coordinators down; the one restarted as primary has the older log
// (its peer went on alone at a newer epoch): it steps down, and the other,
// restarted as backup, sees both are backups and takes over because its log
// is the newest.
TEST(CoordinatorBinary, BothBackupsTheNewestLogTakesOver) {
  FakeCluster fakes(3);
  TempDir dir;
  int pport = FreePort(), bport = FreePort();
  auto c0 = std::make_unique<Process>(
      HaArgs(pport, dir.path() + "/c0", fakes.addresses(), "coordinator-0", "primary", bport));
  auto c1 = std::make_unique<Process>(
      HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "backup", pport));
  ASSERT_GE(WaitPrimary(pport), 0);
  ASSERT_GE(WaitStatus(pport, [](rpc::NodeStatus& s) { return s.counters["backup_in_sync"] == 1; }),
            0);
  c1.reset();  // SIGKILL the backup: coordinator-0 fences it out at epoch 2
  TxId tx{0xb0b, 1};
  {
    Client c(pport);
    ASSERT_TRUE(c.Open());
    rpc::CommitResult res;
    c->Commit(res, WriteReq(tx, {KeyOn(0, 3), KeyOn(1, 3)}));
    ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED);
  }
  EXPECT_EQ(StatusOf(pport).epoch, 2);
  c0.reset();  // SIGKILL: both down; coordinator-0's log is at epoch 2, coordinator-1's at 1
  c1 = std::make_unique<Process>(
      HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "primary", pport));
  ASSERT_TRUE(WaitReady(bport));
  c0 = std::make_unique<Process>(
      HaArgs(pport, dir.path() + "/c0", fakes.addresses(), "coordinator-0", "backup", bport));
  ASSERT_GE(WaitPrimary(pport, std::chrono::seconds(15)), 0) << "nobody took over";
  EXPECT_EQ(StatusOf(bport).role, rpc::NodeRole::BACKUP);
  EXPECT_EQ(StatusOf(pport).epoch, 3);
  Client c(pport);
  ASSERT_TRUE(c.Open());
  EXPECT_EQ(QueryDecisionAt(pport, ToRpc(tx)), rpc::Decision::COMMIT);
  ExpectOneOwnerPerEpoch(fakes, 3);
}

// Throughput of two-participant commits with and without a backup (printed).
TEST(CoordinatorBinary, ThroughputWithAndWithoutBackup) {
  auto run = [&](bool with_backup) -> double {
    // Fresh participants: a fresh coordinator pair cannot take over epochs
    // that another coordinator left at the participants.
    FakeCluster fakes(2);
    TempDir dir;
    int pport = FreePort(), bport = FreePort();
    std::vector<std::string> pargs = with_backup
                                         ? HaArgs(pport, dir.path() + "/c0", fakes.addresses(),
                                                  "coordinator-0", "primary", bport)
                                         : Args(pport, dir.path() + "/c0", fakes.addresses());
    pargs[pargs.size() - (with_backup ? 7 : 1)] = "info";
    Process primary(pargs);
    std::unique_ptr<Process> backup;
    if (with_backup) {
      std::vector<std::string> bargs =
          HaArgs(bport, dir.path() + "/c1", fakes.addresses(), "coordinator-1", "backup", pport);
      bargs[bargs.size() - 7] = "info";
      backup = std::make_unique<Process>(bargs);
      EXPECT_TRUE(WaitReady(bport));
    }
    EXPECT_TRUE(WaitReady(pport));
    if (with_backup) {
      EXPECT_GE(
          WaitStatus(pport, [](rpc::NodeStatus& s) { return s.counters["backup_in_sync"] == 1; }),
          0);
    }
    constexpr int kThreads = 16;
    const auto duration = std::chrono::seconds(2);
    std::atomic<uint64_t> committed{0}, failed{0};
    std::vector<std::thread> threads;
    auto start = Clock::now();
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Client c(pport);
        if (!c.Open()) {
          ++failed;
          return;
        }
        for (uint64_t i = 0; Clock::now() - start < duration; ++i) {
          rpc::CommitResult res;
          try {
            c->Commit(res,
                      WriteReq(TxId{static_cast<uint64_t>(with_backup ? 9000 + t : 8000 + t), i},
                               {KeyOn(0, 2), KeyOn(1, 2)}));
            if (res.outcome == rpc::Outcome::COMMITTED) ++committed;
            else ++failed;
          } catch (const std::exception&) {
            ++failed;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_EQ(failed.load(), 0u);
    if (with_backup) {
      EXPECT_EQ(StatusOf(pport).counters["backup_in_sync"], 1);
    }
    return committed / secs;
  };
  double alone = run(false);
  double with_backup = run(true);
  std::printf(
      "throughput, 16 clients, 2-participant commits (fake participants): alone %.0f/s, "
      "with an in-sync backup %.0f/s (%.0f%%)\n",
      alone, with_backup, 100.0 * with_backup / alone);
  EXPECT_GT(with_backup, 50);
}
}  // namespace
}  // namespace dtx

namespace dtx {
namespace {

// A failed fdatasync is fail-stop: the node exits (status 74,
// kSyncFailedExitCode: its supervisor leaves it down) instead of
// telling anyone the outcome, and after a restart it answers consistently
// with what it does (the DECISION was written but maybe not synced, so
// either outcome is allowed - but only one).
TEST(CoordinatorBinary, WalSyncFailureStopsTheNode) {
  FakeCluster fakes(2);
  TempDir dir;
  int port = FreePort();
  auto p = std::make_unique<Process>(Args(port, dir.path() + "/n", fakes.addresses()));
  ASSERT_TRUE(WaitReady(port));
  TxId tx{0xbad, 1};
  {
    Client c(port);
    ASSERT_TRUE(c.Open());
    AdminClient admin(AdminPort(dir.path() + "/n"));
    ASSERT_TRUE(admin.Open());
    admin->SetFailpoint("wal.before_sync", "error");
    rpc::CommitResult res;
    EXPECT_ANY_THROW(c->Commit(res, WriteReq(tx, {KeyOn(0, 2), KeyOn(1, 2)})))
        << "no outcome may be told when the DECISION did not sync";
  }
  EXPECT_EQ(p->Wait(), kSyncFailedExitCode);
  EXPECT_TRUE(fakes.at(0).Calls("Commit", tx).empty());
  EXPECT_TRUE(fakes.at(1).Calls("Commit", tx).empty());

  p = std::make_unique<Process>(Args(port, dir.path() + "/n", fakes.addresses()));
  ASSERT_TRUE(WaitReady(port));
  Client c(port);
  ASSERT_TRUE(c.Open());
  rpc::Decision::type d = QueryDecisionAt(port, ToRpc(tx));
  if (d == rpc::Decision::COMMIT) {
    EXPECT_TRUE(fakes.at(0).WaitCalls("Commit", tx, 1));
    EXPECT_TRUE(fakes.at(1).WaitCalls("Commit", tx, 1));
  } else {
    EXPECT_EQ(d, rpc::Decision::ABORT);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_TRUE(fakes.at(0).Calls("Commit", tx).empty());
  }
}

// The same when the sync fails while the node starts (its fresh log's EPOCH
// record): 74, not the 1 of any other start-up failure.
TEST(CoordinatorBinary, WalSyncFailureAtStartExitsWithTheSyncFailedStatus) {
  FakeCluster fakes(2);
  TempDir dir;
  Process p(Args(FreePort(), dir.path() + "/n", fakes.addresses()), "wal.before_sync=error");
  EXPECT_EQ(p.Wait(), kSyncFailedExitCode);
}

}  // namespace
}  // namespace dtx
