// Checkpoints and WAL truncation in the real runtime (LevelDB, WAL, worker
// thread), run in-process on a LoopThread and called over loopback with the
// async ParticipantStub on the same loop: a steady workload keeps the WAL
// under a bound; a restart after truncation keeps every committed write and
// every in-doubt transaction; a WAL that does not match the checkpoint, or a
// checkpoint whose CRC does not match, is a clear error.
#include <gtest/gtest.h>
#include <leveldb/db.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "common/rpc_client.h"
#include "participant/runtime.h"

namespace dtx::participant {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSegmentBytes = 64 * 1024;
constexpr int kWorkloadTimeoutS = 60;
constexpr int kCallTimeoutMs = 10000;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dtx-checkpoint-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    loop_.Start();
  }
  void TearDown() override {
    Stop();
    loop_.Stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  RuntimeOptions Options() {
    RuntimeOptions o;
    o.dir = dir_;
    o.listen_port = 0;
    o.coordinator = "127.0.0.1:1";  // nobody: in-doubt transactions stay in doubt
    o.wal.segment_bytes = kSegmentBytes;
    o.checkpoint_interval_records = 500;
    o.checkpoint_interval_ms = 50;
    o.checkpoint_on_shutdown = false;  // restarts below replay as after a crash
    return o;
  }
  Status Start(RuntimeOptions o) {
    Status out;
    loop_.RunSync([&] {
      auto rt = Runtime::Start(loop_.loop(), o);
      if (!rt.ok()) {
        out = rt.status();
        return;
      }
      rt_ = std::move(rt.value());
      stub_ = std::make_unique<ParticipantStub>(loop_.loop(), rt_->address());
      admin_stub_ = std::make_unique<AdminStub>(loop_.loop(), rt_->admin_address());
      peer_stub_ = std::make_unique<ParticipantPeerStub>(loop_.loop(), rt_->peer_address());
    });
    return out;
  }
  void Stop() {
    loop_.RunSync([&] {
      if (stub_) stub_->channel()->Close();
      stub_.reset();
      if (admin_stub_) admin_stub_->channel()->Close();
      admin_stub_.reset();
      if (peer_stub_) peer_stub_->channel()->Close();
      peer_stub_.reset();
      if (rt_) rt_->Shutdown();
      rt_.reset();
    });
  }

  uint64_t WalBytes() const {
    uint64_t total = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fs::path(dir_) / "wal", ec)) {
      if (e.is_regular_file(ec)) total += e.file_size(ec);
    }
    return total;
  }
  int64_t Counter(const std::string& name) {
    std::promise<int64_t> v;
    loop_.RunSync([&] {
      stub_->GetStatus(kCallTimeoutMs, [&](const RpcStatus& st, const rpc::NodeStatus& s) {
        EXPECT_TRUE(st.ok()) << st.ToString();
        v.set_value(st.ok() && s.counters.count(name) ? s.counters.at(name) : -1);
      });
    });
    return v.get_future().get();
  }

  static rpc::PrepareRequest Req(
      int64_t lo, std::vector<std::pair<std::string, std::optional<std::string>>> writes,
      bool one_phase) {
    rpc::PrepareRequest r;
    r.txid.hi = 42;
    r.txid.lo = lo;
    r.epoch = 1;
    r.one_phase = one_phase;
    r.read_only_tx = false;
    for (auto& [k, v] : writes) {
      rpc::WriteItem w;
      w.key = k;
      if (v) w.__set_value(*v);
      r.writes.push_back(w);
    }
    return r;
  }

  // Runs `count` one-phase commits, `window` at a time, writing key
  // "k<i % keys>" (every seventh a delete); records the final value of every
  // key in `model`. Samples the WAL's size meanwhile; returns the largest.
  uint64_t Workload(int64_t first_lo, int count, int window, int keys,
                    std::map<std::string, std::optional<std::string>>* model) {
    std::promise<void> done;
    struct Driver {
      int next = 0, finished = 0, failed = 0;
    };
    auto d = std::make_shared<Driver>();
    std::function<void()> issue;
    issue = [&, d] {
      while (d->next < count && d->next - d->finished < window) {
        int i = d->next++;
        std::string key = "k" + std::to_string(i % keys);
        std::optional<std::string> value;
        if (i % 7 != 3) value = "value-" + std::to_string(i) + std::string(40, 'x');
        (*model)[key] = value;
        peer_stub_->Prepare(Req(first_lo + i, {{key, value}}, /*one_phase=*/true), kCallTimeoutMs,
                            [&, d](const RpcStatus& st, const rpc::PrepareResponse& r) {
                              if (!st.ok() || r.vote != rpc::Vote::YES) ++d->failed;
                              if (++d->finished == count) done.set_value();
                              else issue();
                            });
      }
    };
    loop_.RunSync([&] { issue(); });
    auto fut = done.get_future();
    uint64_t max_bytes = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kWorkloadTimeoutS);
    while (fut.wait_for(std::chrono::milliseconds(5)) != std::future_status::ready) {
      max_bytes = std::max(max_bytes, WalBytes());
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "workload did not finish in " << kWorkloadTimeoutS << " s";
        std::abort();  // callbacks still reference this frame
      }
    }
    max_bytes = std::max(max_bytes, WalBytes());
    int failed = 0;
    loop_.RunSync([&] { failed = d->failed; });
    EXPECT_EQ(failed, 0);
    return max_bytes;
  }

  // Reads `key` through the runtime: {found, value, version}.
  std::tuple<bool, std::string, int64_t> Read(const std::string& key) {
    std::promise<std::tuple<bool, std::string, int64_t>> p;
    loop_.RunSync([&] {
      stub_->Read(key, kCallTimeoutMs, [&](const RpcStatus& st, const rpc::ReadResult& r) {
        if (!st.ok()) {
          ADD_FAILURE() << st.ToString();
          p.set_value({false, "", -1});
          return;
        }
        p.set_value({r.found, r.value, r.version});
      });
    });
    return p.get_future().get();
  }

  void ExpectModel(const std::map<std::string, std::optional<std::string>>& model) {
    for (const auto& [key, value] : model) {
      auto [found, got, version] = Read(key);
      EXPECT_EQ(found, value.has_value()) << key;
      if (value) {
        EXPECT_EQ(got, *value) << key;
      }
      EXPECT_GT(version, 0) << key << ": written keys, deleted ones too, have a version";
    }
  }

  std::string dir_;
  LoopThread loop_;
  std::unique_ptr<Runtime> rt_;
  std::unique_ptr<ParticipantStub> stub_;  // to rt_, on loop_
  std::unique_ptr<AdminStub> admin_stub_;  // to rt_'s admin listener, on loop_
  // To rt_'s peer listener (the 2PC calls a coordinator makes), on loop_.
  std::unique_ptr<ParticipantPeerStub> peer_stub_;
};

