// Smoke test of the dtx-participant binary: starts it on a free loopback port
// in a temporary directory, with TLS (--certs-dir, certificates made once per
// test binary), and calls it with the stock synchronous Thrift client over
// TLS (tools::StockConnection): as a client on its client listener, as
// coordinator-0 on its peer listener, as the operator on its admin listener.
// Every process started here is killed by pid in TearDown, even when a check
// failed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <thrift/transport/TTransportException.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "Admin.h"
#include "Coordinator.h"
#include "CoordinatorPeer.h"
#include "Participant.h"
#include "ParticipantPeer.h"
#include "common/address.h"
#include "common/event_loop.h"
#include "common/rpc_server.h"
#include "common/types.h"
#include "tests/harness.h"
#include "tests/metrics_scrape.h"
#include "tools/admin_client.h"

namespace dtx::participant {
namespace {

using apache::thrift::TException;
using apache::thrift::transport::TTransportException;

// The cluster CA and every certificate, made once per test binary.
const testing::TestTls& Tls() { return testing::SharedTestTls(); }

constexpr int kReadyTimeoutMs = 15000;
constexpr int kExitTimeoutMs = 10000;

using testing::FreePort;

// A connection to participant-0 presenting `as`'s certificate; throws
// TTransportException (with the reason) if it cannot be opened.
template <typename ThriftClient>
class BasicClient {
 public:
  BasicClient(int port, const std::string& as) {
    auto c = tools::StockConnection<ThriftClient>::Open(
        "127.0.0.1:" + std::to_string(port), {.connect_timeout_ms = 1000, .recv_timeout_ms = 5000},
        Tls().Connect(as, "participant-0"));
    if (!c.ok()) throw TTransportException(c.status().ToString());
    conn_ = std::move(*c);
  }
  ThriftClient* operator->() { return &conn_->client(); }

 private:
  std::unique_ptr<tools::StockConnection<ThriftClient>> conn_;
};
// The peer listener's port of the participant whose client listener is on
// `port`: picked once per client port, passed as --peer-listen by Args().
int PeerPort(int port) {
  static std::map<int, int> ports;  // the test's thread only
  auto it = ports.find(port);
  if (it == ports.end()) it = ports.emplace(port, FreePort()).first;
  return it->second;
}

// A client of both listeners of one participant: Read and GetStatus on the
// client listener (Participant), the 2PC calls on the peer listener
// (ParticipantPeer), as a client and a coordinator would.
class Client {
 public:
  explicit Client(int port)
      : client_(port, tools::kClientCertName), peer_(PeerPort(port), "coordinator-0") {}
  Client* operator->() { return this; }
  void Read(rpc::ReadResult& r, const std::string& key) { client_->Read(r, key); }
  void GetStatus(rpc::NodeStatus& st) { client_->GetStatus(st); }
  void Prepare(rpc::PrepareResponse& vote, const rpc::PrepareRequest& req) {
    peer_->Prepare(vote, req);
  }
  void Commit(const rpc::TxId& txid, rpc::Epoch epoch) { peer_->Commit(txid, epoch); }
  // An unstamped ABORT: these tests prepare unstamped (docs/design.md "Attempts").
  void Abort(const rpc::TxId& txid, rpc::Epoch epoch) { peer_->Abort(txid, epoch, rpc::Attempt()); }

