// RpcServer + PeerChannel/stubs: round trips, pipelining with out-of-order
// completion, timeouts, reconnects, back-pressure, a stock Thrift client, and
// bad input that must close only the offending connection.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "Participant.h"
#include "ParticipantPeer.h"
#include "common/event_loop.h"
#include "common/rpc_client.h"
#include "common/rpc_error.h"
#include "common/rpc_framing.h"
#include "common/rpc_server.h"

namespace dtx {
namespace {

using apache::thrift::TDelayedException;

// Read(key) semantics for the tests:
//   "hold:<anything>"  the reply is held until Release*() is called
//   "notprimary"       DtxError NOT_PRIMARY with primary "10.0.0.9:7000"
//   "big:<n>"          found=true, a value of n bytes
//   anything else      found=true, value="v:"+key, version=key.size()
class TestParticipant : virtual public rpc::ParticipantCobSvIf {
 public:
  struct Held {
    std::string key;
    std::function<void(const rpc::ReadResult&)> cob;
  };

  void Read(std::function<void(const rpc::ReadResult&)> cob,
            std::function<void(TDelayedException*)> exn_cob, const std::string& key) override {
    ++reads;
    keys.push_back(key);
    if (key.rfind("hold:", 0) == 0) {
      held.push_back({key, std::move(cob)});
      return;
    }
    if (key.rfind("big:", 0) == 0) {
      rpc::ReadResult r = Result(key);
      r.value.assign(std::stoul(key.substr(4)), 'b');
      cob(r);
      return;
    }
    if (key == "notprimary") {
      exn_cob(TDelayedException::delayException(
          MakeDtxError(rpc::ErrorCode::NOT_PRIMARY, "ask the primary", "10.0.0.9:7000")));
      return;
    }
    cob(Result(key));
  }
  void Prepare(std::function<void(const rpc::PrepareResponse&)> cob,
               std::function<void(TDelayedException*)>, const rpc::PrepareRequest& req) {
    rpc::PrepareResponse r;
    r.vote = req.writes.empty() ? rpc::Vote::READ_ONLY : rpc::Vote::YES;
    cob(r);
  }
  // The peer calls, served by TestParticipantPeer below.
  void Commit(std::function<void()> cob, std::function<void(TDelayedException*)> exn_cob,
              const rpc::TxId& txid, const rpc::Epoch epoch) {
    if (epoch < 5) {
      exn_cob(TDelayedException::delayException(
          MakeDtxError(rpc::ErrorCode::STALE_EPOCH, "epoch " + std::to_string(epoch) + " < 5")));
      return;
    }
    last_commit = FromRpc(txid);
    cob();
  }
  void Abort(std::function<void()> cob, std::function<void(TDelayedException*)>, const rpc::TxId&,
             const rpc::Epoch) {
    cob();
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    rpc::NodeStatus s;
    s.name = "participant-test";
    s.role = rpc::NodeRole::PARTICIPANT;
    cob(s);
  }

  static rpc::ReadResult Result(const std::string& key) {
    rpc::ReadResult r;
    r.found = true;
    r.value = "v:" + key;
    r.version = static_cast<int64_t>(key.size());
    return r;
  }
  void ReleaseReverse() {
    auto h = std::move(held);
    held.clear();
    for (auto it = h.rbegin(); it != h.rend(); ++it) it->cob(Result(it->key));
  }

  int reads = 0;
  std::vector<std::string> keys;  // of every Read, in the order served
  TxId last_commit;
  std::vector<Held> held;
};

// Runs `loop` until `done()` or `timeout_ms`; returns done().
bool RunUntil(EventLoop& loop, const std::function<bool()>& done, int timeout_ms = 5000) {
  if (done()) return true;
  TimerId poll = loop.RunEvery(1, [&] {
    if (done()) loop.Stop();
  });
  TimerId guard = loop.RunAfter(static_cast<uint64_t>(timeout_ms), [&] { loop.Stop(); });
  loop.Run();
  loop.Cancel(poll);
  loop.Cancel(guard);
  return done();
}

void RunFor(EventLoop& loop, int ms) {
  loop.RunAfter(static_cast<uint64_t>(ms), [&] { loop.Stop(); });
  loop.Run();
}

class RpcTest : public ::testing::Test {
 protected:
  void StartServer(RpcServerOptions options = {}) {
    handler_ = std::make_shared<TestParticipant>();
    server_ = std::make_unique<RpcServer>(
        &loop_, std::make_shared<rpc::ParticipantAsyncProcessor>(handler_), options);
    ASSERT_TRUE(server_->Start().ok());
  }
  std::string Address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  void TearDown() override {
    // A held completion refers to the processor, which refers to the
    // handler: break the cycle.
    if (handler_) handler_->held.clear();
  }

  EventLoop loop_;
  std::shared_ptr<TestParticipant> handler_;
  std::unique_ptr<RpcServer> server_;
};

TEST_F(RpcTest, StubRoundTripAndErrorMapping) {
  StartServer();
  ParticipantStub stub(&loop_, Address());

  int done = 0;
  rpc::ReadResult got;
  RpcStatus read_status = Status::Internal("unset");
  stub.Read("apple", 1000, [&](const RpcStatus& s, const rpc::ReadResult& r) {
    read_status = s;
    got = r;
    ++done;
  });
  RpcStatus np = Status::OK();
  stub.Read("notprimary", 1000, [&](const RpcStatus& s, const rpc::ReadResult&) {
    np = s;
    ++done;
  });
  rpc::NodeStatus node;
  stub.GetStatus(1000, [&](const Status& s, const rpc::NodeStatus& n) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    node = n;
    ++done;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return done == 3; }));

  ASSERT_TRUE(read_status.ok()) << read_status.ToString();
  EXPECT_TRUE(got.found);
  EXPECT_EQ(got.value, "v:apple");
  EXPECT_EQ(got.version, 5);
  EXPECT_FALSE(read_status.error_code().has_value());

  EXPECT_TRUE(np.IsUnavailable()) << np.ToString();
  ASSERT_TRUE(np.error_code().has_value());
  EXPECT_EQ(*np.error_code(), rpc::ErrorCode::NOT_PRIMARY);
  ASSERT_TRUE(np.primary().has_value());
  EXPECT_EQ(*np.primary(), "10.0.0.9:7000");
  EXPECT_NE(np.message().find("10.0.0.9:7000"), std::string::npos);

  EXPECT_EQ(node.name, "participant-test");

  EXPECT_EQ(stub.channel()->stats().connects, 1u);
  EXPECT_EQ(server_->connection_count(), 1u);
}

