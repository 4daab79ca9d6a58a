// dtx C++ client: serializable optimistic transactions over a dtx cluster.
//
//   // The `dtxctl cluster up --dir` directory (or, by hand:
//   // dtx::ClientOptions{.coordinators = {"127.0.0.1:40101"}, .tls_ca_file = ...}).
//   auto options = dtx::ClientOptions::FromClusterDir("dtx-cluster");
//   if (!options.ok()) ...;
//   auto client = dtx::Client::Connect(*options);
//   if (!client.ok()) ...;
//   dtx::Status s = (*client)->Run([](dtx::Transaction& tx) -> dtx::Status {
//     auto v = tx.Get("alice");                  // Result<optional<string>>
//     if (!v.ok()) return v.status();
//     return tx.Put("alice", "42");
//   }, /*retries=*/10);                          // commits when fn returns OK
//
// How a transaction runs (docs/design.md "Transactions"):
// - Get() reads straight from the participant owning the key (shard map
//   fetched from the coordinator at Connect and cached; index =
//   ShardHash(key) % participants) and records the version it read. A
//   repeated Get of a key returns the transaction's own buffered write if
//   there is one, else the value of the first read (never a newer one).
// - Put() and Delete() are buffered in the client; nothing is sent.
// - Commit() sends the read set (keys + versions) and the write set to the
//   coordinator's Commit with a client-chosen TxId (random `hi` per Client,
//   counter `lo`). A transaction with no reads and no writes commits locally.
//   If the commit RPC fails in a way that leaves the outcome open (timeout,
//   connection lost, coordinator not primary or starting) or the coordinator
//   answers UNKNOWN (it stepped down after a failover, or a one-phase
//   participant did not answer), the client repeats the same commit (same
//   TxId: the coordinator is idempotent by TxId, and a new primary holds
//   every commit decision of the old one) on the primary it is pointed to or
//   the next coordinator, with backoff, up to kCommitAttemptsMax attempts
//   and ClientOptions::failover_timeout_ms after the first. Only then does
//   Commit report an unknown outcome. Every repeat after an attempt that may
//   have reached the coordinator is flagged CommitRequest.is_retry, so the
//   coordinator answers UNKNOWN rather than ABORTED when it cannot prove the
//   earlier attempt did not commit (e.g. after its own restart).
// - A hung primary (paused, or cut off from the client's replies) is not
//   waited out: once a Commit or GetShardMap to the current coordinator has
//   been outstanding for ClientOptions::primary_probe_delay_ms, the client
//   asks every coordinator's GetStatus (timeout: half the delay; one round
//   at a time, repeated every half delay while requests stay overdue). If
//   another coordinator answers role "primary" with an epoch higher than any
//   the current one reported (when that epoch is not known yet, once the
//   current one answered or timed out), the client switches to it: each
//   outstanding commit is abandoned at the old coordinator (its late reply
//   is ignored) and asked again at the new primary with the same TxId,
//   flagged is_retry - exactly
//   the unknown-outcome path above, so it reports COMMITTED or ABORTED only
//   on the new primary's answer. Outstanding shard-map fetches move too.
//   An ABORTED answer with reason PARTICIPANT_UNAVAILABLE also starts a
//   probe round (at most one per delay): a primary cut off from the
//   participants fails commits fast rather than hanging, and the client
//   moves to a newer primary for the next commits (the aborted one stays
//   aborted: that answer is proof).
// - Abort() drops the buffers; nothing is sent (reads take no locks).
//
// Commit results (the Status, plus accessors for the typed details):
//   OK                     committed.
//   Aborted("transaction aborted: <reason>: <detail>")
//                          the cluster aborted it; abort_reason() gives the
//                          AbortReason (kConflict, kParticipantUnavailable,
//                          kTimeout, kCoordinatorFailover). Retry is safe.
//   Unavailable("outcome unknown: ...")
//                          the commit may or may not have happened (the
//                          coordinator answered UNKNOWN, or could not be asked
//                          again); outcome_unknown() is true. NOT safe to
//                          retry blindly; Run() does not retry it.
//   Unavailable / Timeout  (outcome_unknown() false) nothing was committed:
//                          the coordinator could not be reached before the
//                          commit was sent.
//   InvalidArgument        bad argument (empty key, key > kKeyBytesMax, value
//                          > kValueBytesMax, more than kTxKeysMax keys, more
//                          than kTxBytesMax bytes) -- detected in Get/Put/
//                          Delete before anything is sent -- or
//                          "transaction already finished" for any call after
//                          Commit() or Abort() (nothing is sent).
// Get errors: Unavailable / Timeout (participant unreachable or slow),
// InvalidArgument (bad key; "wrong shard" after a shard-map change, which also
// refreshes the cached map), "transaction already finished".
//
// Threads: the Client owns one I/O thread running an event loop with one
// pipelined connection per node. Client, Transaction and AsyncTransaction
// methods are thread-safe. Sync calls (Transaction, Run, Connect) block the
// calling thread and must not be called from an async callback (the loop
// thread): that is a checked error. Async callbacks run on the client's loop
// thread, never inside the call that started them, and must not block or
// throw. No thread per transaction: thousands of AsyncTransactions may be in
// flight from one thread, up to ClientOptions::in_flight_tx_max.
//
// Lifetime: transactions hold the client's internals alive, so a transaction
// may outlive its Client; once the Client is destroyed every operation fails
// with Unavailable("client closed") (async callbacks then run on the calling
// thread, since there is no loop any more). Destroying the Client fails the
// operations in flight with Unavailable and joins its thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dtx/status.h"
#include "dtx/types.h"

