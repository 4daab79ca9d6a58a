// The wire contract on real nodes: a stock Thrift client (the generated
// CoordinatorClient + ParticipantClient, not the dtx client) runs a
// transaction; malformed, oversized, garbage, truncated frames and unknown
// methods close only their own connection while the node keeps serving.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <thread>

#include "common/types.h"
#include "tests/harness.h"
#include "tools/admin_client.h"

namespace dtx::testing {
namespace {

class WireTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LocalCluster::Options o;
    o.participants = 2;
    o.participant_bin = DTX_PARTICIPANT_PATH;
    o.coordinator_bin = DTX_COORDINATOR_PATH;
    Status s = cluster_.Up(o);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << cluster_.LogTails(30);
    cluster_.Down();
  }
  LocalCluster cluster_;
};

rpc::WriteItem Write(const std::string& k, const std::string& v) {
  rpc::WriteItem w;
  w.key = k;
  w.__set_value(v);
  return w;
}

TEST_F(WireTest, StockThriftClientCommitsATransaction) {
  auto coord = tools::CoordinatorConnection::Open(
      cluster_.coordinator_address(), {}, cluster_.ClientTlsAt(cluster_.coordinator_address()));
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  rpc::ShardMap map;
  ASSERT_TRUE(tools::RunThrift("GetShardMap", [&] { (*coord)->client().GetShardMap(map); }).ok());
  ASSERT_EQ(map.scheme, "hash");
  ASSERT_EQ(map.participants, cluster_.participant_addresses());
  // One key per participant, by the documented scheme.
  std::string keys[2];
  for (size_t shard = 0; shard < 2; ++shard) {
    for (int i = 0;; ++i) {
      std::string k = "stock-" + std::to_string(i);
      if (ShardHash(k) % map.participants.size() == shard) {
        keys[shard] = k;
        break;
      }
    }
  }
  std::mt19937_64 rng(std::random_device{}());
  rpc::CommitRequest req;
  req.txid.hi = static_cast<int64_t>(rng() >> 1);
  req.txid.lo = 1;
  req.shard_map_version = map.version;
  req.writes = {Write(keys[0], "zero"), Write(keys[1], "one")};
  rpc::CommitResult res;
  Status s = tools::RunThrift("Commit", [&] { (*coord)->client().Commit(res, req); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED) << res.detail;
  // Idempotent by txid.
  rpc::CommitResult again;
  ASSERT_TRUE(tools::RunThrift("Commit", [&] { (*coord)->client().Commit(again, req); }).ok());
  EXPECT_EQ(again.outcome, rpc::Outcome::COMMITTED);
  // A client asks GetOutcome (QueryDecision is the participants' call: with
  // TLS a client certificate is refused it).
  rpc::Outcome::type outcome = rpc::Outcome::UNKNOWN;
  ASSERT_TRUE(tools::RunThrift("GetOutcome", [&] {
                outcome = (*coord)->client().GetOutcome(req.txid);
              }).ok());
  EXPECT_EQ(outcome, rpc::Outcome::COMMITTED);

  // Read both straight from their participants.
  rpc::Version v0 = 0;
  for (size_t shard = 0; shard < 2; ++shard) {
    auto p = tools::ParticipantConnection::Open(map.participants[shard], {},
                                                cluster_.ClientTlsAt(map.participants[shard]));
    ASSERT_TRUE(p.ok());
    rpc::ReadResult r;
    ASSERT_TRUE(tools::RunThrift("Read", [&] { (*p)->client().Read(r, keys[shard]); }).ok());
    EXPECT_TRUE(r.found);
    EXPECT_EQ(r.value, shard == 0 ? "zero" : "one");
    if (shard == 0) v0 = r.version;
  }
  // Read-modify-write with the version read; a second one with the same,
  // now stale, version aborts with CONFLICT.
  rpc::ReadItem read;
  read.key = keys[0];
  read.version = v0;
  rpc::CommitRequest rmw;
  rmw.txid.hi = req.txid.hi;
  rmw.txid.lo = 2;
  rmw.shard_map_version = map.version;
  rmw.reads = {read};
  rmw.writes = {Write(keys[0], "zero-2")};
  ASSERT_TRUE(tools::RunThrift("Commit", [&] { (*coord)->client().Commit(res, rmw); }).ok());
  EXPECT_EQ(res.outcome, rpc::Outcome::COMMITTED) << res.detail;
  rmw.txid.lo = 3;
  rmw.writes = {Write(keys[0], "zero-3")};
  ASSERT_TRUE(tools::RunThrift("Commit", [&] { (*coord)->client().Commit(res, rmw); }).ok());
  EXPECT_EQ(res.outcome, rpc::Outcome::ABORTED);
  ASSERT_TRUE(res.__isset.reason);
  EXPECT_EQ(res.reason, rpc::AbortReason::CONFLICT);
  auto p0 = tools::ParticipantConnection::Open(map.participants[0], {},
                                               cluster_.ClientTlsAt(map.participants[0]));
  ASSERT_TRUE(p0.ok());
  rpc::ReadResult r;
  ASSERT_TRUE(tools::RunThrift("Read", [&] { (*p0)->client().Read(r, keys[0]); }).ok());
  EXPECT_EQ(r.value, "zero-2");
}

// Issue 14, "Identity": a stock client reusing a txid with other content is
// refused with BAD_ARGUMENT and its writes are not applied - never told the
// other transaction's COMMITTED. First by the coordinator, which knows the
// txid; then, after a restart made the coordinator forget a one-phase outcome
// (it keeps those in memory only), by the participant that committed it.
TEST_F(WireTest, StockClientReusingATxidWithOtherContentIsRefusedNotToldCommitted) {
  auto open = [&] {
    return tools::CoordinatorConnection::Open(cluster_.coordinator_address(), {},
                                              cluster_.ClientTlsAt(cluster_.coordinator_address()));
  };
  auto coord = open();
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  rpc::ShardMap map;
  ASSERT_TRUE(tools::RunThrift("GetShardMap", [&] { (*coord)->client().GetShardMap(map); }).ok());
  std::string keys[2];
  for (size_t shard = 0; shard < 2; ++shard) {
    for (int i = 0;; ++i) {
      std::string k = "reuse-" + std::to_string(i);
      if (ShardHash(k) % map.participants.size() == shard) {
        keys[shard] = k;
        break;
      }
    }
  }
  std::mt19937_64 rng(std::random_device{}());
  const int64_t hi = static_cast<int64_t>(rng() >> 1);
  // The Commit's answer: its outcome, or the DtxError's code and message.
  struct Answer {
    std::optional<rpc::Outcome::type> outcome;
    std::optional<rpc::ErrorCode::type> error;
    std::string message;
  };
  auto commit = [&](int64_t lo, std::vector<rpc::WriteItem> writes) {
    rpc::CommitRequest req;
    req.txid.hi = hi;
    req.txid.lo = lo;
    req.shard_map_version = map.version;
    req.writes = std::move(writes);
    Answer a;
    try {
      rpc::CommitResult res;
      (*coord)->client().Commit(res, req);
      a.outcome = res.outcome;
      a.message = res.detail;
    } catch (const rpc::DtxError& e) {
      a.error = e.code;
      a.message = e.message;
    }
    return a;
  };
  auto read = [&](size_t shard) {
    auto p = tools::ParticipantConnection::Open(map.participants[shard], {},
                                                cluster_.ClientTlsAt(map.participants[shard]));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    rpc::ReadResult r;
    if (p.ok()) {
      EXPECT_TRUE(tools::RunThrift("Read", [&] { (*p)->client().Read(r, keys[shard]); }).ok());
    }
    return r.found ? r.value : std::string("(absent)");
  };
  auto expect_refused = [](const Answer& a, const char* what) {
    ASSERT_TRUE(a.error.has_value()) << what << ": answered an outcome: " << a.message;
    EXPECT_EQ(*a.error, rpc::ErrorCode::BAD_ARGUMENT) << what << ": " << a.message;
    EXPECT_NE(a.message.find("txid reused with different content"), std::string::npos)
        << what << ": " << a.message;
  };

  // Two participants: the coordinator remembers it (its DECISION).
  Answer first = commit(1, {Write(keys[0], "a0"), Write(keys[1], "a1")});
  ASSERT_EQ(first.outcome, rpc::Outcome::COMMITTED) << first.message;
  expect_refused(commit(1, {Write(keys[0], "b0"), Write(keys[1], "b1")}), "two-phase reuse");
  EXPECT_EQ(commit(1, {Write(keys[1], "a1"), Write(keys[0], "a0")}).outcome,
            rpc::Outcome::COMMITTED)
      << "the same content in another order is a retry";
  // One participant: committed there; remembered by the coordinator in memory.
  Answer one = commit(2, {Write(keys[1], "c1")});
  ASSERT_EQ(one.outcome, rpc::Outcome::COMMITTED) << one.message;
  expect_refused(commit(2, {Write(keys[1], "d1")}), "one-phase reuse at the coordinator");

  // The restarted coordinator has forgotten txid 2; participant 1 has not.
  CommandResult r = cluster_.Dtxctl({"restart", "coordinator-0"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  coord = open();
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  Answer after;
  for (int i = 0; i < 50; ++i) {  // until its EPOCH is durable again
    after = commit(2, {Write(keys[1], "d1")});
    if (after.error != rpc::ErrorCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  expect_refused(after, "one-phase reuse at the participant");
  EXPECT_NE(after.message.find("participant"), std::string::npos) << after.message;
  expect_refused(commit(1, {Write(keys[0], "e0")}), "two-phase reuse after the restart");

  EXPECT_EQ(read(0), "a0");
  EXPECT_EQ(read(1), "c1");
}

// A raw TCP connection for sending bytes of our own.
class RawConn {
 public:
  explicit RawConn(const std::string& address) {
    auto hp = tools::ParseHostPort(address);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(hp->port);
    ::inet_pton(AF_INET, hp->host.c_str(), &a.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  void Send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close early; that is fine
      done += static_cast<size_t>(n);
    }
  }
  void ShutdownWrite() { ::shutdown(fd_, SHUT_WR); }
  // Closes with RST (SO_LINGER 0): the peer's next write fails with EPIPE.
  void Reset() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    ::close(fd_);
    fd_ = -1;
  }
  // True if the peer closes the connection (EOF or reset) within timeout_ms;
  // bytes it sent first (e.g. an exception reply) are skipped.
  bool ClosedByPeerWithin(int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0 && errno == ECONNRESET) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

std::string Frame(const std::string& payload) {
  uint32_t n = htonl(static_cast<uint32_t>(payload.size()));
  return std::string(reinterpret_cast<const char*>(&n), 4) + payload;
}

std::string Header(uint32_t length) {
  uint32_t n = htonl(length);
  return std::string(reinterpret_cast<const char*>(&n), 4);
}

// A well-formed binary-protocol call of `method` with no arguments.
std::string CallMessage(const std::string& method) {
  auto buf = std::make_shared<apache::thrift::transport::TMemoryBuffer>();
  apache::thrift::protocol::TBinaryProtocol proto(buf);
  proto.writeMessageBegin(method, apache::thrift::protocol::T_CALL, 7);
  proto.writeStructBegin("args");
  proto.writeFieldStop();
  proto.writeStructEnd();
  proto.writeMessageEnd();
  return buf->getBufferAsString();
}

TEST_F(WireTest, BadFramesCloseOnlyTheirConnectionAndTheNodeKeepsServing) {
  struct Case {
    const char* name;
    std::string bytes;
    bool shutdown_write;
  };
  std::vector<Case> cases = {
      {"garbage bytes", "GET / HTTP/1.1\r\nHost: dtx\r\n\r\n", false},
      {"oversized frame", Header(0x7fffffffu) + std::string(64, 'x'), false},
      {"negative frame length", Header(0xffffffffu) + "xxxx", false},
      {"malformed frame", Frame(std::string("\x12\x34\x56\x78\x9a\xbc\xde\xf0garbage", 15)), false},
      {"empty frame", Frame(""), false},
      {"truncated frame", Header(100) + std::string(10, 'x'), true},
      {"unknown method", Frame(CallMessage("NoSuchMethod")), false},
  };
  for (const auto& node : cluster_.config().nodes()) {
    pid_t pid = cluster_.NodePid(node.name);
    // A connection opened before the bad ones must keep working.
    std::unique_ptr<tools::ParticipantConnection> p_conn;
    std::unique_ptr<tools::CoordinatorConnection> c_conn;
    auto status_on_old = [&]() -> Status {
      rpc::NodeStatus st;
      if (c_conn) return tools::RunThrift("GetStatus", [&] { c_conn->client().GetStatus(st); });
      return tools::RunThrift("GetStatus", [&] { p_conn->client().GetStatus(st); });
    };
    if (node.role == tools::NodeKind::kCoordinator) {
      auto c =
          tools::CoordinatorConnection::Open(node.address, {}, cluster_.ClientTlsAt(node.address));
      ASSERT_TRUE(c.ok());
      c_conn = std::move(*c);
    } else {
      auto c =
          tools::ParticipantConnection::Open(node.address, {}, cluster_.ClientTlsAt(node.address));
      ASSERT_TRUE(c.ok());
      p_conn = std::move(*c);
    }
    ASSERT_TRUE(status_on_old().ok());
    for (const Case& c : cases) {
      RawConn raw(node.address);
      ASSERT_TRUE(raw.connected()) << node.name << " " << c.name;
      raw.Send(c.bytes);
      if (c.shutdown_write) raw.ShutdownWrite();
      EXPECT_TRUE(raw.ClosedByPeerWithin(5000))
          << node.name << ": " << c.name << " did not close the connection";
      Status old_ok = status_on_old();
      EXPECT_TRUE(old_ok.ok()) << node.name << " after " << c.name << ": " << old_ok.ToString();
      auto fresh = tools::GetNodeStatus(node, cluster_.creds());
      EXPECT_TRUE(fresh.ok()) << node.name << " after " << c.name << ": "
                              << fresh.status().ToString();
    }
    EXPECT_EQ(cluster_.NodePid(node.name), pid) << node.name << " restarted";
    EXPECT_TRUE(tools::IsNodeProcess(pid, node.name)) << node.name << " died";
  }
}

TEST_F(WireTest, ClientVanishingBeforeItsRepliesDoesNotKillTheNode) {
  // Many pipelined calls, then the client resets the connection at once: the
  // node's replies go to a dead socket (EPIPE, or SIGPIPE if not ignored).
  std::string calls;
  for (int i = 0; i < 2000; ++i) calls += Frame(CallMessage("GetStatus"));
  for (const auto& node : cluster_.config().nodes()) {
    pid_t pid = cluster_.NodePid(node.name);
    for (int round = 0; round < 5; ++round) {
      RawConn raw(node.address);
      ASSERT_TRUE(raw.connected());
      raw.Send(calls);
      raw.Reset();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(cluster_.NodePid(node.name), pid) << node.name << " was restarted";
    EXPECT_TRUE(tools::IsNodeProcess(pid, node.name))
        << node.name << " died; supervisor.log:\n"
        << tools::TailFile(cluster_.dir() + "/supervisor.log", 5);
    EXPECT_TRUE(tools::GetNodeStatus(node, cluster_.creds()).ok()) << node.name;
  }
}

// A participant's resident memory, from /proc (0 if unreadable).
size_t ResidentBytes(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r");
  if (f == nullptr) return 0;
  char line[256];
  size_t kb = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "VmRSS: %zu kB", &kb) == 1) break;
  }
  std::fclose(f);
  return kb * 1024;
}

// A binary-protocol Participant.Read(key) call.
std::string ReadCall(const std::string& key, int32_t seqid) {
  auto buf = std::make_shared<apache::thrift::transport::TMemoryBuffer>();
  apache::thrift::protocol::TBinaryProtocol proto(buf);
  proto.writeMessageBegin("Read", apache::thrift::protocol::T_CALL, seqid);
  proto.writeStructBegin("Participant_Read_args");
  proto.writeFieldBegin("key", apache::thrift::protocol::T_STRING, 1);
  proto.writeBinary(key);
  proto.writeFieldEnd();
  proto.writeFieldStop();
  proto.writeStructEnd();
  proto.writeMessageEnd();
  return buf->getBufferAsString();
}

// Issue 15, reply amplification, for reads that wait for the disk: a 1 MiB
// value not in the participant's memory (it was restarted), read 1,000 times
// in one pipelined burst by a client that never reads a reply. Those reads
// are all taken off the connection before the first is answered (each waits
// for the store reader), so the transport's reply budget, checked before each
// frame, cannot hold them back; the participant answers them only while its
// client listener's queued replies are under budget (256 MiB): without that it
// would queue 1 GiB. Its resident memory stays under 512 MiB, and another
// client is served meanwhile.
TEST(WireColdReadTest, ReadsOfALargeColdValueByAClientThatDoesNotReadStayBounded) {
  LocalCluster cluster;
  LocalCluster::Options o;
  o.participants = 1;
  o.participant_bin = DTX_PARTICIPANT_PATH;
  o.coordinator_bin = DTX_COORDINATOR_PATH;
  o.up_flags = {"--insecure"};  // the raw connection below speaks plaintext
  Status up = cluster.Up(o);
  ASSERT_TRUE(up.ok()) << up.ToString();
  const std::string key = "cold-large";
  {
    auto coord = tools::CoordinatorConnection::Open(cluster.coordinator_address(), {}, {});
    ASSERT_TRUE(coord.ok()) << coord.status().ToString();
    rpc::ShardMap map;
    ASSERT_TRUE(tools::RunThrift("GetShardMap", [&] { (*coord)->client().GetShardMap(map); }).ok());
    rpc::CommitRequest req;
    req.txid.hi = static_cast<int64_t>(std::random_device{}() | 1u);
    req.txid.lo = 1;
    req.shard_map_version = map.version;
    req.writes = {Write(key, std::string(kValueBytesMax, 'v'))};
    rpc::CommitResult res;
    ASSERT_TRUE(tools::RunThrift("Commit", [&] { (*coord)->client().Commit(res, req); }).ok());
    ASSERT_EQ(res.outcome, rpc::Outcome::COMMITTED) << res.detail;
  }
  auto restarted = cluster.Dtxctl({"restart", "participant-0"}, 60000);
  ASSERT_EQ(restarted.exit_code, 0) << restarted.Describe();
  const pid_t pid = cluster.NodePid("participant-0");
  const std::string address = cluster.participant_addresses().at(0);
  const size_t rss_before = ResidentBytes(pid);

  constexpr int kReads = 1000;
  std::string calls;
  for (int i = 0; i < kReads; ++i) calls += Frame(ReadCall(key, i + 1));
  RawConn greedy(address);
  ASSERT_TRUE(greedy.connected());
  greedy.Send(calls);  // and never reads

  // Every read reaches the participant and waits for the reader; then the
  // replies go out only as far as the budget lets them.
  auto status = [&]() -> std::optional<rpc::NodeStatus> {
    auto p = tools::ParticipantConnection::Open(address, {}, {});
    if (!p.ok()) return std::nullopt;
    rpc::NodeStatus st;
    if (!tools::RunThrift("GetStatus", [&] { (*p)->client().GetStatus(st); }).ok()) {
      return std::nullopt;
    }
    return st;
  };
  size_t rss_max = 0;
  int64_t held = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    rss_max = std::max(rss_max, ResidentBytes(pid));
    auto st = status();
    ASSERT_TRUE(st.has_value()) << "participant-0 stopped answering another client";
    held = std::max(held, st->counters["reads_held_for_reply_room"]);
    if (st->counters["reads_waited"] >= kReads && st->counters["store_read_backlog_keys"] == 0 &&
        held > 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (int i = 0; i < 10; ++i) {  // a second more, for whatever was still on its way
    rss_max = std::max(rss_max, ResidentBytes(pid));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GT(held, 0) << "no read was held for reply room: the test did not reach the bound";
  EXPECT_LT(rss_max, size_t{512} << 20)
      << "participant-0 grew from " << (rss_before >> 20) << " MiB to " << (rss_max >> 20)
      << " MiB";
  // Another client's read of the same key is answered (from memory now).
  auto p = tools::ParticipantConnection::Open(address, {}, {});
  ASSERT_TRUE(p.ok());
  rpc::ReadResult r;
  ASSERT_TRUE(tools::RunThrift("Read", [&] { (*p)->client().Read(r, key); }).ok());
  EXPECT_EQ(r.value.size(), kValueBytesMax);
  EXPECT_EQ(cluster.NodePid("participant-0"), pid) << "participant-0 was restarted";
  std::cerr << "participant-0 RSS " << (rss_before >> 20) << " MiB before, at most "
            << (rss_max >> 20) << " MiB with " << kReads << " reads of a cold 1 MiB value\n";
  cluster.Down();
}

}  // namespace
}  // namespace dtx::testing