// A processor factory gets one call per connection, with the caller's address,
// and each connection is served by its own handler.
TEST_F(RpcTest, ProcessorFactoryServesEachConnectionWithItsOwnHandler) {
  std::vector<PeerIdentity> seen;
  std::vector<std::shared_ptr<TestParticipant>> handlers;
  server_ = std::make_unique<RpcServer>(
      &loop_,
      [&](const PeerIdentity& who) {
        seen.push_back(who);
        handlers.push_back(std::make_shared<TestParticipant>());
        return std::make_shared<rpc::ParticipantAsyncProcessor>(handlers.back());
      },
      RpcServerOptions{});
  ASSERT_TRUE(server_->Start().ok());
  ParticipantStub a(&loop_, Address());
  ParticipantStub b(&loop_, Address());
  int done = 0;
  auto count = [&](const RpcStatus& s, const rpc::ReadResult&) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    ++done;
  };
  a.Read("x", 1000, count);
  a.Read("y", 1000, count);
  b.Read("z", 1000, count);
  ASSERT_TRUE(RunUntil(loop_, [&] { return done == 3; }));
  ASSERT_EQ(seen.size(), 2u);
  for (const PeerIdentity& who : seen) {
    EXPECT_FALSE(who.authenticated());
    EXPECT_EQ(who.address.rfind("127.0.0.1:", 0), 0u) << who.address;
  }
  EXPECT_NE(seen[0].address, seen[1].address);
  ASSERT_EQ(handlers.size(), 2u);
  EXPECT_EQ(handlers[0]->reads + handlers[1]->reads, 3);
  EXPECT_TRUE((handlers[0]->reads == 2 && handlers[1]->reads == 1) ||
              (handlers[0]->reads == 1 && handlers[1]->reads == 2));
}

// The ParticipantPeer service on top of TestParticipant: Heartbeat answers as
// a participant; AdoptEpoch refuses anything below 9 with STALE_EPOCH and the
// current epoch and its owner (DtxError fields 4, 5).
class TestParticipantPeer : public rpc::ParticipantPeerCobSvIf, public TestParticipant {
 public:
  void Prepare(std::function<void(const rpc::PrepareResponse&)> cob,
               std::function<void(TDelayedException*)> exn_cob,
               const rpc::PrepareRequest& req) override {
    TestParticipant::Prepare(std::move(cob), std::move(exn_cob), req);
  }
  void Commit(std::function<void()> cob, std::function<void(TDelayedException*)> exn_cob,
              const rpc::TxId& txid, const rpc::Epoch epoch) override {
    TestParticipant::Commit(std::move(cob), std::move(exn_cob), txid, epoch);
  }
  void Abort(std::function<void()> cob, std::function<void(TDelayedException*)> exn_cob,
             const rpc::TxId& txid, const rpc::Epoch epoch, const rpc::Attempt&) override {
    TestParticipant::Abort(std::move(cob), std::move(exn_cob), txid, epoch);
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    TestParticipant::GetStatus(std::move(cob));
  }
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob,
                 std::function<void(TDelayedException*)>,
                 const rpc::HeartbeatRequest& req) override {
    last_heartbeat_role = req.role;
    rpc::HeartbeatResponse r;
    r.name = "p0";
    r.__set_role(rpc::NodeRole::PARTICIPANT);
    r.epoch = 9;
    cob(r);
  }
  void AdoptEpoch(std::function<void()> cob, std::function<void(TDelayedException*)> exn_cob,
                  const rpc::Epoch epoch, const std::string&) override {
    if (epoch >= 9) return cob();
    rpc::DtxError e =
        MakeDtxError(ErrorCode::kStaleEpoch, "epoch " + std::to_string(epoch) + " < 9");
    e.__set_current_epoch(9);
    e.__set_epoch_owner("10.0.0.9:7000");
    exn_cob(TDelayedException::delayException(e));
  }
  rpc::NodeRole::type last_heartbeat_role = static_cast<rpc::NodeRole::type>(0);
};

// The rpc_method:: bindings of the extended service reach the server's
// methods by name, and a refusal keeps every DtxError field (the coordinator
// fences with current_epoch / epoch_owner).
TEST_F(RpcTest, PeerMethodsReachTheServerAndRefusalsKeepTheirFields) {
  auto handler = std::make_shared<TestParticipantPeer>();
  server_ = std::make_unique<RpcServer>(
      &loop_, std::make_shared<rpc::ParticipantPeerAsyncProcessor>(handler), RpcServerOptions{});
  ASSERT_TRUE(server_->Start().ok());
  auto channel = PeerChannel::Create(&loop_, Address());

  int done = 0;
  rpc::HeartbeatRequest hb;
  hb.sender = "10.0.0.1:7000";
  hb.role = ToRpc(NodeRole::kBackup);
  hb.epoch = 3;
  rpc::ParticipantPeer_Heartbeat_pargs hb_args;
  hb_args.req = &hb;
  RpcStatus hb_status = Status::Internal("unset");
  rpc::HeartbeatResponse hb_resp;
  CallRpc<rpc_method::ParticipantPeer_Heartbeat>(
      channel, hb_args, 1000,
      RpcCallback<rpc::HeartbeatResponse>([&](const RpcStatus& s, const rpc::HeartbeatResponse& r) {
        hb_status = s;
        hb_resp = r;
        ++done;
      }));

  auto adopt = [&](rpc::Epoch epoch, RpcStatus* out) {
    rpc::ParticipantPeer_AdoptEpoch_pargs a;
    const std::string me = "10.0.0.1:7000";
    a.epoch = &epoch;
    a.coordinator = &me;
    CallRpc<rpc_method::ParticipantPeer_AdoptEpoch>(channel, a, 1000,
                                                    RpcDoneCallback([&, out](const RpcStatus& s) {
                                                      *out = s;
                                                      ++done;
                                                    }));
  };
  RpcStatus refused = Status::OK();
  RpcStatus adopted = Status::Internal("unset");
  adopt(4, &refused);
  adopt(9, &adopted);
  // The 2PC calls of the typed stub on the same connection; a refusal maps
  // to its Status (STALE_EPOCH: Aborted).
  ParticipantPeerStub stub(channel);
  Status commit_ok = Status::Internal("unset");
  Status stale = Status::OK();
  rpc::TxId txid = ToRpc(TxId{0xabcdefull, 42});
  stub.Commit(txid, 7, 1000, [&](const Status& s) {
    commit_ok = s;
    ++done;
  });
  stub.Commit(txid, 1, 1000, [&](const Status& s) {
    stale = s;
    ++done;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return done == 5; }));

  ASSERT_TRUE(hb_status.ok()) << hb_status.ToString();
  EXPECT_EQ(handler->last_heartbeat_role, rpc::NodeRole::BACKUP);
  ASSERT_TRUE(hb_resp.__isset.role);
  EXPECT_EQ(FromRpc(hb_resp.role), NodeRole::kParticipant);
  EXPECT_EQ(hb_resp.epoch, 9);

  EXPECT_TRUE(refused.IsAborted()) << refused.ToString();
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kStaleEpoch);
  EXPECT_EQ(refused.current_epoch(), 9);
  EXPECT_EQ(refused.epoch_owner(), "10.0.0.9:7000");
  EXPECT_TRUE(adopted.ok()) << adopted.ToString();
  EXPECT_FALSE(adopted.current_epoch().has_value());
  EXPECT_TRUE(commit_ok.ok()) << commit_ok.ToString();
  EXPECT_EQ(handler->last_commit, (TxId{0xabcdefull, 42}));
  EXPECT_TRUE(stale.IsAborted()) << stale.ToString();
  EXPECT_NE(stale.message().find("stale epoch"), std::string::npos);
  channel->Close();
}