TEST_F(CheckpointTest, SteadyWorkloadKeepsTheWalUnderABound) {
  ASSERT_TRUE(Start(Options()).ok());
  std::map<std::string, std::optional<std::string>> model;
  // ~20000 records of ~100 bytes: about 30 segments' worth of WAL.
  uint64_t max_bytes = Workload(1, 20000, 64, 500, &model);
  const int64_t deleted = Counter("wal_segments_deleted");
  const int64_t checkpoints = Counter("checkpoints");
  std::printf(
      "wal bytes max=%llu (%.1f segments), segments deleted=%lld, checkpoints=%lld, last "
      "checkpoint write "
      "(on the worker) %lld us\n",
      static_cast<unsigned long long>(max_bytes), static_cast<double>(max_bytes) / kSegmentBytes,
      static_cast<long long>(deleted), static_cast<long long>(checkpoints),
      static_cast<long long>(Counter("checkpoint_write_us")));
  EXPECT_GE(deleted, 20) << "the workload rolled many segments; most must be gone";
  // A checkpoint every 500 records (~1 segment) or 50 ms, one in flight: the
  // WAL holds the segment being written, the one or two since the last
  // checkpoint and what the next truncation will drop.
  EXPECT_LE(max_bytes, 8 * kSegmentBytes);
  ExpectModel(model);
}