 private:
  BasicClient<rpc::ParticipantClient> client_;
  BasicClient<rpc::ParticipantPeerClient> peer_;
};
// The node's admin listener (SetFailpoint, ListInDoubt), as the operator.
struct AdminClient : BasicClient<rpc::AdminClient> {
  explicit AdminClient(int port) : BasicClient(port, tools::kAdminCertName) {}
};

rpc::TxId Tx(int64_t lo) {
  rpc::TxId t;
  t.hi = 0x5eed;
  t.lo = lo;
  return t;
}

rpc::PrepareRequest Put(const rpc::TxId& txid, const std::string& key, const std::string& value,
                        bool one_phase) {
  rpc::PrepareRequest req;
  req.txid = txid;
  req.epoch = 1;
  rpc::WriteItem w;
  w.key = key;
  w.__set_value(value);
  req.writes.push_back(w);
  req.one_phase = one_phase;
  req.read_only_tx = false;
  return req;
}

// A stand-in coordinator's peer listener answering QueryDecision with a set
// decision.
class FakeCoordinator : public rpc::CoordinatorPeerCobSvIf {
 public:
  using Exn = std::function<void(apache::thrift::TDelayedException*)>;
  std::atomic<int> answer{rpc::Decision::UNKNOWN};
  std::atomic<int> queries{0};
  void Replicate(std::function<void(const rpc::ReplicateResponse&)> cob, Exn,
                 const rpc::ReplicateRequest&) override {
    cob(rpc::ReplicateResponse());
  }
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob, Exn,
                 const rpc::HeartbeatRequest&) override {
    cob(rpc::HeartbeatResponse());
  }
  void QueryDecision(std::function<void(const rpc::Decision::type&)> cob, Exn, const rpc::TxId&,
                     const std::string&, const rpc::Attempt&) override {
    ++queries;
    cob(static_cast<rpc::Decision::type>(answer.load()));
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    cob(rpc::NodeStatus());
  }
};

class ParticipantSmokeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dtx-participant-smoke-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    coordinator_port_ = FreePort();  // nothing listens there: QueryDecision fails
    ASSERT_GT(coordinator_port_, 0);
  }
  void TearDown() override {
    for (pid_t pid : pids_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // The admin listener's port (NODEDIR/admin.addr, written before the node
  // serves); 0 if unreadable.
  int AdminPort() const {
    std::ifstream in(dir_ + "/node/admin.addr");
    std::string line;
    std::getline(in, line);
    auto hp = ParseHostPort(line);
    return hp.ok() ? hp->port : 0;
  }

  std::vector<std::string> Args(int port) const {
    const std::string coordinator = "127.0.0.1:" + std::to_string(coordinator_port_);
    std::vector<std::string> a = {"--name",         "participant-0",
                                  "--listen",       "127.0.0.1:" + std::to_string(port),
                                  "--dir",          dir_ + "/node",
                                  "--coordinator",  coordinator,
                                  "--coordinators", "coordinator-0=" + coordinator,
                                  "--peer-listen",  "127.0.0.1:" + std::to_string(PeerPort(port)),
                                  "--certs-dir",    Tls().certs_dir()};
    if (enable_failpoints_) a.push_back("--enable-failpoints");
    a.insert(a.end(), extra_args_.begin(), extra_args_.end());
    return a;
  }
  std::vector<std::string> extra_args_;
  bool enable_failpoints_ = true;

  pid_t Spawn(const std::vector<std::string>& args, const std::string& failpoints = "") {
    pid_t pid = ::fork();
    if (pid == 0) {
      // Dies with the test: a test that aborts (a failed check in a thread)
      // must not leave nodes running.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::vector<char*> argv;
      std::string bin = DTX_PARTICIPANT_BIN;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      if (failpoints.empty()) {
        ::unsetenv("DTX_FAILPOINTS");
      } else {
        ::setenv("DTX_FAILPOINTS", failpoints.c_str(), 1);
      }
      int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0) ::dup2(devnull, 2);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    if (pid > 0) pids_.push_back(pid);
    return pid;
  }

  // Waits for exit; returns the exit code, 128+signal, or -1 on timeout.
  int WaitExit(pid_t pid, int timeout_ms = kExitTimeoutMs) {
    for (int waited = 0; waited < timeout_ms; waited += 10) {
      int status = 0;
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        std::erase(pids_, pid);
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

  int RunToExit(const std::vector<std::string>& args, const std::string& failpoints = "") {
    pid_t pid = Spawn(args, failpoints);
    return WaitExit(pid);
  }

  // Starts the node and waits until GetStatus answers.
  void StartNode(int port, const std::string& failpoints = "") {
    pid_ = Spawn(Args(port), failpoints);
    ASSERT_GT(pid_, 0);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kReadyTimeoutMs);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      ASSERT_EQ(::waitpid(pid_, &status, WNOHANG), 0)
          << "dtx-participant exited early; see " << dir_ << "/node/node.log";
      try {
        Client c(port);
        rpc::NodeStatus st;
        c->GetStatus(st);
        return;
      } catch (const TException&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    FAIL() << "dtx-participant not ready after " << kReadyTimeoutMs << " ms";
  }

  void KillNode() {
    ASSERT_EQ(::kill(pid_, SIGKILL), 0);
    EXPECT_EQ(WaitExit(pid_), 128 + SIGKILL);
  }

  std::string dir_;
  int coordinator_port_ = 0;
  pid_t pid_ = -1;
  std::vector<pid_t> pids_;
};

TEST_F(ParticipantSmokeTest, BadFlagsExitWithTwo) {
  int port = FreePort();
  EXPECT_EQ(RunToExit({}), 2);
  EXPECT_EQ(RunToExit({"--bogus"}), 2);
  auto args = Args(port);
  args.push_back("--no-such-flag");
  EXPECT_EQ(RunToExit(args), 2);
  EXPECT_EQ(RunToExit({"--name", "p", "--listen", "nohostport", "--dir", dir_ + "/x",
                       "--coordinator", "127.0.0.1:1", "--insecure"}),
            2);
  EXPECT_EQ(RunToExit({"--name", "p", "--listen", "127.0.0.1:1", "--dir", dir_ + "/x",
                       "--coordinator", "bad", "--insecure"}),
            2);
  // Transport security: exactly one of --certs-dir and --insecure; with TLS
  // every coordinator named, --coordinator among them.
  const std::vector<std::string> base = {"--name", "p",         "--listen",      "127.0.0.1:1",
                                         "--dir",  dir_ + "/x", "--coordinator", "127.0.0.1:1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  EXPECT_EQ(RunToExit(base), 2) << "neither --certs-dir nor --insecure";
  EXPECT_EQ(RunToExit(with({"--insecure", "--certs-dir", dir_})), 2) << "both";
  EXPECT_EQ(RunToExit(with({"--certs-dir", dir_, "--coordinators", "127.0.0.1:1"})), 2)
      << "a bare coordinator with TLS";
  EXPECT_EQ(RunToExit(with({"--certs-dir", dir_, "--coordinators", "coordinator-0=127.0.0.1:2"})),
            2)
      << "--coordinator not among the named coordinators";
  EXPECT_EQ(RunToExit(with(
                {"--certs-dir", dir_ + "/none", "--coordinators", "coordinator-0=127.0.0.1:1"})),
            1)
      << "no certificate files";
  auto level = Args(port);
  level.insert(level.end(), {"--log-level", "loud"});
  EXPECT_EQ(RunToExit(level), 2);
  EXPECT_EQ(RunToExit(Args(port), "no.such.point=crash"), 2);
  EXPECT_EQ(RunToExit(Args(port), "participant.prepare.before_log=explode"), 2);
}

TEST_F(ParticipantSmokeTest, OnePhaseCommitIsReadBackAndSurvivesSigkill) {
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  rpc::ReadResult before;
  {
    Client c(port);
    c->Read(before, "k");
    EXPECT_FALSE(before.found);
    EXPECT_EQ(before.version, 0);

    rpc::PrepareResponse vote;
    c->Prepare(vote, Put(Tx(1), "k", "hello", /*one_phase=*/true));
    EXPECT_EQ(vote.vote, rpc::Vote::YES);

    c->Read(before, "k");
    EXPECT_TRUE(before.found);
    EXPECT_EQ(before.value, "hello");
    EXPECT_GT(before.version, 0);

    rpc::NodeStatus st;
    c->GetStatus(st);
    EXPECT_EQ(st.name, "participant-0");
    EXPECT_EQ(st.role, rpc::NodeRole::PARTICIPANT);
    EXPECT_EQ(st.epoch, 1);
    EXPECT_GE(st.durable_lsn, 2);  // EPOCH + COMMIT
  }
  ASSERT_NO_FATAL_FAILURE(KillNode());
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  Client c(port);
  rpc::ReadResult after;
  c->Read(after, "k");
  EXPECT_TRUE(after.found);
  EXPECT_EQ(after.value, "hello");
  EXPECT_EQ(after.version, before.version);
  rpc::NodeStatus st;
  c->GetStatus(st);
  EXPECT_EQ(st.epoch, 1) << "the epoch survives a restart";
}

TEST_F(ParticipantSmokeTest, BadInputGetsAClearDtxError) {
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  Client c(port);
  rpc::ReadResult r;
  try {
    c->Read(r, "");
    ADD_FAILURE() << "empty key accepted";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::BAD_ARGUMENT);
    EXPECT_NE(e.message.find("empty key"), std::string::npos) << e.message;
  }
  rpc::PrepareResponse vote;
  try {
    c->Prepare(vote, Put(Tx(2), "k", std::string(kValueBytesMax + 1, 'v'), true));
    ADD_FAILURE() << "oversized value accepted";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::BAD_ARGUMENT);
    EXPECT_NE(e.message.find("kValueBytesMax"), std::string::npos) << e.message;
  }
  auto req = Put(Tx(3), "k", "v", true);
  req.epoch = 5;
  c->Prepare(vote, req);
  EXPECT_EQ(vote.vote, rpc::Vote::YES);
  try {
    c->Commit(Tx(4), 4);
    ADD_FAILURE() << "stale epoch accepted";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::STALE_EPOCH);
  }
  // An epoch more than kEpochJumpMax ahead (common/types.h): refused, and
  // the participant's epoch stays where it was.
  try {
    c->Commit(Tx(4), 1'000'000'000'000'000);
    ADD_FAILURE() << "absurd epoch accepted";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::BAD_ARGUMENT);
    EXPECT_NE(e.message.find("kEpochJumpMax"), std::string::npos) << e.message;
  }
  rpc::NodeStatus st;
  c->GetStatus(st);
  EXPECT_EQ(st.epoch, 5);
  try {
    AdminClient(AdminPort())->SetFailpoint("no.such.point", "crash");
    ADD_FAILURE() << "unknown failpoint accepted";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::BAD_ARGUMENT);
  }
}