TEST_F(RpcTest, PipelinedRequestsCompleteOutOfOrderOnOneConnection) {
  StartServer();
  ParticipantStub stub(&loop_, Address());
  constexpr int kCalls = 300;
  std::map<std::string, std::string> replies;
  int failures = 0;
  std::vector<int> completion_order;
  for (int i = 0; i < kCalls; ++i) {
    std::string key = "hold:" + std::to_string(i);
    stub.Read(key, 5000, [&, key, i](const Status& s, const rpc::ReadResult& r) {
      if (!s.ok()) ++failures;
      replies[key] = r.value;
      completion_order.push_back(i);
    });
  }
  EXPECT_EQ(stub.channel()->in_flight(), static_cast<size_t>(kCalls));
  ASSERT_TRUE(RunUntil(loop_, [&] { return handler_->held.size() == kCalls; }));
  handler_->ReleaseReverse();
  ASSERT_TRUE(RunUntil(loop_, [&] { return replies.size() == kCalls; }));
  EXPECT_EQ(failures, 0);
  for (const auto& [key, value] : replies) EXPECT_EQ(value, "v:" + key);
  ASSERT_EQ(completion_order.size(), static_cast<size_t>(kCalls));
  EXPECT_EQ(completion_order.front(), kCalls - 1);  // completed in reverse
  EXPECT_EQ(completion_order.back(), 0);
  EXPECT_EQ(stub.channel()->stats().connects, 1u);
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
}

TEST_F(RpcTest, RepliesCompletedInOneTurnLeaveInOneWrite) {
  StartServer();
  ParticipantStub stub(&loop_, Address());
  bool connected = false;
  stub.Read("warm-up", 5000, [&](const Status&, const rpc::ReadResult&) { connected = true; });
  ASSERT_TRUE(RunUntil(loop_, [&] { return connected; }));
  const uint64_t client_writes_before = stub.channel()->stats().writes;
  const uint64_t frames_before = server_->stats().frames_received;
  constexpr int kCalls = 64;
  int answered = 0;
  for (int i = 0; i < kCalls; ++i) {
    stub.Read("hold:" + std::to_string(i), 5000,
              [&](const Status& s, const rpc::ReadResult&) { answered += s.ok() ? 1 : 0; });
  }
  ASSERT_TRUE(RunUntil(loop_, [&] { return handler_->held.size() == kCalls; }));
  const uint64_t writes_before = server_->stats().reply_writes;
  handler_->ReleaseReverse();  // all 64 completions in one callback
  ASSERT_TRUE(RunUntil(loop_, [&] { return answered == kCalls; }));
  EXPECT_EQ(server_->stats().replies_sent, static_cast<uint64_t>(kCalls) + 1);
  EXPECT_EQ(server_->stats().reply_writes - writes_before, 1u);
  // The client coalesces too: the 64 calls made in one turn left in one
  // write, which the server received as 64 frames.
  EXPECT_EQ(stub.channel()->stats().writes - client_writes_before, 1u);
  EXPECT_EQ(server_->stats().frames_received - frames_before, static_cast<uint64_t>(kCalls));
}

TEST_F(RpcTest, PerRequestTimeoutLeavesConnectionUsable) {
  StartServer();
  ParticipantStub stub(&loop_, Address());
  Status held = Status::OK();
  bool held_done = false;
  auto start = std::chrono::steady_clock::now();
  bool not_sent = true;
  stub.Read("hold:slow", 50, [&](const RpcStatus& s, const rpc::ReadResult&) {
    held = s;
    not_sent = s.not_sent();
    held_done = true;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return held_done; }));
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(held.IsTimeout()) << held.ToString();
  EXPECT_FALSE(not_sent);
  EXPECT_GE(waited, std::chrono::milliseconds(45));
  EXPECT_LT(waited, std::chrono::milliseconds(2000));
  EXPECT_EQ(stub.channel()->stats().timeouts, 1u);

  // The late reply is dropped; the same connection serves the next call.
  handler_->ReleaseReverse();
  Status next = Status::Internal("unset");
  stub.Read("fast", 1000, [&](const Status& s, const rpc::ReadResult&) { next = s; });
  ASSERT_TRUE(RunUntil(loop_, [&] { return next.ok(); }));
  EXPECT_EQ(stub.channel()->stats().late_replies, 1u);
  EXPECT_EQ(stub.channel()->stats().connects, 1u);
}

TEST_F(RpcTest, InFlightCallsFailAtOnceWhenConnectionDropsThenReconnect) {
  StartServer();
  int port = server_->port();
  PeerChannelOptions opts;
  opts.reconnect_backoff_initial_ms = 10;
  ParticipantStub stub(&loop_, Address(), opts);
  Status first = Status::Internal("unset");
  stub.Read("a", 1000, [&](const Status& s, const rpc::ReadResult&) { first = s; });
  ASSERT_TRUE(RunUntil(loop_, [&] { return first.ok(); }));

  RpcStatus held = Status::OK();
  bool held_done = false;
  stub.Read("hold:x", 10000, [&](const RpcStatus& s, const rpc::ReadResult&) {
    held = s;
    held_done = true;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return handler_->held.size() == 1; }));
  auto start = std::chrono::steady_clock::now();
  server_.reset();  // server goes away with the request in flight
  ASSERT_TRUE(RunUntil(loop_, [&] { return held_done; }));
  EXPECT_TRUE(held.IsUnavailable()) << held.ToString();
  EXPECT_FALSE(held.not_sent());  // the server had it
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1000));
  EXPECT_FALSE(stub.channel()->connected());

  handler_->held.clear();
  // Restart on the same port; the channel reconnects after its backoff.
  RpcServerOptions so;
  so.port = port;
  StartServer(so);
  Status again = Status::Internal("unset");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!again.ok() && std::chrono::steady_clock::now() < deadline) {
    bool done = false;
    stub.Read("b", 1000, [&](const Status& s, const rpc::ReadResult&) {
      again = s;
      done = true;
    });
    ASSERT_TRUE(RunUntil(loop_, [&] { return done; }));
    if (!again.ok()) RunFor(loop_, 5);
  }
  EXPECT_TRUE(again.ok()) << again.ToString();
  EXPECT_EQ(stub.channel()->stats().connects, 2u);
  EXPECT_EQ(stub.channel()->stats().disconnects, 1u);
}

TEST_F(RpcTest, ConnectRefusedIsUnavailableNotACrash) {
  StartServer();
  int port = server_->port();
  server_.reset();
  RunFor(loop_, 5);
  ParticipantStub stub(&loop_, "127.0.0.1:" + std::to_string(port));
  RpcStatus s = Status::OK();
  bool done = false;
  stub.Read("a", 1000, [&](const RpcStatus& st, const rpc::ReadResult&) {
    s = st;
    done = true;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return done; }));
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_TRUE(s.not_sent());
  // During backoff, calls fail fast, also marked not sent.
  done = false;
  stub.Read("b", 1000, [&](const RpcStatus& st, const rpc::ReadResult&) {
    s = st;
    done = true;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return done; }));
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_TRUE(s.not_sent());
}

TEST_F(RpcTest, BadAddressIsInvalidArgument) {
  ParticipantStub stub(&loop_, "no-port-here");
  Status s = Status::OK();
  bool done = false;
  stub.Read("a", 1000, [&](const Status& st, const rpc::ReadResult&) {
    s = st;
    done = true;
  });
  EXPECT_FALSE(done);  // never inside the call
  ASSERT_TRUE(RunUntil(loop_, [&] { return done; }));
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
}

