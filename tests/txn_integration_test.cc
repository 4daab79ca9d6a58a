// End-to-end transactions on a real 3-participant cluster: multi-participant
// commits, conflicts, write skew, read-after-commit on every participant, the
// bank invariant under 64 concurrent clients (dtx-bench), bad input through
// the C++ API, the client's TLS mistakes.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/certs.h"
#include "tests/cluster_fixture.h"

namespace dtx::testing {
namespace {

using TxnTest = ClusterTest;

TEST(BenchUsageTest, BadFlagsExitTwoWithAMessage) {
  std::string b = DTX_BENCH_PATH;
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {b},
           {b, "--workload", "bank", "--clients", "4", "--duration", "1"},  // no target
           {b, "--workload", "bank", "--cluster", "/x", "--coordinator", "127.0.0.1:1", "--clients",
            "4", "--duration", "1"},
           {b, "--workload", "tpcc", "--cluster", "/x", "--clients", "4", "--duration", "1"},
           {b, "--workload", "ycsb-a", "--cluster", "/x", "--clients", "4", "--duration", "1"},
           {b, "--workload", "bank", "--cluster", "/x", "--clients", "0", "--duration", "1"},
           {b, "--workload", "bank", "--cluster", "/x", "--clients", "4", "--duration", "-1"},
           {b, "--workload", "bank", "--cluster", "/x", "--clients", "4", "--duration", "1",
            "--accounts", "1"},
           {b, "--workload", "bank", "--cluster", "/x", "--clients", "x", "--duration", "1"},
           {b, "--bogus"},
       }) {
    CommandResult r = RunCommand(argv, 10000);
    EXPECT_EQ(r.exit_code, 2) << r.Describe();
    EXPECT_NE(r.err.find("dtx-bench: "), std::string::npos) << r.Describe();
  }
  // A cluster directory without a cluster is a failure, not a usage error.
  TempDir empty("dtx-bench-empty");
  CommandResult r = RunCommand(
      {b, "--workload", "bank", "--cluster", empty.path(), "--clients", "1", "--duration", "1"},
      10000);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
}

TEST_F(TxnTest, MultiKeyTransactionAcrossThreeParticipantsCommitsAllOrNothing) {
  std::map<std::string, std::optional<std::string>> writes;
  for (size_t shard = 0; shard < kParticipants; ++shard) {
    for (int j = 0; j < 2; ++j) {
      writes[KeyOnShard(shard, "multi" + std::to_string(j))] =
          "value-" + std::to_string(shard) + "-" + std::to_string(j);
    }
  }
  ASSERT_TRUE(Write(writes).ok());
  for (const auto& [k, v] : writes) {
    auto r = Read(k);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, v) << k;
  }
  // A transaction that aborts (client abort) leaves nothing anywhere.
  auto tx = client_->Begin();
  ASSERT_TRUE(tx.ok());
  for (size_t shard = 0; shard < kParticipants; ++shard) {
    ASSERT_TRUE(tx->Put(KeyOnShard(shard, "aborted"), "x").ok());
  }
  ASSERT_TRUE(tx->Abort().ok());
  for (size_t shard = 0; shard < kParticipants; ++shard) {
    auto r = Read(KeyOnShard(shard, "aborted"));
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->has_value());
  }
  // Delete across participants, in the same transaction as a put.
  std::map<std::string, std::optional<std::string>> change;
  for (const auto& [k, v] : writes) change[k] = std::nullopt;
  change[KeyOnShard(1, "after-delete")] = "here";
  ASSERT_TRUE(Write(change).ok());
  for (const auto& [k, v] : change) {
    auto r = Read(k);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, v) << k;
  }
}