TEST_F(ParticipantSmokeTest, PreparedTransactionIsInDoubtAfterSigkillUntilCommitted) {
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  {
    Client c(port);
    rpc::PrepareResponse vote;
    c->Prepare(vote, Put(Tx(10), "d", "decided", /*one_phase=*/false));
    EXPECT_EQ(vote.vote, rpc::Vote::YES);
  }
  ASSERT_NO_FATAL_FAILURE(KillNode());
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  Client c(port);
  std::vector<rpc::InDoubtTx> doubt;
  AdminClient(AdminPort())->ListInDoubt(doubt);
  ASSERT_EQ(doubt.size(), 1u);
  EXPECT_EQ(doubt[0].txid, Tx(10));
  EXPECT_EQ(doubt[0].coordinator, "127.0.0.1:" + std::to_string(coordinator_port_));
  rpc::NodeStatus st;
  c->GetStatus(st);
  EXPECT_EQ(st.in_doubt, 1);
  rpc::ReadResult r;
  try {
    c->Read(r, "d");  // held by the in-doubt transaction: waits, then times out
    ADD_FAILURE() << "read of an in-doubt key answered";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::TIMEOUT);
  }
  c->Read(r, "elsewhere");  // other keys are served meanwhile
  EXPECT_FALSE(r.found);
  c->Commit(Tx(10), 1);
  c->Read(r, "d");
  EXPECT_TRUE(r.found);
  EXPECT_EQ(r.value, "decided");
  AdminClient(AdminPort())->ListInDoubt(doubt);
  EXPECT_TRUE(doubt.empty());
}