TEST_F(RpcTest, InFlightLimitGivesBusy) {
  StartServer();
  PeerChannelOptions opts;
  opts.in_flight_max = 2;
  ParticipantStub stub(&loop_, Address(), opts);
  std::vector<Status> results;
  for (int i = 0; i < 3; ++i) {
    stub.Read("hold:" + std::to_string(i), 2000,
              [&](const Status& s, const rpc::ReadResult&) { results.push_back(s); });
  }
  ASSERT_TRUE(RunUntil(loop_, [&] { return results.size() == 1; }));
  EXPECT_TRUE(results[0].IsBusy()) << results[0].ToString();
  handler_->ReleaseReverse();
  ASSERT_TRUE(RunUntil(loop_, [&] {
    if (handler_->held.size() > 0) handler_->ReleaseReverse();
    return results.size() == 3;
  }));
  EXPECT_TRUE(results[1].ok());
  EXPECT_TRUE(results[2].ok());
}

TEST_F(RpcTest, ServerStopsReadingPastPerConnectionInFlightLimit) {
  RpcServerOptions so;
  so.in_flight_per_connection_max = 4;
  StartServer(so);
  ParticipantStub stub(&loop_, Address());
  int ok = 0;
  for (int i = 0; i < 10; ++i) {
    stub.Read("hold:" + std::to_string(i), 5000, [&](const Status& s, const rpc::ReadResult&) {
      if (s.ok()) ++ok;
    });
  }
  ASSERT_TRUE(RunUntil(loop_, [&] { return handler_->held.size() == 4; }));
  RunFor(loop_, 30);
  EXPECT_EQ(handler_->held.size(), 4u);  // the rest wait in the socket
  ASSERT_TRUE(RunUntil(loop_, [&] {
    if (!handler_->held.empty()) handler_->ReleaseReverse();
    return ok == 10;
  }));
  EXPECT_EQ(handler_->reads, 10);
}

TEST_F(RpcTest, ClientGoneWithRequestInFlightIsAnsweredThenClosed) {
  StartServer();
  {
    ParticipantStub stub(&loop_, Address());
    bool done = false;
    stub.Read("hold:1", 5000, [&](const Status&, const rpc::ReadResult&) { done = true; });
    ASSERT_TRUE(RunUntil(loop_, [&] { return handler_->held.size() == 1; }));
    stub.channel()->Close();
    EXPECT_TRUE(done);  // Close() fails pending calls synchronously
  }
  RunFor(loop_, 20);
  // The server treats EOF as a half-close: it keeps the connection until the
  // handler answers, then closes it.
  EXPECT_EQ(server_->connection_count(), 1u);
  handler_->ReleaseReverse();
  ASSERT_TRUE(RunUntil(loop_, [&] { return server_->connection_count() == 0; }));
}

TEST_F(RpcTest, CompletionAfterServerClosedIsDropped) {
  StartServer();
  ParticipantStub stub(&loop_, Address());
  Status s = Status::OK();
  bool done = false;
  stub.Read("hold:1", 5000, [&](const Status& st, const rpc::ReadResult&) {
    s = st;
    done = true;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return handler_->held.size() == 1; }));
  server_->Close();
  handler_->ReleaseReverse();  // must not crash or write anywhere
  EXPECT_EQ(server_->stats().replies_dropped, 1u);
  ASSERT_TRUE(RunUntil(loop_, [&] { return done; }));
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
}

// At the cap with every connection busy (a request in flight), a new one is
// refused; idle connections would be evicted instead (EvictionTest below).
TEST_F(RpcTest, ConnectionLimitRejectsExtraConnections) {
  RpcServerOptions so;
  so.connections_max = 2;
  StartServer(so);
  std::vector<ParticipantStub> stubs;
  for (int i = 0; i < 3; ++i) stubs.emplace_back(&loop_, Address());
  std::vector<Status> results(3, Status::Internal("unset"));
  int done = 0;
  for (int i = 0; i < 2; ++i) {
    stubs[i].Read("hold:" + std::to_string(i), 5000,
                  [&, i](const Status& s, const rpc::ReadResult&) {
                    results[i] = s;
                    ++done;
                  });
  }
  ASSERT_TRUE(RunUntil(loop_, [&] { return handler_->held.size() == 2; }));
  stubs[2].Read("a", 2000, [&](const Status& s, const rpc::ReadResult&) {
    results[2] = s;
    ++done;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return done == 1; }));
  handler_->ReleaseReverse();
  ASSERT_TRUE(RunUntil(loop_, [&] { return done == 3; }));
  EXPECT_TRUE(results[0].ok());
  EXPECT_TRUE(results[1].ok());
  EXPECT_TRUE(results[2].IsUnavailable()) << results[2].ToString();
  EXPECT_EQ(server_->stats().connections_rejected, 1u);
  EXPECT_EQ(server_->stats().connections_evicted, 0u);
}

// A channel whose connection the server closed for being idle serves its
// next call on a new connection, at once (no backoff, no failed call).
TEST_F(RpcTest, ChannelWhoseConnectionTheServerClosedIdleServesTheNextCall) {
  RpcServerOptions so;
  so.idle_timeout_ms = 200;
  StartServer(so);
  ParticipantStub stub(&loop_, Address());
  Status first = Status::Internal("unset");
  stub.Read("a", 2000, [&](const Status& s, const rpc::ReadResult&) { first = s; });
  ASSERT_TRUE(RunUntil(loop_, [&] { return first.ok(); })) << first.ToString();
  ASSERT_TRUE(RunUntil(
      loop_,
      [&] { return server_->stats().connections_closed_idle == 1 && !stub.channel()->connected(); },
      10000));

  Status next = Status::Internal("unset");
  bool next_done = false;
  rpc::ReadResult got;
  stub.Read("b", 2000, [&](const Status& s, const rpc::ReadResult& r) {
    next = s;
    got = r;
    next_done = true;
  });
  ASSERT_TRUE(RunUntil(loop_, [&] { return next_done; }));
  EXPECT_TRUE(next.ok()) << next.ToString();
  EXPECT_EQ(got.value, "v:b");
  EXPECT_EQ(stub.channel()->stats().connects, 2u);
  EXPECT_EQ(stub.channel()->stats().connect_failures, 0u);
  EXPECT_EQ(stub.channel()->stats().calls_repeated, 0u);
}