TEST_F(TxnTest, TwoConflictingTransactionsExactlyOneCommits) {
  for (int round = 0; round < 20; ++round) {
    std::string key = "conflict-" + std::to_string(round);
    ASSERT_TRUE(Write({{key, "0"}}).ok());
    auto t1 = client_->BeginAsync();
    auto t2 = client_->BeginAsync();
    ASSERT_TRUE(t1.ok() && t2.ok());
    ASSERT_TRUE(AsyncGet(**t1, key).ok());
    ASSERT_TRUE(AsyncGet(**t2, key).ok());
    ASSERT_TRUE((*t1)->Put(key, "t1").ok());
    ASSERT_TRUE((*t2)->Put(key, "t2").ok());
    auto f1 = AsyncCommit(**t1);
    auto f2 = AsyncCommit(**t2);
    CommitOutcome o1 = f1.get();
    CommitOutcome o2 = f2.get();
    ASSERT_NE(o1.status.ok(), o2.status.ok())
        << "round " << round << ": " << o1.status.ToString() << " / " << o2.status.ToString();
    const CommitOutcome& loser = o1.status.ok() ? o2 : o1;
    EXPECT_TRUE(loser.status.IsAborted()) << loser.status.ToString();
    ASSERT_TRUE(loser.abort_reason.has_value());
    EXPECT_EQ(*loser.abort_reason, AbortReason::kConflict);
    auto r = Read(key);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(**r, o1.status.ok() ? "t1" : "t2");
  }
}

TEST_F(TxnTest, WriteSkewAcrossTwoParticipantsNeverCommitsBoth) {
  // x on participant 0, y on participant 1; constraint x + y >= 0. Each
  // transaction reads both and, seeing x + y = 100, takes 100 from one of
  // them. Serializable: at most one of the two may commit.
  int one_committed = 0;
  for (int round = 0; round < 20; ++round) {
    std::string x = KeyOnShard(0, "skew-x" + std::to_string(round));
    std::string y = KeyOnShard(1, "skew-y" + std::to_string(round));
    ASSERT_TRUE(Write({{x, "50"}, {y, "50"}}).ok());
    auto t1 = client_->BeginAsync();
    auto t2 = client_->BeginAsync();
    ASSERT_TRUE(t1.ok() && t2.ok());
    for (auto* t : {&*t1, &*t2}) {
      auto rx = AsyncGet(**t, x);
      auto ry = AsyncGet(**t, y);
      ASSERT_TRUE(rx.ok() && ry.ok() && rx->has_value() && ry->has_value());
      ASSERT_GE(std::stoll(**rx) + std::stoll(**ry) - 100, 0);
    }
    ASSERT_TRUE((*t1)->Put(x, "-50").ok());
    ASSERT_TRUE((*t2)->Put(y, "-50").ok());
    std::future<CommitOutcome> f1;
    std::future<CommitOutcome> f2;
    CommitOutcome o1;
    CommitOutcome o2;
    if (round % 2 == 0) {  // concurrent commits
      f1 = AsyncCommit(**t1);
      f2 = AsyncCommit(**t2);
      o1 = f1.get();
      o2 = f2.get();
    } else {  // one after the other: the second read a now-stale version
      o1 = AsyncCommit(**t1).get();
      ASSERT_TRUE(o1.status.ok()) << o1.status.ToString();
      o2 = AsyncCommit(**t2).get();
      EXPECT_EQ(o2.abort_reason, std::optional<AbortReason>(AbortReason::kConflict))
          << o2.status.ToString();
    }
    ASSERT_FALSE(o1.status.ok() && o2.status.ok()) << "write skew committed in round " << round;
    if (o1.status.ok() || o2.status.ok()) ++one_committed;
    auto rx = Read(x);
    auto ry = Read(y);
    ASSERT_TRUE(rx.ok() && ry.ok());
    EXPECT_GE(std::stoll(**rx) + std::stoll(**ry), 0) << "round " << round;
  }
  // The sequential rounds always commit one; the test exercised commits.
  EXPECT_GE(one_committed, 10);
}