TEST_F(ParticipantSmokeTest, CrashAfterCommitIsDurableKeepsTheCommit) {
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  {
    Client c(port);
    rpc::PrepareResponse vote;
    c->Prepare(vote, Put(Tx(20), "c", "kept", false));
    ASSERT_EQ(vote.vote, rpc::Vote::YES);
    AdminClient(AdminPort())->SetFailpoint("participant.commit.after_log", "crash");
    EXPECT_THROW(c->Commit(Tx(20), 1), TException);  // the node dies before acking
  }
  EXPECT_EQ(WaitExit(pid_), 86);
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  Client c(port);
  rpc::ReadResult r;
  c->Read(r, "c");
  EXPECT_TRUE(r.found);
  EXPECT_EQ(r.value, "kept");
  c->Commit(Tx(20), 1);  // the coordinator's re-sent COMMIT is acked
}

// Started by hand without --enable-failpoints: an admin call cannot crash the
// node, and a start-up spec is refused before anything is armed.
TEST_F(ParticipantSmokeTest, FailpointsAreRefusedWithoutEnableFailpoints) {
  enable_failpoints_ = false;
  int port = FreePort();
  EXPECT_EQ(RunToExit(Args(port), "participant.commit.after_log=crash"), 2);
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  Client c(port);
  try {
    AdminClient(AdminPort())->SetFailpoint("participant.commit.after_log", "crash");
    ADD_FAILURE() << "SetFailpoint accepted without --enable-failpoints";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::PERMISSION_DENIED);
    EXPECT_NE(e.message.find("--enable-failpoints"), std::string::npos) << e.message;
  }
  // The point stayed disarmed: the commit passes it and is acked.
  rpc::PrepareResponse vote;
  c->Prepare(vote, Put(Tx(40), "f", "v", /*one_phase=*/false));
  ASSERT_EQ(vote.vote, rpc::Vote::YES);
  c->Commit(Tx(40), 1);
  rpc::ReadResult r;
  c->Read(r, "f");
  EXPECT_EQ(r.value, "v");
  int status = 0;
  EXPECT_EQ(::waitpid(pid_, &status, WNOHANG), 0) << "the node exited";
}