// The race: the server closes an idle connection (here: evicts it at its cap
// of 1 for a new connection) just as the client writes a call to it. A call
// that is safe to repeat (Read) is sent again on a new connection and
// succeeds; one that is not fails with Unavailable, flagged as possibly
// seen, and the call after it connects anew at once.
TEST_F(RpcTest, CallWrittenToAConnectionTheServerJustClosedIsRepeatedOnlyIfSafe) {
  for (bool safe : {true, false}) {
    SCOPED_TRACE(safe ? "safe to repeat" : "not safe to repeat");
    handler_ = std::make_shared<TestParticipant>();
    std::shared_ptr<PeerChannel> channel;
    int accepted = 0;
    RpcStatus racing = Status::Internal("unset");
    bool racing_done = false;
    auto issue_racing_call = [&] {
      const std::string key = "race";
      rpc::Participant_Read_pargs args;
      args.key = &key;
      channel->Call(
          rpc_method::Participant_Read::kName, internal::WriteArgsOf(args), 5000,
          [&](const RpcStatus& st, apache::thrift::protocol::TProtocol* in) {
            rpc::ReadResult r;
            racing =
                st.ok() ? internal::ReadReply<rpc_method::Participant_Read::PResult>(in, &r) : st;
            racing_done = true;
          },
          safe);
    };
    RpcServerOptions so;
    so.connections_max = 1;
    so.idle_timeout_ms = 0;
    server_ = std::make_unique<RpcServer>(
        &loop_,
        [&](const PeerIdentity&) {
          // The second connection has just evicted the channel's (idle): the
          // channel has not seen the close yet and writes its call to it.
          if (++accepted == 2) issue_racing_call();
          return std::make_shared<rpc::ParticipantAsyncProcessor>(handler_);
        },
        so);
    ASSERT_TRUE(server_->Start().ok());
    channel = PeerChannel::Create(&loop_, Address());
    ParticipantStub stub(channel);
    Status first = Status::Internal("unset");
    stub.Read("a", 2000, [&](const Status& s, const rpc::ReadResult&) { first = s; });
    ASSERT_TRUE(RunUntil(loop_, [&] { return first.ok(); })) << first.ToString();

    int intruder = socket(AF_INET, SOCK_STREAM, 0);  // connects, never sends
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(server_->port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(intruder, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ASSERT_TRUE(RunUntil(loop_, [&] { return racing_done; }));
    if (safe) {
      EXPECT_TRUE(racing.ok()) << racing.ToString();
      EXPECT_EQ(channel->stats().calls_repeated, 1u);
      EXPECT_EQ(handler_->reads, 2) << "a and the repeated race";
    } else {
      EXPECT_TRUE(racing.IsUnavailable()) << racing.ToString();
      EXPECT_FALSE(racing.not_sent()) << "it was written: the peer may have seen it";
      EXPECT_EQ(channel->stats().calls_repeated, 0u);
      Status after = Status::Internal("unset");
      bool after_done = false;
      stub.Read("after", 2000, [&](const Status& s, const rpc::ReadResult&) {
        after = s;
        after_done = true;
      });
      ASSERT_TRUE(RunUntil(loop_, [&] { return after_done; }));
      EXPECT_TRUE(after.ok()) << "no backoff after an idle close: " << after.ToString();
    }
    EXPECT_EQ(channel->stats().connect_failures, 0u);
    EXPECT_GE(server_->stats().connections_evicted, 2u) << "the channel's, then the intruder's";
    EXPECT_EQ(server_->stats().connections_rejected, 0u);
    close(intruder);
    channel->Close();
    server_.reset();
  }
}

TEST(RpcErrorTest, EveryDtxErrorCodeMapsToItsStatus) {
  struct Case {
    rpc::ErrorCode::type code;
    Status::Code want;
  };
  for (Case c : {Case{rpc::ErrorCode::BAD_ARGUMENT, Status::Code::kInvalidArgument},
                 Case{rpc::ErrorCode::UNKNOWN_TX, Status::Code::kNotFound},
                 Case{rpc::ErrorCode::NOT_PRIMARY, Status::Code::kUnavailable},
                 Case{rpc::ErrorCode::STALE_EPOCH, Status::Code::kAborted},
                 Case{rpc::ErrorCode::UNAVAILABLE, Status::Code::kUnavailable},
                 Case{rpc::ErrorCode::TIMEOUT, Status::Code::kTimeout},
                 Case{rpc::ErrorCode::INTERNAL, Status::Code::kInternal},
                 Case{rpc::ErrorCode::WRONG_SHARD, Status::Code::kInvalidArgument},
                 Case{rpc::ErrorCode::PERMISSION_DENIED, Status::Code::kPermissionDenied},
                 // 15: no code (and in range of the enum type: its values fit in 4 bits).
                 Case{static_cast<rpc::ErrorCode::type>(15), Status::Code::kInternal}}) {
    RpcStatus s = StatusFromDtxError(MakeDtxError(c.code, "why"));
    EXPECT_EQ(s.code(), c.want) << ErrorCodeName(c.code);
    ASSERT_TRUE(s.error_code().has_value());
    EXPECT_EQ(*s.error_code(), c.code);
    EXPECT_NE(s.message().find("why"), std::string::npos);
  }
  EXPECT_EQ(DtxErrorFromStatus(Status::InvalidArgument("x")).code, rpc::ErrorCode::BAD_ARGUMENT);
  EXPECT_EQ(DtxErrorFromStatus(Status::NotFound("x")).code, rpc::ErrorCode::UNKNOWN_TX);
  EXPECT_EQ(DtxErrorFromStatus(Status::Busy("x")).code, rpc::ErrorCode::UNAVAILABLE);
  EXPECT_EQ(DtxErrorFromStatus(Status::PermissionDenied("x")).code,
            rpc::ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(DtxErrorFromStatus(Status::Timeout("x")).code, rpc::ErrorCode::TIMEOUT);
  EXPECT_EQ(DtxErrorFromStatus(Status::Corruption("x")).code, rpc::ErrorCode::INTERNAL);
  EXPECT_EQ(DtxErrorFromStatus(Status::Timeout("x")).message, "x");
}

// ---- a server on its own loop thread, called with blocking sockets ----

class ThreadedServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_thread_.Start();
    loop_thread_.RunSync([&] {
      handler_ = std::make_shared<TestParticipant>();
      RpcServerOptions so;
      so.frame_bytes_max = 64 << 10;
      Tune(&so);
      server_ = std::make_unique<RpcServer>(
          loop_thread_.loop(), std::make_shared<rpc::ParticipantAsyncProcessor>(handler_), so);
      start_status_ = server_->Start();
      port_ = server_->port();
    });
    ASSERT_TRUE(start_status_.ok()) << start_status_.ToString();
  }
  void TearDown() override {
    loop_thread_.RunSync([&] { server_.reset(); });
    loop_thread_.Stop();
  }
  // Server options a derived fixture changes.
  virtual void Tune(RpcServerOptions*) {}

  // A stock generated client: TSocket + TFramedTransport + TBinaryProtocol.
  rpc::ReadResult StockRead(const std::string& key) {
    auto socket = std::make_shared<apache::thrift::transport::TSocket>("127.0.0.1", port_);
    socket->setRecvTimeout(5000);
    auto transport = std::make_shared<apache::thrift::transport::TFramedTransport>(socket);
    auto protocol = std::make_shared<apache::thrift::protocol::TBinaryProtocol>(transport);
    rpc::ParticipantClient client(protocol);
    transport->open();
    rpc::ReadResult r;
    client.Read(r, key);
    transport->close();
    return r;
  }

  // `rcvbuf` > 0: a small receive buffer, so that a client that does not
  // read leaves the replies with the server soon.
  int Connect(int rcvbuf = 0) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
  }
  static void SendAll(int fd, const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close first
      off += static_cast<size_t>(n);
    }
  }
  // Reads until EOF. True if the peer closed (within the 5 s receive
  // timeout); `*got` receives what arrived before.
  static bool ReadUntilClosed(int fd, std::string* got) {
    char buf[4096];
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
      got->append(buf, static_cast<size_t>(n));
    }
  }
  // Reads one whole frame (header and payload); false on EOF or timeout.
  static bool ReadFrame(int fd, std::string* payload) {
    uint8_t header[4];
    if (recv(fd, header, sizeof(header), MSG_WAITALL) != 4) return false;
    payload->resize(DecodeFrameLength(header));
    size_t off = 0;
    while (off < payload->size()) {
      ssize_t n = recv(fd, payload->data() + off, payload->size() - off, 0);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  static std::string Frame(const std::string& payload) {
    std::string f(4, '\0');
    EncodeFrameLength(static_cast<uint32_t>(payload.size()), reinterpret_cast<uint8_t*>(f.data()));
    return f + payload;
  }
  static std::string CallPayload(const std::string& method, const std::string& key) {
    auto buf = std::make_shared<apache::thrift::transport::TMemoryBuffer>();
    apache::thrift::protocol::TBinaryProtocol p(buf);
    p.writeMessageBegin(method, apache::thrift::protocol::T_CALL, 7);
    rpc::Participant_Read_pargs a;
    a.key = &key;
    a.write(&p);
    p.writeMessageEnd();
    return buf->getBufferAsString();
  }

  // Sends `bytes` (then half-closes if asked), expects the server to close
  // the connection, and checks a stock client is still served.
  void ExpectClosedAndServerStillServes(const std::string& bytes, bool shutdown_write,
                                        std::string* got = nullptr) {
    int fd = Connect();
    SendAll(fd, bytes);
    if (shutdown_write) shutdown(fd, SHUT_WR);
    std::string received;
    EXPECT_TRUE(ReadUntilClosed(fd, &received)) << "server did not close the connection";
    close(fd);
    if (got) *got = received;
    rpc::ReadResult r = StockRead("still-alive");
    EXPECT_EQ(r.value, "v:still-alive");
  }

  uint64_t ClosedForBadInput() {
    uint64_t n = 0;
    loop_thread_.RunSync([&] { n = server_->stats().connections_closed_bad_input; });
    return n;
  }

  LoopThread loop_thread_;
  std::shared_ptr<TestParticipant> handler_;
  std::unique_ptr<RpcServer> server_;
  Status start_status_;
  int port_ = 0;
};

TEST_F(ThreadedServerTest, StockThriftClientCallsTheServer) {
  rpc::ReadResult r = StockRead("hello");
  EXPECT_TRUE(r.found);
  EXPECT_EQ(r.value, "v:hello");
  EXPECT_EQ(r.version, 5);

  auto socket = std::make_shared<apache::thrift::transport::TSocket>("127.0.0.1", port_);
  socket->setRecvTimeout(5000);
  auto transport = std::make_shared<apache::thrift::transport::TFramedTransport>(socket);
  rpc::ParticipantClient client(
      std::make_shared<apache::thrift::protocol::TBinaryProtocol>(transport));
  transport->open();
  try {
    rpc::ReadResult refused;
    client.Read(refused, "notprimary");
    ADD_FAILURE() << "expected DtxError";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::NOT_PRIMARY);
    EXPECT_EQ(e.primary, "10.0.0.9:7000");
  }
  rpc::NodeStatus st;
  client.GetStatus(st);
  EXPECT_EQ(st.name, "participant-test");
  transport->close();
}