TEST_F(CheckpointTest, RestartAfterTruncationKeepsCommittedWritesAndInDoubtTransactions) {
  ASSERT_TRUE(Start(Options()).ok());
  std::map<std::string, std::optional<std::string>> model;
  Workload(1, 5000, 32, 300, &model);
  // Three transactions prepared and never decided (the coordinator is gone).
  std::vector<int64_t> in_doubt = {900001, 900002, 900003};
  for (int64_t lo : in_doubt) {
    std::promise<rpc::Vote::type> vote;
    loop_.RunSync([&] {
      peer_stub_->Prepare(
          Req(lo, {{"held" + std::to_string(lo), std::string("v")}}, /*one_phase=*/false),
          kCallTimeoutMs, [&](const RpcStatus& st, const rpc::PrepareResponse& r) {
            if (!st.ok()) ADD_FAILURE() << st.ToString();
            vote.set_value(st.ok() ? r.vote : rpc::Vote::NO);
          });
    });
    ASSERT_EQ(vote.get_future().get(), rpc::Vote::YES);
  }
  Workload(100000, 5000, 32, 300, &model);
  // Let a checkpoint cover the last records.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int64_t deleted = Counter("wal_segments_deleted");
  const int64_t cp_lsn = Counter("checkpoint_lsn");
  const int64_t retain = Counter("checkpoint_retain_from");
  EXPECT_GT(deleted, 5);
  EXPECT_LT(retain, cp_lsn) << "the in-doubt PREPAREs hold the truncation point back";
  Stop();

  ASSERT_TRUE(Start(Options()).ok());
  const int64_t replayed = Counter("replayed_records");
  EXPECT_LT(replayed, 6000) << "only what the checkpoint needs is replayed (from the segment "
                               "holding the oldest in-doubt PREPARE)";
  ExpectModel(model);
  std::promise<std::vector<int64_t>> seen;
  loop_.RunSync([&] {
    admin_stub_->ListInDoubt(kCallTimeoutMs,
                             [&](const RpcStatus& st, const std::vector<rpc::InDoubtTx>& txs) {
                               EXPECT_TRUE(st.ok()) << st.ToString();
                               std::vector<int64_t> los;
                               for (const rpc::InDoubtTx& t : txs) los.push_back(t.txid.lo);
                               seen.set_value(los);
                             });
  });
  EXPECT_EQ(seen.get_future().get(), in_doubt);
  // The in-doubt transactions still commit with the writes of their PREPARE.
  std::promise<void> committed;
  loop_.RunSync([&] {
    rpc::TxId t;
    t.hi = 42;
    t.lo = in_doubt[1];
    peer_stub_->Commit(t, 1, kCallTimeoutMs, [&](const RpcStatus& st) {
      EXPECT_TRUE(st.ok()) << st.ToString();
      committed.set_value();
    });
  });
  committed.get_future().get();
  auto [found, value, version] = Read("held" + std::to_string(in_doubt[1]));
  EXPECT_TRUE(found);
  EXPECT_EQ(value, "v");
}

TEST_F(CheckpointTest, CleanShutdownCheckpointMakesTheNextStartReplayLittle) {
  RuntimeOptions o = Options();
  o.checkpoint_interval_records = 1000000;
  o.checkpoint_interval_ms = 1000000;
  o.checkpoint_on_shutdown = true;
  ASSERT_TRUE(Start(o).ok());
  std::map<std::string, std::optional<std::string>> model;
  Workload(1, 2000, 32, 100, &model);
  EXPECT_EQ(Counter("checkpoints"), 0);
  Stop();
  ASSERT_TRUE(Start(o).ok());
  // Only the records of the segment the truncation had to keep are read.
  EXPECT_LT(Counter("replayed_records"), 800);
  ExpectModel(model);
}

TEST_F(CheckpointTest, WalThatEndsBeforeTheCheckpointIsAClearError) {
  ASSERT_TRUE(Start(Options()).ok());
  std::map<std::string, std::optional<std::string>> model;
  Workload(1, 2000, 32, 100, &model);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_GT(Counter("checkpoints"), 0);
  Stop();
  std::error_code ec;
  fs::remove_all(fs::path(dir_) / "wal", ec);
  Status s = Start(Options());
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("checkpoint"), std::string::npos) << s.ToString();
}

// Store integrity: a checkpoint with one flipped byte under valid LevelDB
// checksums (damaged before LevelDB stored it) stops the start with a clear
// error. The byte is the epoch's: read as is, the node would come up at
// epoch 254 and refuse its coordinator's epoch 1 as stale.
TEST_F(CheckpointTest, CheckpointWithACrcMismatchStopsTheStartAndSaysWhy) {
  RuntimeOptions o = Options();
  o.checkpoint_on_shutdown = true;
  ASSERT_TRUE(Start(o).ok());
  std::map<std::string, std::optional<std::string>> model;
  Workload(1, 200, 32, 100, &model);
  Stop();
  const std::string data = (fs::path(dir_) / "data").string();
  {
    leveldb::DB* db = nullptr;
    ASSERT_TRUE(leveldb::DB::Open(leveldb::Options(), data, &db).ok());
    std::unique_ptr<leveldb::DB> owned(db);
    std::string raw;
    ASSERT_TRUE(db->Get(leveldb::ReadOptions(), "", &raw).ok());
    constexpr size_t kEpochLowByte = 1 + 4 + 8 + 8;  // format, CRC, lsn, retain_from
    ASSERT_GT(raw.size(), kEpochLowByte);
    ASSERT_EQ(raw[kEpochLowByte], 1) << "the workload runs at epoch 1";
    raw[kEpochLowByte] = static_cast<char>(raw[kEpochLowByte] ^ 0xff);
    leveldb::WriteOptions sync;
    sync.sync = true;
    ASSERT_TRUE(db->Put(sync, "", raw).ok());
  }
  Status s = Start(Options());
  ASSERT_FALSE(s.ok()) << "started on a damaged checkpoint";
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("checkpoint in " + data + " (LevelDB, the empty key) is corrupt"),
            std::string::npos)
      << s.ToString();
  EXPECT_NE(s.message().find("CRC mismatch"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace dtx::participant