TEST_F(ParticipantSmokeTest, InDoubtTransactionIsResolvedByAskingTheCoordinator) {
  auto coordinator = std::make_shared<FakeCoordinator>();
  LoopThread loop;
  loop.Start();
  std::unique_ptr<RpcServer> server;
  Status started;
  loop.RunSync([&] {
    RpcServerOptions o;
    o.port = 0;
    o.tls = Tls().ServerContext("coordinator-0");
    server = std::make_unique<RpcServer>(
        loop.loop(), std::make_shared<rpc::CoordinatorPeerAsyncProcessor>(coordinator), o);
    started = server->Start();
    coordinator_port_ = server->port();
  });
  ASSERT_TRUE(started.ok()) << started.ToString();
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  {
    Client c(port);
    rpc::PrepareResponse vote;
    auto req = Put(Tx(30), "q", "resolved", false);
    req.__set_coordinator("127.0.0.1:" + std::to_string(coordinator_port_));
    c->Prepare(vote, req);
    ASSERT_EQ(vote.vote, rpc::Vote::YES);
  }
  ASSERT_NO_FATAL_FAILURE(KillNode());
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  // The coordinator does not know yet: the participant keeps asking.
  for (int i = 0; i < 300 && coordinator->queries.load() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(coordinator->queries.load(), 2);
  {
    Client c(port);
    std::vector<rpc::InDoubtTx> doubt;
    AdminClient(AdminPort())->ListInDoubt(doubt);
    EXPECT_EQ(doubt.size(), 1u);
  }
  coordinator->answer = rpc::Decision::COMMIT;
  bool seen = false;
  for (int i = 0; i < 300 && !seen; ++i) {
    Client c(port);
    rpc::ReadResult r;
    try {
      c->Read(r, "q");
      seen = r.found && r.value == "resolved";
    } catch (const rpc::DtxError&) {
      // still in doubt: the read timed out
    }
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(seen)
      << "the in-doubt transaction was not committed after the coordinator said COMMIT";
  Client c(port);
  std::vector<rpc::InDoubtTx> doubt;
  AdminClient(AdminPort())->ListInDoubt(doubt);
  EXPECT_TRUE(doubt.empty());
  loop.RunSync([&] { server.reset(); });
}

// Small segments and frequent checkpoints: the WAL is truncated while
// commits go on and a prepared transaction stays undecided; SIGKILL between
// checkpoints; the restart has every commit, the delete's tombstone and the
// in-doubt transaction, and replays far less than was written.
TEST_F(ParticipantSmokeTest,
       SigkillAfterWalTruncationKeepsCommitsTombstonesAndInDoubtTransactions) {
  extra_args_ = {"--wal-segment-bytes",      "65536", "--checkpoint-interval-records", "100",
                 "--checkpoint-interval-ms", "20"};
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  constexpr int kCommits = 1200;
  const std::string pad(400, 'p');
  std::map<std::string, std::string> model;
  {
    Client c(port);
    for (int i = 0; i < kCommits; ++i) {
      std::string key = "k" + std::to_string(i % 50);
      rpc::PrepareResponse vote;
      if (i % 10 == 9) {
        rpc::PrepareRequest del = Put(Tx(1000 + i), key, "", /*one_phase=*/true);
        del.writes[0].__isset.value = false;
        c->Prepare(vote, del);
        model.erase(key);
      } else {
        c->Prepare(vote, Put(Tx(1000 + i), key, std::to_string(i) + pad, /*one_phase=*/true));
        model[key] = std::to_string(i) + pad;
      }
      ASSERT_EQ(vote.vote, rpc::Vote::YES) << i;
      if (i == kCommits / 2) {
        rpc::PrepareResponse held;
        c->Prepare(held, Put(Tx(7), "held", "v", /*one_phase=*/false));
        ASSERT_EQ(held.vote, rpc::Vote::YES);
      }
    }
    // Wait for a checkpoint that truncated the log below the in-doubt PREPARE's segment.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    rpc::NodeStatus st;
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      c->GetStatus(st);
    } while (st.counters["wal_segments_deleted"] < 3 &&
             std::chrono::steady_clock::now() < deadline);
    EXPECT_GE(st.counters["wal_segments_deleted"], 3);
    EXPECT_GT(st.counters["checkpoint_retain_from"], 0);
  }
  ASSERT_NO_FATAL_FAILURE(KillNode());
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  Client c(port);
  rpc::NodeStatus st;
  c->GetStatus(st);
  EXPECT_LT(st.counters["replayed_records"], kCommits)
      << "replay starts near the oldest in-doubt PREPARE";
  EXPECT_EQ(st.in_doubt, 1);
  std::vector<rpc::InDoubtTx> in_doubt;
  AdminClient(AdminPort())->ListInDoubt(in_doubt);
  ASSERT_EQ(in_doubt.size(), 1u);
  EXPECT_EQ(in_doubt[0].txid.lo, 7);
  for (int k = 0; k < 50; ++k) {
    std::string key = "k" + std::to_string(k);
    rpc::ReadResult r;
    c->Read(r, key);
    auto it = model.find(key);
    EXPECT_EQ(r.found, it != model.end()) << key;
    if (it != model.end()) {
      EXPECT_EQ(r.value, it->second) << key;
    }
    EXPECT_GT(r.version, 0) << key << ": deleted keys keep their version";
  }
  c->Commit(Tx(7), 1);
  rpc::ReadResult held;
  c->Read(held, "held");
  EXPECT_TRUE(held.found);
}

// Bytes of `path` from `offset` on ("" if unreadable).
std::string ReadFileFrom(const std::string& path, size_t offset = 0) {
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return offset < all.size() ? all.substr(offset) : std::string();
}

// The LevelDB sstable under `data` holding `needle`, and where; "" if none.
std::pair<std::string, size_t> FindInTable(const std::string& data, const std::string& needle) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(data, ec)) {
    if (e.path().extension() != ".ldb") continue;
    size_t at = ReadFileFrom(e.path().string()).find(needle);
    if (at != std::string::npos) return {e.path().string(), at};
  }
  return {"", 0};
}