// Slow senders (slowloris): a frame must arrive whole within
// partial_frame_timeout_ms of its first byte.
class SlowSenderTest : public ThreadedServerTest {
 protected:
  void Tune(RpcServerOptions* o) override { o->partial_frame_timeout_ms = 300; }
  uint64_t ClosedSlow() {
    uint64_t n = 0;
    loop_thread_.RunSync([&] { n = server_->stats().connections_closed_slow; });
    return n;
  }
};

TEST_F(SlowSenderTest, AFrameThatNeverCompletesClosesItsConnectionOnly) {
  // A header claiming the largest frame allowed, then 10 bytes, then nothing.
  std::string header(4, '\0');
  EncodeFrameLength(64 << 10, reinterpret_cast<uint8_t*>(header.data()));
  int idle = Connect();  // connected, never sends: not a partial frame
  ExpectClosedAndServerStillServes(header + std::string(10, 'x'), false);
  EXPECT_EQ(ClosedSlow(), 1u);
  EXPECT_EQ(ClosedForBadInput(), 0u);
  // The idle connection is still open: a call on it is answered.
  SendAll(idle, Frame(CallPayload("Read", "k")));
  char buf[4];
  EXPECT_EQ(recv(idle, buf, sizeof(buf), MSG_WAITALL), 4) << "the idle connection was closed";
  close(idle);
}