TEST_F(TxnTest, CommittedTransactionIsVisibleToTheNextReaderOnEveryParticipant) {
  for (int round = 0; round < 15; ++round) {
    std::map<std::string, std::optional<std::string>> writes;
    for (size_t shard = 0; shard < kParticipants; ++shard) {
      writes[KeyOnShard(shard, "visible")] = "round-" + std::to_string(round);
    }
    ASSERT_TRUE(Write(writes).ok());
    // At once, straight at each participant (stock client) and through a new
    // transaction: never the previous round's value.
    for (const auto& [k, v] : writes) {
      auto stock = StockRead(k);
      ASSERT_TRUE(stock.ok()) << stock.status().ToString();
      EXPECT_TRUE(stock->found) << k;
      EXPECT_EQ(stock->value, *v) << k << " round " << round;
      EXPECT_GT(stock->version, 0);
    }
    auto tx = client_->BeginAsync();
    ASSERT_TRUE(tx.ok());
    for (const auto& [k, v] : writes) {
      auto r = AsyncGet(**tx, k);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(*r, v) << k << " round " << round;
    }
    ASSERT_TRUE((*tx)->Abort().ok());
  }
}

TEST_F(TxnTest, BankInvariantHoldsUnder64ConcurrentClients) {
  TempDir out("dtx-bench-out");
  std::string json = out.path() + "/report.json";
  constexpr int kAccounts = 200;
  CommandResult r =
      RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster", cluster_.dir(), "--clients",
                  "64", "--duration", "3", "--warmup", "0.5", "--accounts",
                  std::to_string(kAccounts), "--json", json, "--seed", "12345"},
                 120000);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("invariant: ok"), std::string::npos) << r.out;
  std::ifstream in(json);
  const nlohmann::json report = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(report.is_object()) << json << ": not a JSON object";
  EXPECT_EQ(report.value("invariant_ok", false), true) << report;
  EXPECT_EQ(report.value("total_balance", int64_t{0}), int64_t{kAccounts} * 1000) << report;
  EXPECT_GT(report.value("committed", int64_t{0}), 0) << report;
  std::cout << r.out;
  // Check the total again independently of the bench, one snapshot per
  // 100 accounts.
  int64_t total = 0;
  for (int first = 0; first < kAccounts; first += 100) {
    Status s = client_->Run([&](Transaction& tx) -> Status {
      int64_t sum = 0;
      for (int i = first; i < first + 100; ++i) {
        char key[32];
        std::snprintf(key, sizeof(key), "acct/%08d", i);
        auto v = tx.Get(key);
        if (!v.ok()) return v.status();
        if (!v->has_value()) return Status::Corruption(std::string(key) + " missing");
        sum += std::stoll(**v);
      }
      total += sum;
      return Status::OK();
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_EQ(total, int64_t{kAccounts} * 1000);
}

TEST_F(TxnTest, BankBenchFailsWhenTheInvariantIsBroken) {
  std::vector<std::string> argv = {
      DTX_BENCH_PATH, "--workload", "bank",     "--cluster", cluster_.dir(), "--clients", "4",
      "--duration",   "0.3",        "--warmup", "0",         "--accounts",   "50"};
  CommandResult first = RunCommand(argv, 60000);
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  // Money from nowhere: the next run (on the same accounts) must notice.
  ASSERT_TRUE(Write({{"acct/00000007", "1000000"}}).ok());
  argv.push_back("--no-load");
  CommandResult second = RunCommand(argv, 60000);
  EXPECT_EQ(second.exit_code, 1) << second.Describe();
  EXPECT_NE(second.out.find("invariant: VIOLATED"), std::string::npos) << second.out;
  // A missing account is reported too.
  ASSERT_TRUE(Write({{"acct/00000007", std::nullopt}}).ok());
  CommandResult third = RunCommand(argv, 60000);
  EXPECT_EQ(third.exit_code, 1) << third.Describe();
  EXPECT_NE(third.out.find("invariant: VIOLATED"), std::string::npos) << third.Describe();
  EXPECT_NE(third.out.find("acct/00000007 is missing"), std::string::npos) << third.Describe();
}

TEST_F(TxnTest, BadInputThroughTheCppApiGetsTypedErrorsAndAppliesNothing) {
  auto tx = client_->Begin();
  ASSERT_TRUE(tx.ok());
  EXPECT_TRUE(tx->Get("").status().IsInvalidArgument());
  EXPECT_TRUE(tx->Put("", "v").IsInvalidArgument());
  EXPECT_TRUE(tx->Delete("").IsInvalidArgument());
  EXPECT_TRUE(tx->Put(std::string(kKeyBytesMax + 1, 'k'), "v").IsInvalidArgument());
  EXPECT_TRUE(tx->Get(std::string(kKeyBytesMax + 1, 'k')).status().IsInvalidArgument());
  EXPECT_TRUE(tx->Put("big", std::string(kValueBytesMax + 1, 'v')).IsInvalidArgument());
  // Limits are inclusive: the largest key and value are fine.
  std::string max_key(kKeyBytesMax, 'K');
  EXPECT_TRUE(tx->Put(max_key, "max").ok());
  EXPECT_TRUE(tx->Put("good", "1").ok());
  Status commit = tx->Commit();
  // The rejected calls left no trace; the accepted ones commit all or nothing.
  auto good = Read("good");
  auto big = Read("big");
  auto maxk = Read(max_key);
  ASSERT_TRUE(good.ok() && big.ok() && maxk.ok());
  EXPECT_FALSE(big->has_value());
  EXPECT_FALSE(StockRead("big")->found);
  if (commit.ok()) {
    EXPECT_EQ(*good, std::optional<std::string>("1"));
    EXPECT_EQ(*maxk, std::optional<std::string>("max"));
  } else {
    EXPECT_FALSE(good->has_value());
    EXPECT_FALSE(maxk->has_value());
  }
  ASSERT_TRUE(commit.ok()) << commit.ToString();

  // Commit twice: the second is a clear error and changes nothing.
  auto before = StockRead("good");
  ASSERT_TRUE(before.ok());
  Status again = tx->Commit();
  EXPECT_TRUE(again.IsInvalidArgument()) << again.ToString();
  EXPECT_NE(again.message().find("already finished"), std::string::npos) << again.ToString();
  EXPECT_EQ(StockRead("good")->version, before->version);

  // Commit after abort.
  auto tx2 = client_->Begin();
  ASSERT_TRUE(tx2.ok());
  ASSERT_TRUE(tx2->Put("good", "2").ok());
  ASSERT_TRUE(tx2->Abort().ok());
  Status after_abort = tx2->Commit();
  EXPECT_TRUE(after_abort.IsInvalidArgument()) << after_abort.ToString();
  EXPECT_TRUE(tx2->Put("good", "3").IsInvalidArgument());
  EXPECT_TRUE(tx2->Abort().IsInvalidArgument());
  EXPECT_EQ(*Read("good"), std::optional<std::string>("1"));

  // Too many keys in one transaction.
  auto tx3 = client_->Begin();
  ASSERT_TRUE(tx3.ok());
  Status last;
  for (size_t i = 0; i <= kTxKeysMax && last.ok(); ++i) {
    last = tx3->Put("many-" + std::to_string(i), "v");
  }
  EXPECT_TRUE(last.IsInvalidArgument()) << last.ToString();
  ASSERT_TRUE(tx3->Abort().ok());
  EXPECT_FALSE(StockRead("many-0")->found);
}

TEST_F(TxnTest, BadInputThroughStockClientsIsRejectedByTheNodes) {
  // The nodes check what the C++ client would have stopped.
  auto coord = tools::CoordinatorConnection::Open(
      cluster_.coordinator_address(), {}, cluster_.ClientTlsAt(cluster_.coordinator_address()));
  ASSERT_TRUE(coord.ok()) << coord.status().ToString();
  rpc::CommitRequest req;
  req.txid.hi = 0x5eed;
  req.txid.lo = 1;
  req.shard_map_version = 0;
  rpc::WriteItem empty;
  empty.key = "";
  empty.__set_value("v");
  rpc::WriteItem fine;
  fine.key = KeyOnShard(0, "stock-bad");
  fine.__set_value("v");
  req.writes = {fine, empty};
  rpc::CommitResult result;
  Status s = tools::RunThrift("Commit", [&] { (*coord)->client().Commit(result, req); });
  EXPECT_TRUE(s.IsInvalidArgument() || (s.ok() && result.outcome == rpc::Outcome::ABORTED))
      << s.ToString();
  EXPECT_FALSE(StockRead(fine.key)->found);

  auto part = tools::ParticipantConnection::Open(client_->participants()[0], {},
                                                 cluster_.ClientTlsAt(client_->participants()[0]));
  ASSERT_TRUE(part.ok());
  rpc::ReadResult rr;
  s = tools::RunThrift("Read", [&] { (*part)->client().Read(rr, ""); });
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  s = tools::RunThrift("Read",
                       [&] { (*part)->client().Read(rr, std::string(kKeyBytesMax + 1, 'k')); });
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  // The connection is still usable after a rejected call.
  rpc::NodeStatus st;
  EXPECT_TRUE(tools::RunThrift("GetStatus", [&] { (*part)->client().GetStatus(st); }).ok());
  // It names its listeners, the one answering first; the cluster runs TLS, and
  // every listener requires a client certificate.
  ASSERT_EQ(st.listeners.size(), 3u);
  EXPECT_EQ(st.listeners[0].address, client_->participants()[0]);
  EXPECT_EQ(tools::DescribeListeners(st),
            "client " + st.listeners[0].address + " (mutual TLS), peer " + st.listeners[1].address +
                " (mutual TLS), admin " + st.listeners[2].address + " (mutual TLS)");
}

}  // namespace
}  // namespace dtx::testing