void FlipByte(const std::string& path, size_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open()) << path;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0xff));
  ASSERT_TRUE(f.good()) << path;
}

// Store integrity (participant/level_store.h): one flipped byte in an
// sstable, and the node refuses to serve from it and says why in its log.
// Key "a" (5000 random bytes) fills the first LevelDB block with the
// checkpoint; "k" lands in the second. A flipped byte in "k" stops the node
// at the read of "k" (exit 1, after serving "a"); one in the first block
// stops it at start, where the checkpoint is read.
TEST_F(ParticipantSmokeTest, AFlippedByteInAnSstableStopsTheNodeAndItsLogSaysWhich) {
  const std::string marker = "q7Zk2Xv9LmP4wR8tY1bN6cH3jD5fG0sA";  // incompressible
  std::string filler(5000, '\0');
  std::mt19937 rng(14);
  for (char& c : filler) c = static_cast<char>(rng());
  const std::string data = dir_ + "/node/data";
  const std::string log = dir_ + "/node/node.log";
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  {
    Client c(port);
    rpc::PrepareResponse vote;
    c->Prepare(vote, Put(Tx(1), "a", filler, /*one_phase=*/true));
    ASSERT_EQ(vote.vote, rpc::Vote::YES);
    c->Prepare(vote, Put(Tx(2), "k", "value-" + marker, /*one_phase=*/true));
    ASSERT_EQ(vote.vote, rpc::Vote::YES);
  }
  // A clean stop writes a checkpoint; the next start moves LevelDB's log
  // into a level-0 sstable.
  for (int i = 0; i < 2; ++i) {
    if (i == 1) {
      ASSERT_NO_FATAL_FAILURE(StartNode(port));
    }
    ASSERT_EQ(::kill(pid_, SIGTERM), 0);
    ASSERT_EQ(WaitExit(pid_), 0);
  }
  auto [table, at] = FindInTable(data, marker);
  ASSERT_FALSE(table.empty()) << "the value of k is not in an sstable";
  ASSERT_NO_FATAL_FAILURE(FlipByte(table, at + 5));

  size_t log_from = ReadFileFrom(log).size();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  {
    Client c(port);
    rpc::ReadResult r;
    c->Read(r, "a");
    EXPECT_TRUE(r.value == filler) << "an undamaged block is served";
    EXPECT_THROW(c->Read(r, "k"), TException) << "served a value from a damaged block: " << r.value;
  }
  EXPECT_EQ(WaitExit(pid_), 1);
  std::string said = ReadFileFrom(log, log_from);
  EXPECT_NE(said.find("fail-stop"), std::string::npos) << said;
  EXPECT_NE(said.find("LevelDB store " + data + " is corrupt"), std::string::npos) << said;
  EXPECT_NE(said.find("block checksum mismatch"), std::string::npos) << said;
  EXPECT_NE(said.find("sstable " + table + " fails its checksums"), std::string::npos) << said;

  auto [first_block, filler_at] = FindInTable(data, filler.substr(0, 64));
  ASSERT_EQ(first_block, table);
  ASSERT_NO_FATAL_FAILURE(FlipByte(table, filler_at + 10));
  log_from = ReadFileFrom(log).size();
  EXPECT_EQ(RunToExit(Args(port)), 1) << "started on a damaged checkpoint block";
  said = ReadFileFrom(log, log_from);
  EXPECT_NE(said.find("cannot start"), std::string::npos) << said;
  EXPECT_NE(said.find("reading the checkpoint failed"), std::string::npos) << said;
  EXPECT_NE(said.find("sstable " + table + " fails its checksums"), std::string::npos) << said;
}