TEST_F(SlowSenderTest, AFrameTrickledInPiecesWithinTheLimitIsServed) {
  int fd = Connect();
  const std::string call = Frame(CallPayload("Read", "slow"));
  for (size_t i = 0; i < call.size(); i += 8) {
    SendAll(fd, call.substr(i, 8));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  char buf[4];
  EXPECT_EQ(recv(fd, buf, sizeof(buf), MSG_WAITALL), 4);
  close(fd);
  EXPECT_EQ(ClosedSlow(), 0u);
}

// Idle connections: closed after idle_timeout_ms; a connection with a
// request in flight, or one that keeps calling, is kept.
class IdleTimeoutTest : public ThreadedServerTest {
 protected:
  void Tune(RpcServerOptions* o) override { o->idle_timeout_ms = 500; }
  RpcServerStats Stats() {
    RpcServerStats st;
    loop_thread_.RunSync([&] { st = server_->stats(); });
    return st;
  }
  size_t Held() {
    size_t n = 0;
    loop_thread_.RunSync([&] { n = handler_->held.size(); });
    return n;
  }
  // One call on `fd` and its whole reply; false if the connection failed.
  static bool CallAndAnswered(int fd, const std::string& key) {
    SendAll(fd, Frame(CallPayload("Read", key)));
    char header[4];
    if (recv(fd, header, sizeof(header), MSG_WAITALL) != 4) return false;
    std::string body(DecodeFrameLength(reinterpret_cast<uint8_t*>(header)), '\0');
    return recv(fd, body.data(), body.size(), MSG_WAITALL) == static_cast<ssize_t>(body.size());
  }
};

TEST_F(IdleTimeoutTest, AnIdleConnectionIsClosedAndBusyOnesAreKept) {
  int idle = Connect();
  ASSERT_TRUE(CallAndAnswered(idle, "served-then-idle"));
  int waiting = Connect();  // a request in flight all along
  SendAll(waiting, Frame(CallPayload("Read", "hold:w")));
  int calling = Connect();  // calls every 50 ms
  ASSERT_TRUE(CallAndAnswered(calling, "c"));
  for (int i = 0; i < 200 && Held() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(Held(), 1u);

  // Until the idle one is closed, then 1.5 s more (a sweep or two).
  std::atomic<bool> idle_closed{false};
  std::thread watcher([&] {
    std::string ignored;
    idle_closed = ReadUntilClosed(idle, &ignored);
  });
  auto stop = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  std::chrono::steady_clock::time_point after_close{};
  bool calls_ok = true;
  while (std::chrono::steady_clock::now() < stop) {
    calls_ok = calls_ok && CallAndAnswered(calling, "c");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (Stats().connections_closed_idle > 0 && after_close == decltype(after_close){}) {
      after_close = std::chrono::steady_clock::now();
    }
    if (after_close != decltype(after_close){} &&
        std::chrono::steady_clock::now() - after_close > std::chrono::milliseconds(1500)) {
      break;
    }
  }
  watcher.join();
  EXPECT_TRUE(idle_closed) << "the idle connection was not closed";
  EXPECT_TRUE(calls_ok) << "the connection that keeps calling was closed";
  EXPECT_EQ(Stats().connections_closed_idle, 1u);

  // The connection with a request in flight is still open: its reply arrives.
  loop_thread_.RunSync([&] { handler_->ReleaseReverse(); });
  char header[4];
  EXPECT_EQ(recv(waiting, header, sizeof(header), MSG_WAITALL), 4);
  close(idle);
  close(waiting);
  close(calling);
}

// Eviction: at the cap, a new connection closes the one idle longest; a busy
// connection is never closed for it, and with none idle the new one is
// refused as before.
class EvictionTest : public IdleTimeoutTest {
 protected:
  void Tune(RpcServerOptions* o) override {
    o->connections_max = 3;
    o->idle_timeout_ms = 0;  // eviction alone
  }
  void WaitHeld(size_t n) {
    for (int i = 0; i < 400 && Held() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(Held(), n);
  }
};

TEST_F(EvictionTest, AtTheCapTheConnectionIdleLongestMakesRoom) {
  int oldest_idle = Connect();  // never sends a byte
  int busy = Connect();
  SendAll(busy, Frame(CallPayload("Read", "hold:b")));
  WaitHeld(1);
  int newer_idle = Connect();
  ASSERT_TRUE(CallAndAnswered(newer_idle, "n"));

  int newcomer = Connect();  // the 4th: the oldest idle one goes
  EXPECT_TRUE(CallAndAnswered(newcomer, "new")) << "the new connection was refused";
  std::string ignored;
  EXPECT_TRUE(ReadUntilClosed(oldest_idle, &ignored)) << "the idle-longest was not evicted";
  EXPECT_TRUE(CallAndAnswered(newer_idle, "still")) << "a newer idle one was evicted instead";
  RpcServerStats st = Stats();
  EXPECT_EQ(st.connections_evicted, 1u);
  EXPECT_EQ(st.connections_rejected, 0u);

  loop_thread_.RunSync([&] { handler_->ReleaseReverse(); });
  char header[4];
  EXPECT_EQ(recv(busy, header, sizeof(header), MSG_WAITALL), 4) << "the busy one was closed";
  for (int fd : {oldest_idle, busy, newer_idle, newcomer}) close(fd);
}

TEST_F(EvictionTest, AtTheCapWithNoIdleConnectionTheNewOneIsRefused) {
  std::vector<int> busy;
  for (int i = 0; i < 3; ++i) {
    busy.push_back(Connect());
    SendAll(busy.back(), Frame(CallPayload("Read", "hold:" + std::to_string(i))));
    WaitHeld(static_cast<size_t>(i + 1));
  }
  int refused = Connect();
  std::string ignored;
  EXPECT_TRUE(ReadUntilClosed(refused, &ignored));
  RpcServerStats st = Stats();
  EXPECT_EQ(st.connections_evicted, 0u);
  EXPECT_EQ(st.connections_rejected, 1u);
  loop_thread_.RunSync([&] { handler_->ReleaseReverse(); });
  for (int fd : busy) {
    char header[4];
    EXPECT_EQ(recv(fd, header, sizeof(header), MSG_WAITALL), 4) << "a busy one was closed";
    close(fd);
  }
  close(refused);
}

TEST_F(ThreadedServerTest, ZeroLengthFrameClosesConnection) {
  ExpectClosedAndServerStillServes(std::string(4, '\0'), false);
  EXPECT_EQ(ClosedForBadInput(), 1u);
}

TEST_F(ThreadedServerTest, OversizedFrameClosesConnection) {
  std::string header(4, '\0');
  EncodeFrameLength((64 << 10) + 1, reinterpret_cast<uint8_t*>(header.data()));
  ExpectClosedAndServerStillServes(header + std::string(100, 'x'), false);
  EXPECT_EQ(ClosedForBadInput(), 1u);
}

TEST_F(ThreadedServerTest, GarbageBytesCloseConnection) {
  ExpectClosedAndServerStillServes("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
  EXPECT_EQ(ClosedForBadInput(), 1u);
}

TEST_F(ThreadedServerTest, MalformedPayloadClosesConnection) {
  // A well-framed payload that is not a Thrift message.
  ExpectClosedAndServerStillServes(Frame(std::string("\x80\x01\x00\x01\xff\xff\xff\xff junk", 13)),
                                   false);
  // A valid header whose args struct is cut short.
  std::string call = CallPayload("Read", "some-key");
  ExpectClosedAndServerStillServes(Frame(call.substr(0, call.size() - 6)), false);
  EXPECT_EQ(ClosedForBadInput(), 2u);
}

TEST_F(ThreadedServerTest, TruncatedFrameAtEofClosesConnection) {
  std::string call = Frame(CallPayload("Read", "k"));
  ExpectClosedAndServerStillServes(call.substr(0, call.size() - 3), true);
  EXPECT_EQ(ClosedForBadInput(), 1u);
}

TEST_F(ThreadedServerTest, UnknownMethodGetsExceptionThenClose) {
  std::string got;
  ExpectClosedAndServerStillServes(Frame(CallPayload("NoSuchMethod", "k")), false, &got);
  ASSERT_GE(got.size(), 8u);
  uint32_t len = DecodeFrameLength(reinterpret_cast<const uint8_t*>(got.data()));
  ASSERT_EQ(got.size(), 4 + len);
  auto buf = std::make_shared<apache::thrift::transport::TMemoryBuffer>(
      reinterpret_cast<uint8_t*>(got.data() + 4), len);
  apache::thrift::protocol::TBinaryProtocol p(buf);
  std::string name;
  apache::thrift::protocol::TMessageType type;
  int32_t seqid = 0;
  p.readMessageBegin(name, type, seqid);
  EXPECT_EQ(type, apache::thrift::protocol::T_EXCEPTION);
  EXPECT_EQ(seqid, 7);
  apache::thrift::TApplicationException x;
  x.read(&p);
  EXPECT_EQ(x.getType(), apache::thrift::TApplicationException::UNKNOWN_METHOD);
  EXPECT_EQ(ClosedForBadInput(), 1u);
}

TEST_F(ThreadedServerTest, ValidCallsBeforeBadFrameStillAnswered) {
  // Two pipelined good calls, then garbage: both answers arrive, then EOF.
  std::string good = Frame(CallPayload("Read", "k"));
  std::string got;
  ExpectClosedAndServerStillServes(good + good + std::string(4, '\0'), false, &got);
  // Replies were written before the close (they are synchronous here).
  EXPECT_EQ(ClosedForBadInput(), 1u);
  EXPECT_GT(got.size(), 8u);
}

// Byte budgets (rpc_server.h): replies and large frames held for clients
// are bounded in bytes, and the server stops reading instead of growing.
class ByteBudgetTest : public ThreadedServerTest {
 protected:
  static constexpr size_t kValueBytes = 256 << 10;
  static constexpr size_t kConnectionBudget = 1 << 20;
  static constexpr size_t kServerBudget = 3 << 20;
  void Tune(RpcServerOptions* o) override {
    o->frame_bytes_max = 2 << 20;
    o->reply_bytes_per_connection_max = kConnectionBudget;
    o->reply_bytes_max = kServerBudget;
    o->frame_bytes_reserved_max = 1 << 20;
    o->partial_frame_timeout_ms = partial_frame_timeout_ms_;
  }
  RpcServerStats Stats() {
    RpcServerStats st;
    loop_thread_.RunSync([&] { st = server_->stats(); });
    return st;
  }
  size_t ReplyBytesQueued() {
    size_t n = 0;
    loop_thread_.RunSync([&] { n = server_->reply_bytes_queued(); });
    return n;
  }
  size_t FrameBytesReserved() {
    size_t n = 0;
    loop_thread_.RunSync([&] { n = server_->frame_bytes_reserved(); });
    return n;
  }
  int Reads() {
    int n = 0;
    loop_thread_.RunSync([&] { n = handler_->reads; });
    return n;
  }
  // Waits until the server has read no request for 300 ms (at most 10 s).
  void WaitUntilReadsStop() {
    int last = -1;
    for (int i = 0; i < 100; ++i) {
      const int now = Reads();
      if (now == last) return;
      last = now;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    ADD_FAILURE() << "the server kept reading";
  }
  // Pipelines `n` Reads of a kValueBytes value on a connection that reads
  // nothing back.
  int FloodWithoutReading(int n) {
    int fd = Connect(4096);
    std::string calls;
    for (int i = 0; i < n; ++i)
      calls += Frame(CallPayload("Read", "big:" + std::to_string(kValueBytes)));
    SendAll(fd, calls);
    return fd;
  }
  static constexpr size_t kReplyFrameMax = kValueBytes + 1024;  // one reply, framed
  // Polls `done` every 50 ms for up to 5 s.
  static bool RunUntilTrue(const std::function<bool()>& done) {
    for (int i = 0; i < 100 && !done(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return done();
  }

  int partial_frame_timeout_ms_ = 0;  // none: a client that does not read is kept
};

TEST_F(ByteBudgetTest, AClientThatDoesNotReadItsRepliesPinsAtMostItsBudget) {
  constexpr int kCalls = 200;  // 50 MiB of replies
  int fd = FloodWithoutReading(kCalls);
  WaitUntilReadsStop();
  EXPECT_LT(Reads(), kCalls) << "the server answered every call into its own memory";
  EXPECT_LT(ReplyBytesQueued(), kConnectionBudget + kReplyFrameMax);
  EXPECT_GE(Stats().reads_paused_reply_budget, 1u);
  // Another client is served meanwhile.
  EXPECT_EQ(StockRead("other").value, "v:other");
  // Once the client reads, every call is answered, in order, whole.
  std::string payload;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(ReadFrame(fd, &payload)) << "reply " << i;
    ASSERT_GT(payload.size(), kValueBytes) << "reply " << i;
  }
  close(fd);
  EXPECT_EQ(Reads(), kCalls + 1);
  EXPECT_EQ(ReplyBytesQueued(), 0u);
}

TEST_F(ByteBudgetTest, ManyClientsThatDoNotReadPinAtMostTheServerBudget) {
  // Six connections could pin 6 x 1.25 MiB by their own budgets; the server's
  // 3 MiB holds them to 3 MiB plus one reply each.
  constexpr int kClients = 6;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) fds.push_back(FloodWithoutReading(50));
  WaitUntilReadsStop();
  EXPECT_LT(ReplyBytesQueued(), kServerBudget + kClients * kReplyFrameMax);
  // A client that reads its replies is still served, large values too.
  EXPECT_EQ(StockRead("big:1000").value.size(), 1000u);
  for (int fd : fds) close(fd);
  EXPECT_TRUE(RunUntilTrue([&] { return ReplyBytesQueued() == 0; }));
}

class SlowReaderTest : public ByteBudgetTest {
 protected:
  SlowReaderTest() { partial_frame_timeout_ms_ = 300; }
};

TEST_F(SlowReaderTest, AConnectionWhoseRepliesMakeNoProgressIsClosed) {
  int fd = FloodWithoutReading(100);
  ASSERT_TRUE(RunUntilTrue([&] { return Stats().connections_closed_slow_reader == 1; }));
  EXPECT_TRUE(RunUntilTrue([&] { return ReplyBytesQueued() == 0; }));
  close(fd);
  EXPECT_EQ(StockRead("after").value, "v:after");
  EXPECT_EQ(Stats().connections_closed_slow_reader, 1u) << "the reading client was closed too";
}

TEST_F(ByteBudgetTest, ALargeFrameWaitsForTheReservationOfAnotherAndIsServedAfterIt) {
  // Two frames of 700 KiB each against a 1 MiB reservation budget: the
  // second waits for the first, unread, then is served.
  const std::string key_a(700 << 10, 'a');
  const std::string key_b(700 << 10, 'b');
  const std::string a = Frame(CallPayload("Read", key_a));
  const std::string b = Frame(CallPayload("Read", key_b));
  int fa = Connect();
  SendAll(fa, a.substr(0, 10 << 10));
  ASSERT_TRUE(RunUntilTrue([&] { return FrameBytesReserved() == a.size() - 4; }));
  int fb = Connect();
  SendAll(fb, b.substr(0, 10 << 10));
  ASSERT_TRUE(RunUntilTrue([&] { return Stats().reads_paused_frame_budget == 1; }));
  EXPECT_EQ(FrameBytesReserved(), a.size() - 4) << "the second frame reserved past the budget";
  // The rest of the second frame arrives, but it waits (unread).
  std::thread send_b([&] { SendAll(fb, b.substr(10 << 10)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(Reads(), 0);
  SendAll(fa, a.substr(10 << 10));
  std::string reply;
  ASSERT_TRUE(ReadFrame(fa, &reply));
  EXPECT_GT(reply.size(), key_a.size());
  ASSERT_TRUE(ReadFrame(fb, &reply));
  EXPECT_GT(reply.size(), key_b.size());
  send_b.join();
  close(fa);
  close(fb);
  EXPECT_EQ(Reads(), 2);
  EXPECT_EQ(FrameBytesReserved(), 0u);
}

// Fair service (rpc_server.h): a connection with thousands of pipelined
// calls in one read yields the loop every 128 dispatches, so another
// connection's call is not served after the whole backlog.
TEST_F(ThreadedServerTest, ABacklogOfPipelinedCallsDoesNotDelayAnotherConnectionsCall) {
  constexpr int kFlood = 2000;
  int flood = Connect();
  int other = Connect();
  std::string calls;
  for (int i = 0; i < kFlood; ++i) calls += Frame(CallPayload("Read", "f" + std::to_string(i)));
  // Both arrive while the loop is busy, so both are readable in its next turn.
  std::promise<void> busy;
  loop_thread_.loop()->Post([&] {
    busy.set_value();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  });
  busy.get_future().wait();
  SendAll(flood, calls);
  SendAll(other, Frame(CallPayload("Read", "other")));
  std::string reply;
  ASSERT_TRUE(ReadFrame(other, &reply));
  for (int i = 0; i < kFlood; ++i) ASSERT_TRUE(ReadFrame(flood, &reply)) << i;
  close(flood);
  close(other);
  std::vector<std::string> keys;
  uint64_t yields = 0;
  loop_thread_.RunSync([&] {
    keys = handler_->keys;
    yields = server_->stats().parse_yields;
  });
  ASSERT_EQ(keys.size(), static_cast<size_t>(kFlood + 1));
  const auto at = std::find(keys.begin(), keys.end(), "other") - keys.begin();
  EXPECT_LT(at, 2 * 128) << "the other connection's call was served after " << at << " calls";
  EXPECT_GE(yields, 2000u / 128 - 1);
}

}  // namespace
}  // namespace dtx
