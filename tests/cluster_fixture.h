// GoogleTest fixture for end-to-end tests against a real local cluster
// (dtx-coordinator + 3 dtx-participant processes under `dtxctl cluster up`,
// loopback, a fresh temporary directory per test). TearDown closes the client,
// prints the nodes' log tails if the test failed, and tears the cluster down
// (dtxctl cluster down, then SIGKILL by pid).
//
// Binary paths come from compile definitions set in tests/CMakeLists.txt:
// DTX_PARTICIPANT_PATH, DTX_COORDINATOR_PATH (and DTX_BENCH_PATH for the
// bench test).
#pragma once

#include <gtest/gtest.h>

#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "dtx/client.h"
#include "tests/harness.h"
#include "tools/admin_client.h"

namespace dtx::testing {

class ClusterTest : public ::testing::Test {
 protected:
  static constexpr int kParticipants = 3;

  void SetUp() override {
    LocalCluster::Options o;
    o.participants = kParticipants;
    o.participant_bin = DTX_PARTICIPANT_PATH;
    o.coordinator_bin = DTX_COORDINATOR_PATH;
    CustomizeCluster(&o);
    Status s = cluster_.Up(o);
    ASSERT_TRUE(s.ok()) << s.ToString();
    // coordinator-0 first, then a backup; the cluster's client certificate
    auto c = Client::Connect(cluster_.ClientOptionsFor());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(*c);
    ASSERT_EQ(client_->participants().size(), static_cast<size_t>(kParticipants));
  }

  // Tests that need another environment or flags for `cluster up`.
  virtual void CustomizeCluster(LocalCluster::Options* /*options*/) {}

  void TearDown() override {
    client_.reset();
    if (HasFailure()) std::cerr << cluster_.LogTails(30);
    cluster_.Down();
  }

  // A key with `prefix` owned by participant `shard` (by the client's map).
  std::string KeyOnShard(size_t shard, const std::string& prefix) const {
    for (int i = 0;; ++i) {
      std::string k = prefix + "-" + std::to_string(i);
      if (client_->ShardOf(k) == shard) return k;
    }
  }

  static constexpr int kUnknownOutcomeRetries = 20;

  static bool OutcomeUnknown(const Status& s) {
    return s.IsUnavailable() && s.message().find("outcome unknown") != std::string::npos;
  }

  // Commits `writes` (nullopt = delete) in one transaction, with retries.
  // Run() does not retry an unknown outcome (right in general); these blind
  // writes of fixed values are idempotent, so the tests may: a node that was
  // just restarted can make the coordinator answer UNKNOWN while it
  // reconnects.
  Status Write(const std::map<std::string, std::optional<std::string>>& writes) {
    Status s;
    for (int i = 0; i < kUnknownOutcomeRetries; ++i) {
      s = client_->Run([&](Transaction& tx) -> Status {
        for (const auto& [k, v] : writes) {
          DTX_RETURN_IF_ERROR(v ? tx.Put(k, *v) : tx.Delete(k));
        }
        return Status::OK();
      });
      if (!OutcomeUnknown(s)) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return s;
  }

  // Reads `key` in a read-only transaction that commits (retried when its
  // outcome is unknown: it wrote nothing).
  Result<std::optional<std::string>> Read(const std::string& key) {
    std::optional<std::string> out;
    Status s;
    for (int i = 0; i < kUnknownOutcomeRetries; ++i) {
      s = client_->Run([&](Transaction& tx) -> Status {
        auto r = tx.Get(key);
        if (!r.ok()) return r.status();
        out = *r;
        return Status::OK();
      });
      if (!OutcomeUnknown(s)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!s.ok()) return s;
    return out;
  }

  // The participant's committed value via the stock ParticipantClient.
  Result<rpc::ReadResult> StockRead(const std::string& key) {
    std::string address = client_->participants()[client_->ShardOf(key)];
    auto c = tools::ParticipantConnection::Open(address, {}, cluster_.ClientTlsAt(address));
    if (!c.ok()) return c.status();
    rpc::ReadResult r;
    DTX_RETURN_IF_ERROR(tools::RunThrift("Read", [&] { (*c)->client().Read(r, key); }));
    return r;
  }

  LocalCluster cluster_;
  std::unique_ptr<Client> client_;
};

// Blocking helpers over the async API (never call them on the loop thread).
inline GetResult AsyncGet(AsyncTransaction& tx, const std::string& key) {
  std::promise<GetResult> p;
  auto f = p.get_future();
  tx.Get(key, [&p](GetResult r) { p.set_value(std::move(r)); });
  return f.get();
}

inline std::future<CommitOutcome> AsyncCommit(AsyncTransaction& tx) {
  auto p = std::make_shared<std::promise<CommitOutcome>>();
  auto f = p->get_future();
  tx.Commit([p](const CommitOutcome& o) { p->set_value(o); });
  return f;
}

}  // namespace dtx::testing