namespace dtx {

inline constexpr size_t kClientInFlightTxMax = 4096;  // open async transactions
inline constexpr int kCommitAttemptsMax = 40;
inline constexpr int kClientFailoverTimeoutMsDefault = 5000;
inline constexpr int kRunRetriesDefault = 10;
inline constexpr int kClientRequestTimeoutMsDefault = 5000;
inline constexpr int kClientCommitTimeoutMsDefault = 10000;
// Above the coordinators' usual commit latency under load (tens of ms) and
// below the failure detector's 400 ms, so that a probe round is already
// running when the backup promotes.
inline constexpr int kClientPrimaryProbeDelayMsDefault = 300;

struct ClientOptions {
  // Coordinator addresses "host:port" (numeric host or localhost), primary
  // first. At least one.
  std::vector<std::string> coordinators;
  int request_timeout_ms = kClientRequestTimeoutMsDefault;  // Get, GetShardMap
  int commit_timeout_ms = kClientCommitTimeoutMsDefault;    // one Commit attempt
  // How long a commit whose outcome is open keeps being retried with the
  // same txid (covers a coordinator failover: detection + promotion).
  int failover_timeout_ms = kClientFailoverTimeoutMsDefault;
  // A Commit or GetShardMap outstanding this long at the current coordinator
  // makes the client ask the coordinators who is primary (see the file
  // comment); each GetStatus probe times out after half of it. 0: never
  // probe (wait for commit_timeout_ms / request_timeout_ms as before).
  int primary_probe_delay_ms = kClientPrimaryProbeDelayMsDefault;
  size_t in_flight_tx_max = kClientInFlightTxMax;
  // Adaptive throttling (docs/design.md "Overload"): after the coordinator
  // refused commits as overloaded, Begin refuses a share of new transactions
  // (Busy, "overloaded: ...") before any read, letting through about this
  // many times what the coordinator took on lately. 0: off.
  double shed_throttle_k = 1.1;
  // Run(): jittered exponential backoff between attempts.
  int retry_backoff_initial_ms = 2;
  int retry_backoff_max_ms = 200;
  // TLS 1.3 (docs/design.md "Trust boundary"): PEM files of the cluster CA
  // and of this client's certificate and key (`dtxctl cluster up` makes
  // DIR/certs/ca.crt, client.crt, client.key; `dtxctl certs create-client`
  // more). Every node requires a client certificate signed by the CA. The
  // client trusts that CA only, and expects a coordinator's certificate
  // (kind coordinator) from the coordinators and a participant's from the
  // participants. All three empty: plaintext, for a cluster started with
  // --insecure. Connect() fails with InvalidArgument naming a missing or bad
  // file; a refused handshake fails the calls with its reason ("certificate
  // not signed by the cluster CA", "a plaintext port?", ...).
  std::string tls_ca_file = {};
  std::string tls_cert_file = {};
  std::string tls_key_file = {};

  // The options for the cluster in a directory written by `dtxctl cluster
  // up` (tools/README.md "Cluster directory"; grammar in
  // tools/cluster_config.h):
  // `coordinators` are the client listeners of the coordinators listed in
  // DIR/cluster.conf, coordinator-0 first; when DIR/security.conf says
  // `tls on`, the TLS files are ca.crt, NAME.crt and NAME.key of the
  // certificate directory it names, NAME = `cert_name` ("client" is the one
  // `cluster up` makes; `dtxctl certs create-client NAME` makes others).
  // Plaintext when it says `tls off` (--insecure) or there is no
  // security.conf (a directory from before TLS). Every other field keeps its
  // default; change them on the result:
  //
  //   auto options = dtx::ClientOptions::FromClusterDir("/tmp/c");
  //   if (!options.ok()) ...;
  //   auto client = dtx::Client::Connect(*options);
  //
  // NotFound when DIR has no cluster.conf; InvalidArgument naming the file
  // and line of a malformed cluster.conf or security.conf, a bad
  // `cert_name`, or a TLS cluster without that certificate and key.
  static Result<ClientOptions> FromClusterDir(const std::string& dir,
                                              const std::string& cert_name = "client");
  // The same from a cluster file (docs/deploy.md; grammar in
  // tools/cluster_config.h), e.g. /etc/dtx/cluster.conf on an application
  // host: the coordinators it lists; TLS as its "tls"/"certs" lines say (or
  // security.conf beside it), with ca.crt, NAME.crt and NAME.key of that
  // certificate directory. NotFound when there is no such file;
  // InvalidArgument as above, or when the file does not say whether the
  // cluster uses TLS.
  static Result<ClientOptions> FromClusterFile(const std::string& path,
                                               const std::string& cert_name = "client");
};

// The outcome of a commit, for the async API (the sync API exposes the same
// fields through Transaction accessors).
struct CommitOutcome {
  Status status;                            // see the table above
  std::optional<AbortReason> abort_reason;  // set iff status.IsAborted()
  bool outcome_unknown = false;             // status.IsUnavailable() and maybe committed
  TxId txid;
  // Per-phase latency as measured by the coordinator that ran the commit
  // (idl/dtx.thrift CommitResult): prepare_us = first PREPARE sent -> last
  // vote in; decision_us = DECISION appended -> durable there and at its
  // backup (two-phase commits only). Unset when the coordinator did not
  // report them (an older coordinator, a remembered outcome, an error).
  std::optional<int64_t> prepare_us;
  std::optional<int64_t> decision_us;
};

using GetResult = Result<std::optional<std::string>>;  // nullopt: key absent

namespace internal {
class ClientCore;
class TxState;
}  // namespace internal

// Asynchronous transaction (see the file comment for threads). Held by
// shared_ptr; dropping the last reference of an unfinished transaction
// aborts it.
class AsyncTransaction {
 public:
  ~AsyncTransaction();
  AsyncTransaction(const AsyncTransaction&) = delete;
  AsyncTransaction& operator=(const AsyncTransaction&) = delete;