TEST_F(ParticipantSmokeTest, SigtermExitsZero) {
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  ASSERT_EQ(::kill(pid_, SIGTERM), 0);
  EXPECT_EQ(WaitExit(pid_), 0);
}

using test_metrics::HttpGetMetrics;
using test_metrics::ParseMetrics;

TEST_F(ParticipantSmokeTest, MetricsAreServedAndCountWhatHappened) {
  int port = FreePort();
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  std::ifstream f(dir_ + "/node/metrics.addr");
  std::string addr;
  ASSERT_TRUE(std::getline(f, addr)) << "metrics.addr missing";
  ASSERT_EQ(addr.rfind("127.0.0.1:", 0), 0u) << addr;
  const int metrics_port = dtx::ParseHostPort(addr)->port;
  ASSERT_GT(metrics_port, 0);
  {
    Client c(port);
    rpc::PrepareResponse vote;
    c->Prepare(vote, Put(Tx(1), "k", "v", /*one_phase=*/false));
    ASSERT_EQ(vote.vote, rpc::Vote::YES);
    c->Commit(Tx(1), 1);
    rpc::ReadResult r;
    c->Read(r, "k");
    ASSERT_TRUE(r.found);
    c->Prepare(vote, Put(Tx(2), "k2", "v", /*one_phase=*/false));
    ASSERT_EQ(vote.vote, rpc::Vote::YES);  // stays prepared: holds a lock
  }
  // The admin listener (nothing else calls it here): plaintext garbage, which
  // fails the TLS handshake, then an operator's connection kept open.
  EXPECT_TRUE(test_metrics::SendGarbage(AdminPort()));
  AdminClient admin(AdminPort());
  std::vector<rpc::InDoubtTx> doubt;
  admin->ListInDoubt(doubt);
  const auto listener = test_metrics::ListenerSeries;
  // Gauges are refreshed from the tick (every 10 ms; the in-doubt scan every
  // 100 ms). Tx 2 becomes in doubt once its decision is overdue (about 1 s).
  std::map<std::string, double> m;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    std::string resp = HttpGetMetrics(metrics_port);
    ASSERT_EQ(resp.find(" 200 OK\r\n"), 8u) << resp.substr(0, 200);
    // prometheus-cpp 1.0 labels the text format plainly ("text/plain;
    // charset=utf-8", no version=0.0.4); Prometheus reads text/plain as it.
    ASSERT_NE(resp.find("Content-Type: text/plain"), std::string::npos) << resp.substr(0, 200);
    m = ParseMetrics(resp.substr(resp.find("\r\n\r\n") + 4));
  } while ((m["dtx_wal_syncs_total"] < 1 || m["dtx_in_doubt"] != 1 ||
            m["dtx_in_doubt_oldest_age_seconds"] <= 0 ||
            m[listener("dtx_rpc_replies_sent_total", "admin")] < 1) &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(m["dtx_commits_total"], 1);
  EXPECT_EQ(m["dtx_votes_total{vote=\"yes\"}"], 2);
  EXPECT_EQ(m["dtx_read_seconds_count"], 1);
  EXPECT_EQ(m["dtx_prepare_seconds_count"], 2);
  EXPECT_EQ(m["dtx_commit_seconds_count"], 1);
  EXPECT_EQ(m["dtx_prepare_seconds_bucket{le=\"+Inf\"}"], 2);
  EXPECT_GT(m["dtx_prepare_seconds_sum"], 0);
  EXPECT_EQ(m["dtx_in_doubt"], 1);
  EXPECT_GT(m["dtx_in_doubt_oldest_age_seconds"], 0);
  EXPECT_EQ(m["dtx_lock_table_entries"], 1);
  EXPECT_EQ(m["dtx_epoch"], 1);
  EXPECT_EQ(m["dtx_role{role=\"participant\"}"], 1);
  EXPECT_GE(m["dtx_wal_syncs_total"], 1);
  EXPECT_GE(m["dtx_wal_records_synced_total"], 3);  // EPOCH, PREPARE, COMMIT, PREPARE
  EXPECT_EQ(m.count("dtx_aborts_total{reason=\"conflict\"}"), 1u);
  EXPECT_GT(m["process_resident_memory_bytes"], 0);
  EXPECT_EQ(m.count("process_cpu_seconds_total"), 1u);
  // Each listener's connections (node/listener_metrics.h). Client and peer:
  // the start-up's GetStatus probes and the calls above, over TLS.
  EXPECT_GE(m[listener("dtx_rpc_frames_received_total", "client")], 2);  // a probe, Read
  EXPECT_GE(m[listener("dtx_rpc_replies_sent_total", "client")], 2);
  EXPECT_GE(m[listener("dtx_rpc_frames_received_total", "peer")], 3);  // Prepare, Commit, Prepare
  EXPECT_GE(m[listener("dtx_rpc_replies_sent_total", "peer")], 3);
  EXPECT_GE(m[listener("dtx_rpc_tls_handshakes_total", "client")], 1);
  EXPECT_GE(m[listener("dtx_rpc_tls_handshakes_total", "peer")], 1);
  EXPECT_EQ(m[listener("dtx_rpc_connections_accepted_total", "admin")], 2);
  EXPECT_EQ(m[listener("dtx_rpc_tls_handshakes_failed_total", "admin")], 1);
  EXPECT_EQ(m[listener("dtx_rpc_tls_handshakes_total", "admin")], 1);
  EXPECT_EQ(m[listener("dtx_rpc_frames_received_total", "admin")], 1);  // ListInDoubt
  EXPECT_EQ(m[listener("dtx_rpc_replies_sent_total", "admin")], 1);
  EXPECT_EQ(m[listener("dtx_rpc_connections_open", "admin")], 1);
  EXPECT_EQ(m[listener("dtx_rpc_connections_closed_bad_input_total", "admin")], 0);
  EXPECT_EQ(m.count(listener("dtx_rpc_connections_rejected_total", "peer")), 1u);
  rpc::NodeStatus st;
  Client(port).GetStatus(st);
  EXPECT_EQ(st.counters["metrics_port"], metrics_port);
}

TEST_F(ParticipantSmokeTest, MetricsCanBeTurnedOffAndBadMetricsFlagsExitWithTwo) {
  int port = FreePort();
  auto bad = Args(port);
  bad.insert(bad.end(), {"--metrics-listen", "nonsense"});
  EXPECT_EQ(RunToExit(bad), 2);
  extra_args_ = {"--metrics-listen", "off"};
  ASSERT_NO_FATAL_FAILURE(StartNode(port));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/node/metrics.addr"));
  rpc::NodeStatus st;
  Client(port).GetStatus(st);
  EXPECT_EQ(st.counters.count("metrics_port"), 0u);
}

}  // namespace
}  // namespace dtx::participant