namespace dtx::testing {
namespace {

// TLS is the default of `cluster up`: the usual mistakes of a client are
// refused, and the reason reaches the caller.
TEST_F(TxnTest, ClientTlsMistakesAreRefusedWithTheReason) {
  ASSERT_TRUE(tools::ClusterSecurity::Load(cluster_.dir())->tls);
  // A client certificate from another CA.
  TempDir other("dtx-other-ca");
  ASSERT_TRUE(CreateCa(other.path(), {}).ok());
  ASSERT_TRUE(CreateCert(other.path(), PrincipalKind::kClient, "client", {}).ok());
  ClientOptions foreign = cluster_.ClientOptionsFor();
  foreign.tls_cert_file = CertPath(other.path(), "client");
  foreign.tls_key_file = KeyPath(other.path(), "client");
  foreign.request_timeout_ms = 1000;
  auto c = Client::Connect(foreign);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("not signed by the CA it trusts"), std::string::npos)
      << c.status().ToString();
  // Trusting another CA: the cluster's certificates are refused by us.
  ClientOptions wrong_ca = cluster_.ClientOptionsFor();
  wrong_ca.tls_ca_file = CaCertPath(other.path());
  wrong_ca.request_timeout_ms = 1000;
  c = Client::Connect(wrong_ca);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("not signed by the cluster CA"), std::string::npos)
      << c.status().ToString();
  // A missing file is named at Connect.
  ClientOptions missing = cluster_.ClientOptionsFor();
  missing.tls_key_file = other.path() + "/nope.key";
  c = Client::Connect(missing);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsInvalidArgument()) << c.status().ToString();
  EXPECT_NE(c.status().message().find("nope.key"), std::string::npos) << c.status().ToString();
  // Plaintext to a TLS port: refused (the node logs why).
  ClientOptions plain;
  plain.coordinators = {cluster_.coordinator_address()};
  plain.request_timeout_ms = 1000;
  EXPECT_FALSE(Client::Connect(plain).ok());
  // The tools: the admin listener refuses a client certificate.
  const tools::NodeEntry* p0 = cluster_.config().Find("participant-0");
  ASSERT_NE(p0, nullptr);
  tools::ToolCredentials as_client = cluster_.creds();
  as_client.admin = as_client.client;
  Status s = tools::SetNodeFailpoint(*p0, as_client, "participant.prepare.before_log", "off");
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_TRUE(
      tools::SetNodeFailpoint(*p0, cluster_.creds(), "participant.prepare.before_log", "off").ok());
}

}  // namespace
}  // namespace dtx::testing