  // `done` runs once on the loop thread.
  void Get(const std::string& key, std::function<void(GetResult)> done);
  // Buffered; returns at once (InvalidArgument for bad arguments or a
  // finished transaction).
  Status Put(const std::string& key, const std::string& value);
  Status Delete(const std::string& key);
  // `done` runs once on the loop thread.
  void Commit(std::function<void(const CommitOutcome&)> done);
  // Finishes the transaction without committing. InvalidArgument if already
  // finished.
  Status Abort();

  TxId txid() const;
  bool finished() const;

 private:
  friend class Client;
  friend class Transaction;
  explicit AsyncTransaction(std::shared_ptr<internal::TxState> state);
  std::shared_ptr<internal::TxState> state_;
};

// Synchronous transaction: the async one, blocking on each call. Not for use
// on the loop thread. Movable; destroying an unfinished one aborts it.
class Transaction {
 public:
  Transaction(Transaction&&) noexcept = default;
  Transaction& operator=(Transaction&&) noexcept = default;
  ~Transaction() = default;

  GetResult Get(const std::string& key);
  Status Put(const std::string& key, const std::string& value);
  Status Delete(const std::string& key);
  Status Commit();
  Status Abort();

  // After Commit() returned Aborted: why.
  std::optional<AbortReason> abort_reason() const { return last_.abort_reason; }
  // After Commit() returned Unavailable: true if it may have committed.
  bool outcome_unknown() const { return last_.outcome_unknown; }
  // After Commit() returned: the coordinator's per-phase latency, if reported
  // (see CommitOutcome).
  std::optional<int64_t> prepare_us() const { return last_.prepare_us; }
  std::optional<int64_t> decision_us() const { return last_.decision_us; }
  TxId txid() const;
  bool finished() const;

 private:
  friend class Client;
  explicit Transaction(std::shared_ptr<AsyncTransaction> tx) : tx_(std::move(tx)) {}
  std::shared_ptr<AsyncTransaction> tx_;
  CommitOutcome last_;
};

class Client {
 public:
  // Starts the client's I/O thread, fetches the shard map from the first
  // coordinator that answers (following NOT_PRIMARY hints) and connects
  // lazily to participants. InvalidArgument for bad options; Unavailable if
  // no coordinator served the shard map.
  static Result<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Begins a transaction. Busy when in_flight_tx_max transactions are open.
  Result<Transaction> Begin();
  Result<std::shared_ptr<AsyncTransaction>> BeginAsync();

  // Calls fn(tx) on a fresh transaction, commits it if fn returned OK (and
  // did not finish it), and retries -- up to `retries` more times, with
  // jittered exponential backoff -- when the attempt failed with Aborted
  // (reason other than client abort) or with Unavailable/Timeout that left
  // no unknown outcome (e.g. a participant was unreachable for a Get).
  // fn returning non-OK aborts the attempt; that status is returned unless
  // it is retryable by the same rule. Returns the final status.
  Status Run(const std::function<Status(Transaction&)>& fn, int retries = kRunRetriesDefault);

  // The cached shard map: participant addresses, shard index order.
  std::vector<std::string> participants() const;
  int64_t shard_map_version() const;
  // Index of the participant owning `key` in participants().
  size_t ShardOf(const std::string& key) const;
  size_t open_transactions() const;
  // How many times a probe moved this client to a newer primary (see the
  // file comment); for tests and diagnostics.
  uint64_t primary_switches() const;

 private:
  explicit Client(std::shared_ptr<internal::ClientCore> core) : core_(std::move(core)) {}
  std::shared_ptr<internal::ClientCore> core_;
};

}  // namespace dtx
