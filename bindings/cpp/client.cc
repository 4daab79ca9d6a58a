// dtx C++ client: Client, Transaction, AsyncTransaction (include/dtx/client.h).
//
// Internals: ClientCore owns the I/O thread (LoopThread), the coordinator and
// participant channels, the cached shard map and the open-transaction count.
// TxState holds one transaction's read set, write set and limits. Everything
// that touches a channel runs on the loop thread; TxState fields are guarded
// by its mutex because user threads (Put/Delete, sync calls) and the loop
// thread (RPC callbacks) both reach them.
#include "dtx/client.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/address.h"
#include "common/certs.h"
#include "common/check.h"
#include "common/event_loop.h"
#include "common/log.h"
#include "common/rpc_client.h"
#include "common/thread_annotations.h"
#include "common/tls.h"
#include "common/wire.h"
#include "bindings/cpp/shed_throttle.h"
#include "tools/cluster_config.h"

namespace dtx {
namespace internal {

namespace {

constexpr int kCommitRetryDelayMs = 50;  // times the attempt number
constexpr int kCommitRetryDelayMaxMs = 200;
constexpr int kShardMapRetryDelayMs = 30;

Status ClientClosed() { return Status::Unavailable("client closed"); }

// How much an error of a shard-map fetch says about the connection (see
// FetchShardMap): 2 for a refused identity, 1 for another failed TLS
// handshake (common/rpc_client.cc reports them as "...: TLS: why"), else 0.
int HandshakeErrorRank(const std::string& error) {
  if (error.find(": PermissionDenied: ") != std::string::npos) return 2;
  if (error.find(": TLS: ") != std::string::npos) return 1;
  return 0;
}

// A result with nothing but a status (no abort reason, known outcome).
CommitOutcome PlainOutcome(Status status, const TxId& txid) {
  CommitOutcome o;
  o.status = std::move(status);
  o.txid = txid;
  return o;
}

CommitOutcome OutcomeUnknown(const TxId& txid, const std::string& why) {
  CommitOutcome o;
  o.txid = txid;
  o.outcome_unknown = true;
  o.status = Status::Unavailable("outcome unknown: " + why + " (txid " + txid.ToString() +
                                 "; ask again with the same txid)");
  return o;
}

CommitOutcome FromCommitResult(const TxId& txid, const rpc::CommitResult& r) {
  CommitOutcome o;
  o.txid = txid;
  std::string detail = r.__isset.detail && !r.detail.empty() ? ": " + r.detail : "";
  // Through FromRpc: an out-of-range value from the wire is no enumerator
  // (common/wire.h), and comparing it as one is undefined behaviour.
  const std::optional<Outcome> outcome = FromRpc(r.outcome);
  if (!outcome) {
    return OutcomeUnknown(
        txid, "the coordinator sent outcome " + std::to_string(RawEnumValue(r.outcome)));
  }
  switch (*outcome) {
    case Outcome::kCommitted: o.status = Status::OK(); break;
    case Outcome::kAborted: {
      o.abort_reason = r.__isset.reason ? FromRpc(r.reason) : std::nullopt;
      const char* name = o.abort_reason ? AbortReasonName(*o.abort_reason) : "unspecified";
      o.status = Status::Aborted(std::string("transaction aborted: ") + name + detail);
      break;
    }
    case Outcome::kUnknown: return OutcomeUnknown(txid, "the coordinator could not tell" + detail);
  }
  if (r.__isset.prepare_us) o.prepare_us = r.prepare_us;
  if (r.__isset.decision_us) o.decision_us = r.decision_us;
  return o;
}

}  // namespace

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  // `tls`: client-side context; null: plaintext.
  ClientCore(ClientOptions options, std::shared_ptr<const TlsContext> tls)
      : options_(std::move(options)),
        tls_(std::move(tls)),
        coordinator_addresses_(options_.coordinators) {
    std::random_device rd;
    tx_hi_ = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
             static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    if (tx_hi_ == 0) tx_hi_ = 1;
  }
  ~ClientCore() { Shutdown(); }

  const ClientOptions& options() const { return options_; }

  // Starts the loop thread and fetches the shard map (blocking).
  Status Start() {
    io_.Start();
    std::promise<Status> fetched;
    auto future = fetched.get_future();
    Dispatch(
        [&] {
          FetchShardMap(static_cast<int>(2 * coordinator_addresses_.size() + 1), "",
                        [&](const Status& s) { fetched.set_value(s); });
        },
        [&] { fetched.set_value(ClientClosed()); });
    return future.get();
  }

  // Fails everything in flight with Unavailable("client closed") and joins
  // the loop thread. Not on the loop thread. Safe twice.
  void Shutdown() {
    {
      MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
    }
    DTX_CHECK_MSG(!io_.loop()->InLoopThread(),
                  "dtx::Client destroyed on its own loop thread (inside a callback)");
    io_.RunSync([&] {
      shutting_down_ = true;
      auto timers = std::move(delayed_);
      delayed_.clear();
      for (auto& [key, d] : timers) {
        io_.loop()->Cancel(d.timer);
        d.fn();  // sees shutting_down_ and fails its operation
      }
      for (auto& [addr, ch] : channels_) ch->Close();
    });
    io_.Stop();
  }

  // Runs `fn` on the loop thread (always posted: never inside the caller),
  // or `on_closed` on the calling thread once the client is closed.
  void Dispatch(std::function<void()> fn, const std::function<void()>& on_closed) {
    {
      MutexLock lock(&mu_);
      if (!closed_ && io_.loop()->Post(std::move(fn))) return;
    }
    on_closed();
  }
  // Delivers a ready result to a callback on the loop thread (or inline once
  // closed).
  void Deliver(std::function<void()> fn) {
    auto shared = std::make_shared<std::function<void()>>(std::move(fn));
    Dispatch([shared] { (*shared)(); }, [shared] { (*shared)(); });
  }

  bool InLoopThread() const { return io_.loop()->InLoopThread(); }

  Status AcquireTxSlot() {
    MutexLock lock(&mu_);
    if (closed_) return ClientClosed();
    if (open_tx_ >= options_.in_flight_tx_max) {
      return Status::Busy(std::to_string(open_tx_) + " transactions open (max " +
                          std::to_string(options_.in_flight_tx_max) + ")");
    }
    const int64_t now = SteadyNs();
    if (throttle_.Refuse(now, std::uniform_real_distribution<double>(0, 1)(throttle_rng_))) {
      return Status::Busy(
          "overloaded: the coordinator refused commits lately (it sheds load); this client "
          "refused this transaction before its first read, as it does " +
          std::to_string(static_cast<int>(throttle_.RejectProbability(now) * 100)) +
          " % of new ones now (docs/design.md \"Overload\"); retry later");
    }
    ++open_tx_;
    return Status::OK();
  }
  static int64_t SteadyNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void NoteCommitAnswered(bool accepted) {
    MutexLock lock(&mu_);
    throttle_.Answered(SteadyNs(), accepted);
  }
  void ReleaseTxSlot() {
    MutexLock lock(&mu_);
    DTX_CHECK(open_tx_ > 0);
    --open_tx_;
  }
  size_t open_transactions() const {
    MutexLock lock(&mu_);
    return open_tx_;
  }
  TxId NextTxId() { return TxId{tx_hi_, tx_lo_.fetch_add(1) + 1}; }

  std::vector<std::string> participants() const {
    MutexLock lock(&mu_);
    return participants_;
  }
  int64_t shard_map_version() const {
    MutexLock lock(&mu_);
    return map_version_;
  }
  size_t ShardOf(const std::string& key) const {
    MutexLock lock(&mu_);
    DTX_CHECK(!participants_.empty());
    return static_cast<size_t>(ShardHash(key) % participants_.size());
  }

  // ---- loop thread only ----

  void Read(const std::string& key, RpcCallback<rpc::ReadResult> done) {
    if (shutting_down_) {
      done(ClientClosed(), {});
      return;
    }
    if (participant_stubs_.empty()) {
      done(Status::Unavailable("no shard map"), {});
      return;
    }
    size_t shard = static_cast<size_t>(ShardHash(key) % participant_stubs_.size());
    auto self = shared_from_this();
    participant_stubs_[shard].Read(
        key, options_.request_timeout_ms,
        [self, done = std::move(done)](const RpcStatus& s, const rpc::ReadResult& r) {
          if (s.error_code() == rpc::ErrorCode::WRONG_SHARD) self->RefreshShardMap();
          done(s, r);
        });
  }

  void Commit(std::shared_ptr<const rpc::CommitRequest> req, TxId txid,
              std::function<void(const CommitOutcome&)> done) {
    commit_deadline_ms_[txid] =
        io_.loop()->NowMs() + static_cast<uint64_t>(options_.failover_timeout_ms);
    CommitAttempt(
        std::move(req), txid, 1, false,
        [self = shared_from_this(), txid, done = std::move(done)](const CommitOutcome& o) {
          self->commit_deadline_ms_.erase(txid);
          self->NoteCommitAnswered(/*accepted=*/self->shed_.erase(txid) == 0);
          done(o);
        });
  }

 private:
  struct Delayed {
    TimerId timer;
    std::function<void()> fn;
  };

  // The channel to `address`, whose certificate must be of kind `kind`
  // (with TLS).
  std::shared_ptr<PeerChannel> Channel(const std::string& address, PrincipalKind kind) {
    auto& ch = channels_[address];
    if (!ch) {
      PeerChannelOptions o;
      o.tls = tls_;
      o.expected_server.kind = kind;
      ch = PeerChannel::Create(io_.loop(), address, o);
    }
    return ch;
  }

  // Runs `fn` after `delay_ms` on the loop; at shutdown, runs it at once
  // (it must check shutting_down_).
  void After(int delay_ms, std::function<void()> fn) {
    uint64_t key = next_delayed_++;
    TimerId t = io_.loop()->RunAfter(static_cast<uint64_t>(delay_ms), [this, key] {
      auto it = delayed_.find(key);
      if (it == delayed_.end()) return;
      auto f = std::move(it->second.fn);
      delayed_.erase(it);
      f();
    });
    delayed_.emplace(key, Delayed{t, std::move(fn)});
  }

  // A commit may be tried again (same txid) while under kCommitAttemptsMax
  // attempts and within failover_timeout_ms of the first.
  bool MayRetry(const TxId& txid, int attempt) const {
    if (attempt >= kCommitAttemptsMax) return false;
    auto it = commit_deadline_ms_.find(txid);
    return it != commit_deadline_ms_.end() && io_.loop()->NowMs() < it->second;
  }
  static int RetryDelayMs(int attempt) {
    return std::min(kCommitRetryDelayMs * attempt, kCommitRetryDelayMaxMs);
  }

  // After `failed` did not serve: move on to the next coordinator, unless
  // another request already moved the client off it (concurrent failures
  // must not toggle it back).
  void SwitchAwayFrom(const std::string& failed) {
    if (coordinator_addresses_[coordinator_index_] == failed) SwitchCoordinator(std::nullopt);
  }

  void SwitchCoordinator(const std::optional<std::string>& primary) {
    if (primary && !primary->empty()) {
      auto it = std::find(coordinator_addresses_.begin(), coordinator_addresses_.end(), *primary);
      if (it == coordinator_addresses_.end()) {
        coordinator_addresses_.push_back(*primary);
        it = coordinator_addresses_.end() - 1;
      }
      coordinator_index_ = static_cast<size_t>(it - coordinator_addresses_.begin());
      return;
    }
    coordinator_index_ = (coordinator_index_ + 1) % coordinator_addresses_.size();
  }

  // ---- following a hung primary (see dtx/client.h) ----

  // A request outstanding at coordinator `addr`. `redirect` moves it to the
  // (new) current coordinator and returns true, or returns false to keep
  // waiting for the old one's reply.
  struct Outstanding {
    std::string addr;
    uint64_t started_ms = 0;
    std::function<bool()> redirect;
  };

  uint64_t Track(const std::string& addr, std::function<bool()> redirect) {
    const uint64_t id = next_outstanding_++;
    outstanding_.emplace(id, Outstanding{addr, io_.loop()->NowMs(), std::move(redirect)});
    if (options_.primary_probe_delay_ms > 0 && !probe_timer_armed_) {
      ArmProbeTimer(options_.primary_probe_delay_ms);
    }
    return id;
  }
  // False if the request was already redirected (its reply is to be dropped).
  bool Untrack(uint64_t id) { return outstanding_.erase(id) > 0; }

  void ArmProbeTimer(int delay_ms) {
    probe_timer_armed_ = true;
    auto self = shared_from_this();
    After(delay_ms, [self] {
      self->probe_timer_armed_ = false;
      if (!self->shutting_down_) self->ProbeCheck();
    });
  }

  // Starts a probe round if a request at the current coordinator is overdue;
  // re-arms the timer while anything is outstanding.
  void ProbeCheck() {
    if (outstanding_.empty()) return;
    const uint64_t now = io_.loop()->NowMs();
    const uint64_t delay = static_cast<uint64_t>(options_.primary_probe_delay_ms);
    const std::string& current = coordinator_addresses_[coordinator_index_];
    uint64_t oldest = now;
    for (const auto& [id, o] : outstanding_) oldest = std::min(oldest, o.started_ms);
    bool overdue = false;
    for (const auto& [id, o] : outstanding_) {
      if (o.addr == current && now - o.started_ms >= delay) overdue = true;
    }
    if (overdue && !probe_running_ && coordinator_addresses_.size() > 1) {
      StartProbeRound();
    } else if (!overdue && primary_epoch_seen_[current] == 0) {
      // Not known yet (it was still starting when it served the shard map):
      // learn it while it answers, so that a later probe need not wait for it.
      LearnPrimaryEpoch(current);
    }
    // Next look: half a delay from now if something is overdue already, else
    // when the oldest request becomes overdue.
    const uint64_t next =
        now - oldest >= delay ? static_cast<uint64_t>(ProbeTimeoutMs()) : delay - (now - oldest);
    ArmProbeTimer(static_cast<int>(std::max<uint64_t>(next, 1)));
  }

  // One round: GetStatus to every coordinator, each with a timeout of half
  // the probe delay (so a hung one does not hold up the next round long).
  struct ProbeRound {
    std::string current;        // the coordinator the round is about
    bool current_done = false;  // it answered (or failed to)
    std::string candidate;      // another one that says primary at a newer epoch
    Epoch candidate_epoch = 0;
    size_t pending = 0;  // answers still due from the others
  };

  int ProbeTimeoutMs() const { return std::max(options_.primary_probe_delay_ms / 2, 1); }

  // A probe round now unless one ran within the last probe delay (for hints
  // that the current coordinator may be deposed without being hung).
  void ProbeSoon() {
    if (options_.primary_probe_delay_ms <= 0 || probe_running_ ||
        coordinator_addresses_.size() < 2) {
      return;
    }
    const uint64_t now = io_.loop()->NowMs();
    if (last_probe_ms_ != 0 &&
        now - last_probe_ms_ < static_cast<uint64_t>(options_.primary_probe_delay_ms)) {
      return;
    }
    StartProbeRound();
  }

  void StartProbeRound() {
    probe_running_ = true;
    last_probe_ms_ = io_.loop()->NowMs();
    auto round = std::make_shared<ProbeRound>();
    round->current = coordinator_addresses_[coordinator_index_];
    round->pending = static_cast<size_t>(
        std::count_if(coordinator_addresses_.begin(), coordinator_addresses_.end(),
                      [&](const std::string& a) { return a != round->current; }));
    if (round->pending == 0) {
      probe_running_ = false;
      return;
    }
    auto self = shared_from_this();
    for (const std::string& addr : coordinator_addresses_) {
      CoordinatorStub(Channel(addr, PrincipalKind::kCoordinator))
          .GetStatus(ProbeTimeoutMs(),
                     [self, addr, round](const RpcStatus& s, const rpc::NodeStatus& st) {
                       // The next round may start once the others answered:
                       // a hung current one would hold it up for nothing.
                       if (addr != round->current && --round->pending == 0) {
                         self->probe_running_ = false;
                       }
                       if (self->shutting_down_) return;
                       self->OnProbeAnswer(*round, addr, s.ok() ? &st : nullptr);
                     });
    }
  }

  // Learns `addr`'s epoch if it is primary (no switch): after it served the
  // shard map, so that a later probe can tell a newer primary from a stale one
  // without waiting for this one's answer.
  void LearnPrimaryEpoch(const std::string& addr) {
    if (options_.primary_probe_delay_ms <= 0 || coordinator_addresses_.size() < 2 ||
        learning_epoch_) {
      return;
    }
    learning_epoch_ = true;
    auto self = shared_from_this();
    CoordinatorStub(Channel(addr, PrincipalKind::kCoordinator))
        .GetStatus(options_.request_timeout_ms,
                   [self, addr](const RpcStatus& s, const rpc::NodeStatus& st) {
                     self->learning_epoch_ = false;
                     if (s.ok() && FromRpc(st.role) == NodeRole::kPrimary) {
                       Epoch& e = self->primary_epoch_seen_[addr];
                       e = std::max<Epoch>(e, static_cast<Epoch>(st.epoch));
                     }
                   });
  }

  // Switches away from round.current when another coordinator says it is
  // primary at an epoch newer than any round.current reported - decided at
  // once if round.current's epoch is known, else once round.current has
  // answered or timed out (it may be a newer primary still).
  void OnProbeAnswer(ProbeRound& round, const std::string& addr, const rpc::NodeStatus* st) {
    if (st != nullptr && FromRpc(st->role) == NodeRole::kPrimary) {
      Epoch& e = primary_epoch_seen_[addr];
      e = std::max<Epoch>(e, static_cast<Epoch>(st->epoch));
      if (addr != round.current && static_cast<Epoch>(st->epoch) > round.candidate_epoch) {
        round.candidate = addr;
        round.candidate_epoch = static_cast<Epoch>(st->epoch);
      }
    }
    if (addr == round.current) round.current_done = true;
    if (round.candidate.empty()) return;
    const Epoch current_epoch = primary_epoch_seen_[round.current];
    if (round.candidate_epoch <= current_epoch) return;
    if (current_epoch == 0 && !round.current_done) return;
    // The client may have moved on meanwhile (a NOT_PRIMARY hint).
    if (coordinator_addresses_[coordinator_index_] != round.current) return;
    const std::string from = round.current;
    const std::string to = round.candidate;
    round.candidate.clear();
    DTX_LOG_INFO(
        "coordinator {} is primary at epoch {} (newer than the {} seen from {}); "
        "requests outstanding at {} move to it",
        to, round.candidate_epoch, current_epoch, from, from);
    SwitchCoordinator(to);
    primary_switches_.fetch_add(1, std::memory_order_relaxed);
    std::vector<uint64_t> moving;
    for (const auto& [id, o] : outstanding_) {
      if (o.addr == from) moving.push_back(id);
    }
    for (uint64_t id : moving) {
      auto it = outstanding_.find(id);
      if (it == outstanding_.end()) continue;
      // Untracked before it runs, so the old coordinator's reply is dropped;
      // put back if it chooses to keep waiting.
      Outstanding o = std::move(it->second);
      outstanding_.erase(it);
      auto redirect = o.redirect;
      if (!redirect()) outstanding_.emplace(id, std::move(o));
    }
  }

 public:
  uint64_t primary_switches() const { return primary_switches_.load(std::memory_order_relaxed); }

 private:
  void CommitAttempt(std::shared_ptr<const rpc::CommitRequest> req, TxId txid, int attempt,
                     bool maybe_sent, std::function<void(const CommitOutcome&)> done) {
    if (shutting_down_) {
      if (maybe_sent) {
        done(OutcomeUnknown(txid, "client closed while committing"));
      } else {
        done(PlainOutcome(ClientClosed(), txid));
      }
      return;
    }
    if (maybe_sent && !(req->__isset.is_retry && req->is_retry)) {
      // An earlier attempt may have reached a coordinator: say so, so that a
      // coordinator that cannot prove it did not commit answers UNKNOWN
      // rather than ABORTED.
      auto flagged = std::make_shared<rpc::CommitRequest>(*req);
      flagged->__set_is_retry(true);
      req = std::move(flagged);
    }
    std::string addr = coordinator_addresses_[coordinator_index_];
    auto self = shared_from_this();
    // `done` is shared by the reply and the redirect (a probe found a newer
    // primary): whichever comes first untracks the attempt and runs; the
    // other sees it untracked and does nothing.
    auto shared_done = std::make_shared<std::function<void(const CommitOutcome&)>>(std::move(done));
    const uint64_t track = Track(addr, [self, req, txid, attempt, shared_done] {
      if (!self->MayRetry(txid, attempt)) return false;  // keep waiting for the reply
      DTX_LOG_DEBUG("commit txid={} attempt {}: a newer primary answered the probe; asking it",
                    txid.ToString(), attempt);
      // The abandoned attempt may have reached the old primary: the outcome
      // is open, and resolved like any unknown one (same txid, is_retry).
      self->CommitAttempt(req, txid, attempt + 1, true, std::move(*shared_done));
      return true;
    });
    CoordinatorStub(Channel(addr, PrincipalKind::kCoordinator))
        .Commit(
            *req, options_.commit_timeout_ms,
            [self, req, txid, attempt, maybe_sent, addr, track, shared_done](
                const RpcStatus& s, const rpc::CommitResult& r) mutable {
              if (!self->Untrack(track)) return;  // redirected to a newer primary
              auto done = std::move(*shared_done);
              if (s.ok() && FromRpc(r.outcome) == Outcome::kUnknown &&
                  self->MayRetry(txid, attempt)) {
                // The coordinator cannot tell (it stepped down, or a
                // one-phase participant did not answer): ask again with
                // the same txid - commit is idempotent by txid - which
                // reaches the new primary after a failover.
                DTX_LOG_DEBUG("commit txid={} attempt {} at {}: outcome unknown; asking again",
                              txid.ToString(), attempt, addr);
                self->After(self->RetryDelayMs(attempt), [self, req = std::move(req), txid, attempt,
                                                          done = std::move(done)]() mutable {
                  self->CommitAttempt(std::move(req), txid, attempt + 1, true, std::move(done));
                });
                return;
              }
              if (s.ok()) {
                if (FromRpc(r.outcome) == Outcome::kAborted && r.__isset.reason &&
                    FromRpc(r.reason) == AbortReason::kParticipantUnavailable) {
                  // Either a participant is down, or this coordinator is
                  // cut off from them and a newer primary serves: ask.
                  self->ProbeSoon();
                }
                done(FromCommitResult(txid, r));
                return;
              }
              self->OnCommitError(std::move(req), txid, attempt, maybe_sent, addr, s,
                                  std::move(done));
            });
  }

  void OnCommitError(std::shared_ptr<const rpc::CommitRequest> req, TxId txid, int attempt,
                     bool maybe_sent, const std::string& addr, const RpcStatus& s,
                     std::function<void(const CommitOutcome&)> done) {
    bool retry = false;
    bool may_have_run = false;  // the coordinator may have acted on this attempt
    int delay_ms = 0;
    if (s.error_code()) {
      switch (*s.error_code()) {
        case rpc::ErrorCode::NOT_PRIMARY:
          SwitchCoordinator(s.primary());
          retry = true;
          break;
        case rpc::ErrorCode::UNAVAILABLE:
          // A node shedding load (retry_after_ms) did nothing and is up:
          // asking again at once, or the other coordinator, only adds load.
          // The application gets the retryable Unavailable.
          if (s.retry_after_ms()) {
            shed_.insert(txid);
            break;
          }
          SwitchAwayFrom(addr);
          retry = true;
          delay_ms = RetryDelayMs(attempt);
          break;
        case rpc::ErrorCode::WRONG_SHARD: RefreshShardMap(); break;
        case rpc::ErrorCode::TIMEOUT:
        case rpc::ErrorCode::INTERNAL: may_have_run = true; break;
        default: break;
      }
    } else if (s.IsUnavailable() || s.IsTimeout()) {
      may_have_run = !s.not_sent();
      SwitchAwayFrom(addr);
      retry = true;
      delay_ms = RetryDelayMs(attempt);
    } else {
      may_have_run = true;  // undecodable reply and the like
    }
    maybe_sent = maybe_sent || may_have_run;
    if (retry && MayRetry(txid, attempt)) {
      DTX_LOG_DEBUG("commit txid={} attempt {} at {} failed: {}; retrying", txid.ToString(),
                    attempt, addr, s.ToString());
      auto self = shared_from_this();
      After(delay_ms, [self, req = std::move(req), txid, attempt, maybe_sent,
                       done = std::move(done)]() mutable {
        self->CommitAttempt(std::move(req), txid, attempt + 1, maybe_sent, std::move(done));
      });
      return;
    }
    if (maybe_sent) {
      done(OutcomeUnknown(txid, "commit at " + addr + " failed: " + s.ToString()));
    } else {
      done(PlainOutcome(s, txid));
    }
  }

  void FetchShardMap(int attempts_left, std::string last_error,
                     std::function<void(const Status&)> done) {
    if (shutting_down_) {
      done(ClientClosed());
      return;
    }
    if (attempts_left <= 0) {
      done(Status::Unavailable("no coordinator served the shard map; last error: " + last_error));
      return;
    }
    std::string addr = coordinator_addresses_[coordinator_index_];
    auto self = shared_from_this();
    auto shared_done = std::make_shared<std::function<void(const Status&)>>(std::move(done));
    const uint64_t track = Track(addr, [self, attempts_left, addr, shared_done] {
      self->FetchShardMap(attempts_left - 1, addr + ": a newer primary answered the probe",
                          std::move(*shared_done));
      return true;
    });
    CoordinatorStub(Channel(addr, PrincipalKind::kCoordinator))
        .GetShardMap(options_.request_timeout_ms, [self, addr, attempts_left, track, shared_done,
                                                   last_error](const RpcStatus& s,
                                                               const rpc::ShardMap& m) mutable {
          if (!self->Untrack(track)) return;  // redirected to a newer primary
          auto done = std::move(*shared_done);
          if (s.ok()) {
            Status installed = self->InstallShardMap(m, addr);
            if (installed.ok()) self->LearnPrimaryEpoch(addr);
            done(installed);
            return;
          }
          bool hinted = s.error_code() == rpc::ErrorCode::NOT_PRIMARY && s.primary().has_value();
          if (hinted) {
            self->SwitchCoordinator(s.primary());
          } else {
            self->SwitchAwayFrom(addr);
          }
          std::string err = addr + ": " + s.ToString();
          // A refused identity (a TLS handshake refused by the node or by
          // us), or else any failed TLS handshake (e.g. a plaintext node),
          // says more than the fail-fast Unavailable of the retries made
          // while the channel backs off: keep it.
          if (HandshakeErrorRank(last_error) > HandshakeErrorRank(err)) err = last_error;
          self->After(hinted ? 0 : kShardMapRetryDelayMs,
                      [self, attempts_left, err, done = std::move(done)]() mutable {
                        self->FetchShardMap(attempts_left - 1, err, std::move(done));
                      });
        });
  }

  Status InstallShardMap(const rpc::ShardMap& m, const std::string& from) {
    if (m.scheme != "hash") {
      return Status::NotSupported("shard map scheme '" + m.scheme + "' from " + from);
    }
    if (m.participants.empty()) return Status::Unavailable("empty shard map from " + from);
    for (const auto& p : m.participants) {
      auto hp = ParseHostPort(p);
      if (!hp.ok())
        return Status::Corruption("shard map from " + from + ": " + hp.status().message());
    }
    std::vector<ParticipantStub> stubs;
    stubs.reserve(m.participants.size());
    for (const auto& p : m.participants)
      stubs.emplace_back(Channel(p, PrincipalKind::kParticipant));
    participant_stubs_ = std::move(stubs);
    MutexLock lock(&mu_);
    participants_ = m.participants;
    map_version_ = m.version;
    return Status::OK();
  }

  void RefreshShardMap() {
    if (refreshing_ || shutting_down_) return;
    refreshing_ = true;
    auto self = shared_from_this();
    FetchShardMap(static_cast<int>(coordinator_addresses_.size() + 1), "", [self](const Status& s) {
      self->refreshing_ = false;
      if (!s.ok()) DTX_LOG_WARN("shard map refresh failed: {}", s.ToString());
    });
  }

  const ClientOptions options_;
  const std::shared_ptr<const TlsContext> tls_;
  LoopThread io_;  // first member after options_: destroyed after the channels

  mutable Mutex mu_;
  bool closed_ GUARDED_BY(mu_) = false;
  size_t open_tx_ GUARDED_BY(mu_) = 0;
  ShedThrottle throttle_ GUARDED_BY(mu_){options_.shed_throttle_k};
  std::minstd_rand throttle_rng_ GUARDED_BY(mu_){std::random_device{}()};
  std::vector<std::string> participants_ GUARDED_BY(mu_);
  int64_t map_version_ GUARDED_BY(mu_) = 0;

  uint64_t tx_hi_ = 0;
  std::atomic<uint64_t> tx_lo_{0};

  // Loop thread only.
  bool shutting_down_ = false;
  bool refreshing_ = false;
  std::vector<std::string> coordinator_addresses_;
  size_t coordinator_index_ = 0;
  std::map<std::string, std::shared_ptr<PeerChannel>> channels_;
  std::vector<ParticipantStub> participant_stubs_;
  std::unordered_map<uint64_t, Delayed> delayed_;
  uint64_t next_delayed_ = 1;
  std::unordered_map<TxId, uint64_t, TxIdHash> commit_deadline_ms_;  // commits in progress
  std::unordered_set<TxId, TxIdHash> shed_;  // commits refused as overloaded (ShedThrottle)
  std::unordered_map<uint64_t, Outstanding> outstanding_;            // Commit/GetShardMap calls out
  uint64_t next_outstanding_ = 1;
  bool probe_timer_armed_ = false;
  bool probe_running_ = false;
  uint64_t last_probe_ms_ = 0;                       // start of the last probe round
  bool learning_epoch_ = false;                      // a LearnPrimaryEpoch GetStatus is out
  std::map<std::string, Epoch> primary_epoch_seen_;  // highest epoch each reported as primary
  std::atomic<uint64_t> primary_switches_{0};        // any thread reads it
};

class TxState : public std::enable_shared_from_this<TxState> {
 public:
  TxState(std::shared_ptr<ClientCore> core, TxId txid) : core_(std::move(core)), txid_(txid) {}
  ~TxState() { Finish(); }

  const std::shared_ptr<ClientCore>& core() const { return core_; }
  TxId txid() const { return txid_; }
  bool finished() const {
    MutexLock lock(&mu_);
    return finished_;
  }

  void Get(const std::string& key, std::function<void(GetResult)> done) {
    auto deliver = [this, &done](GetResult r) {
      auto shared = std::make_shared<GetResult>(std::move(r));
      core_->Deliver([done = std::move(done), shared] { done(std::move(*shared)); });
    };
    Status bad = CheckKey(key);
    if (!bad.ok()) {
      deliver(bad);
      return;
    }
    {
      MutexLock lock(&mu_);
      if (finished_) {
        deliver(Finished());
        return;
      }
      if (auto w = writes_.find(key); w != writes_.end()) {
        deliver(GetResult(w->second));
        return;
      }
      if (auto r = reads_.find(key); r != reads_.end()) {
        deliver(GetResult(r->second.found ? std::optional<std::string>(r->second.value)
                                          : std::nullopt));
        return;
      }
      Status s = AddKey(key, 0);
      if (!s.ok()) {
        deliver(s);
        return;
      }
      ++reads_in_flight_;
    }
    auto self = shared_from_this();
    auto shared_done = std::make_shared<std::function<void(GetResult)>>(std::move(done));
    core_->Dispatch(
        [self, key, shared_done] {
          self->core_->Read(key,
                            [self, key, shared_done](const RpcStatus& s, const rpc::ReadResult& r) {
                              GetResult result = self->OnReadDone(key, s, r);
                              (*shared_done)(std::move(result));
                            });
        },
        [self, shared_done] {
          {
            MutexLock lock(&self->mu_);
            --self->reads_in_flight_;
          }
          (*shared_done)(GetResult(ClientClosed()));
        });
  }

  Status Put(const std::string& key, std::optional<std::string> value) {
    DTX_RETURN_IF_ERROR(CheckKey(key));
    if (value && value->size() > kValueBytesMax) {
      return Status::InvalidArgument("value of " + std::to_string(value->size()) +
                                     " bytes exceeds kValueBytesMax (" +
                                     std::to_string(kValueBytesMax) + ")");
    }
    MutexLock lock(&mu_);
    if (finished_) return Finished();
    size_t old_value = 0;
    if (auto w = writes_.find(key); w != writes_.end() && w->second) old_value = w->second->size();
    size_t new_value = value ? value->size() : 0;
    DTX_RETURN_IF_ERROR(AddKey(key, new_value > old_value ? new_value - old_value : 0));
    bytes_ -= std::min(bytes_, old_value > new_value ? old_value - new_value : 0);
    writes_[key] = std::move(value);
    return Status::OK();
  }

  void Commit(std::function<void(const CommitOutcome&)> done) {
    auto shared_done = std::make_shared<std::function<void(const CommitOutcome&)>>(std::move(done));
    auto deliver = [&](CommitOutcome o) {
      core_->Deliver([shared_done, o = std::move(o)] { (*shared_done)(o); });
    };
    auto req = std::make_shared<rpc::CommitRequest>();
    {
      MutexLock lock(&mu_);
      if (finished_) {
        deliver(PlainOutcome(Finished(), txid_));
        return;
      }
      if (reads_in_flight_ > 0) {
        deliver(PlainOutcome(
            Status::InvalidArgument("commit while a Get of this transaction is in flight"), txid_));
        return;
      }
      FinishLocked();
      req->txid = ToRpc(txid_);
      req->reads.reserve(reads_.size());
      for (const auto& [key, r] : reads_) req->reads.push_back(ReadItemToRpc(key, r.version));
      req->writes.reserve(writes_.size());
      for (const auto& [key, v] : writes_) req->writes.push_back(WriteItemToRpc(key, v));
      reads_.clear();
      writes_.clear();
    }
    if (req->reads.empty() && req->writes.empty()) {
      deliver(PlainOutcome(Status::OK(), txid_));
      return;
    }
    req->shard_map_version = core_->shard_map_version();
    auto core = core_;
    TxId txid = txid_;
    core_->Dispatch(
        [core, req, txid, shared_done] {
          core->Commit(req, txid, [shared_done](const CommitOutcome& o) { (*shared_done)(o); });
        },
        [txid, shared_done] { (*shared_done)(PlainOutcome(ClientClosed(), txid)); });
  }

  Status Abort() {
    MutexLock lock(&mu_);
    if (finished_) return Finished();
    FinishLocked();
    reads_.clear();
    writes_.clear();
    return Status::OK();
  }

  // Finishes without committing if still open (destruction).
  void Finish() {
    MutexLock lock(&mu_);
    if (!finished_) FinishLocked();
  }

 private:
  struct ReadEntry {
    bool found = false;
    std::string value;
    Version version = 0;
  };

  static Status Finished() { return Status::InvalidArgument("transaction already finished"); }

  static Status CheckKey(const std::string& key) {
    if (key.empty()) return Status::InvalidArgument("empty key");
    if (key.size() > kKeyBytesMax) {
      return Status::InvalidArgument("key of " + std::to_string(key.size()) +
                                     " bytes exceeds kKeyBytesMax (" +
                                     std::to_string(kKeyBytesMax) + ")");
    }
    return Status::OK();
  }

  // Accounts for `key` (if new) plus `extra_bytes`; InvalidArgument past the
  // per-transaction limits.
  Status AddKey(const std::string& key, size_t extra_bytes) REQUIRES(mu_) {
    bool is_new = keys_.find(key) == keys_.end();
    if (is_new && keys_.size() >= kTxKeysMax) {
      return Status::InvalidArgument("too many keys in one transaction (max " +
                                     std::to_string(kTxKeysMax) + ")");
    }
    size_t add = extra_bytes + (is_new ? key.size() : 0);
    if (bytes_ + add > kTxBytesMax) {
      return Status::InvalidArgument("transaction exceeds kTxBytesMax (" +
                                     std::to_string(kTxBytesMax) + " bytes of keys and values)");
    }
    if (is_new) keys_.insert(key);
    bytes_ += add;
    return Status::OK();
  }

  GetResult OnReadDone(const std::string& key, const RpcStatus& s, const rpc::ReadResult& r) {
    MutexLock lock(&mu_);
    --reads_in_flight_;
    if (!s.ok()) return Status(s);
    // The first read of a key wins: a concurrent second Get returns it too.
    // An absent key still carries a version (a deleted key keeps its
    // tombstone's version), and validation at prepare compares it.
    auto [it, inserted] =
        reads_.try_emplace(key, ReadEntry{r.found, r.found ? r.value : "", r.version});
    (void)inserted;
    if (!it->second.found) return GetResult(std::optional<std::string>());
    return GetResult(std::optional<std::string>(it->second.value));
  }

  void FinishLocked() REQUIRES(mu_) {
    finished_ = true;
    if (slot_held_) {
      slot_held_ = false;
      core_->ReleaseTxSlot();
    }
  }

  std::shared_ptr<ClientCore> core_;
  const TxId txid_;
  mutable Mutex mu_;
  bool finished_ GUARDED_BY(mu_) = false;
  bool slot_held_ GUARDED_BY(mu_) = true;
  size_t reads_in_flight_ GUARDED_BY(mu_) = 0;
  std::map<std::string, ReadEntry> reads_ GUARDED_BY(mu_);
  std::map<std::string, std::optional<std::string>> writes_ GUARDED_BY(mu_);
  std::unordered_set<std::string> keys_ GUARDED_BY(mu_);
  size_t bytes_ GUARDED_BY(mu_) = 0;
};

}  // namespace internal

// ---- AsyncTransaction ----

AsyncTransaction::AsyncTransaction(std::shared_ptr<internal::TxState> state)
    : state_(std::move(state)) {}

AsyncTransaction::~AsyncTransaction() { state_->Finish(); }

void AsyncTransaction::Get(const std::string& key, std::function<void(GetResult)> done) {
  state_->Get(key, std::move(done));
}
Status AsyncTransaction::Put(const std::string& key, const std::string& value) {
  return state_->Put(key, value);
}
Status AsyncTransaction::Delete(const std::string& key) { return state_->Put(key, std::nullopt); }
void AsyncTransaction::Commit(std::function<void(const CommitOutcome&)> done) {
  state_->Commit(std::move(done));
}
Status AsyncTransaction::Abort() { return state_->Abort(); }
TxId AsyncTransaction::txid() const { return state_->txid(); }
bool AsyncTransaction::finished() const { return state_->finished(); }

// ---- Transaction (sync) ----

namespace {
void CheckNotLoopThread(const std::shared_ptr<AsyncTransaction>& tx,
                        const std::shared_ptr<internal::TxState>& state) {
  DTX_CHECK_MSG(tx != nullptr, "use of a moved-from dtx::Transaction");
  DTX_CHECK_MSG(!state->core()->InLoopThread(),
                "synchronous dtx call on the client's loop thread (inside an async callback) "
                "would deadlock");
}
}  // namespace

GetResult Transaction::Get(const std::string& key) {
  CheckNotLoopThread(tx_, tx_ ? tx_->state_ : nullptr);
  std::promise<GetResult> p;
  auto f = p.get_future();
  tx_->Get(key, [&p](GetResult r) { p.set_value(std::move(r)); });
  return f.get();
}

Status Transaction::Put(const std::string& key, const std::string& value) {
  return tx_->Put(key, value);
}

Status Transaction::Delete(const std::string& key) { return tx_->Delete(key); }

Status Transaction::Commit() {
  CheckNotLoopThread(tx_, tx_ ? tx_->state_ : nullptr);
  bool was_finished = tx_->finished();
  std::promise<CommitOutcome> p;
  auto f = p.get_future();
  tx_->Commit([&p](const CommitOutcome& o) { p.set_value(o); });
  CommitOutcome o = f.get();
  // A Commit on a finished transaction reports "already finished" and keeps
  // the details (abort reason, unknown outcome) of the real one.
  if (!was_finished) last_ = o;
  return o.status;
}

Status Transaction::Abort() { return tx_->Abort(); }
TxId Transaction::txid() const { return tx_->txid(); }
bool Transaction::finished() const { return tx_->finished(); }

// ---- Client ----

namespace {

// The options for the coordinators of `config` (coordinator-0 first); with
// TLS (`certs` not empty) the CA and the certificate `cert_name` of `certs`,
// which must exist. `where` names the cluster in errors.
Result<ClientOptions> OptionsForCluster(const tools::ClusterConfig& config, const std::string& certs,
                                        const std::string& cert_name, const std::string& where) {
  ClientOptions options;
  for (const tools::NodeEntry& n : config.nodes()) {  // coordinators first, by index
    if (n.role == tools::NodeKind::kCoordinator) options.coordinators.push_back(n.address);
  }
  if (certs.empty()) return options;
  options.tls_ca_file = CaCertPath(certs);
  options.tls_cert_file = CertPath(certs, cert_name);
  options.tls_key_file = KeyPath(certs, cert_name);
  if (::access(options.tls_cert_file.c_str(), F_OK) != 0 ||
      ::access(options.tls_key_file.c_str(), F_OK) != 0) {
    return Status::InvalidArgument("the cluster " + where + " uses TLS but " + certs +
                                   " has no certificate and key for '" + cert_name +
                                   "' (make one: dtxctl certs create-client " + cert_name +
                                   " --dir " + certs + ")");
  }
  return options;
}

}  // namespace

Result<ClientOptions> ClientOptions::FromClusterDir(const std::string& dir,
                                                    const std::string& cert_name) {
  DTX_RETURN_IF_ERROR(ValidatePrincipalName(cert_name));
  auto config = tools::ClusterConfig::Load(dir);
  if (!config.ok()) return config.status();
  auto security = tools::ClusterSecurity::Load(dir);
  if (!security.ok() && !security.status().IsNotFound()) return security.status();
  // No security.conf: a directory from before TLS, plaintext.
  const bool tls = security.ok() && security->tls;
  return OptionsForCluster(*config, tls ? security->CertsDir(dir) : "", cert_name, dir);
}

Result<ClientOptions> ClientOptions::FromClusterFile(const std::string& path,
                                                     const std::string& cert_name) {
  DTX_RETURN_IF_ERROR(ValidatePrincipalName(cert_name));
  auto file = tools::ClusterFile::Load(path);
  if (!file.ok()) return file.status();
  return OptionsForCluster(file->config, file->CertsDir(), cert_name, path);
}

Result<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.coordinators.empty()) {
    return Status::InvalidArgument("no coordinator address given");
  }
  for (const auto& a : options.coordinators) {
    auto hp = ParseHostPort(a);
    if (!hp.ok()) return hp.status();
  }
  if (options.request_timeout_ms <= 0 || options.commit_timeout_ms <= 0) {
    return Status::InvalidArgument("timeouts must be > 0 ms");
  }
  if (options.failover_timeout_ms < 0) return Status::InvalidArgument("failover_timeout_ms < 0");
  if (options.primary_probe_delay_ms < 0) {
    return Status::InvalidArgument("primary_probe_delay_ms < 0");
  }
  if (options.in_flight_tx_max == 0) return Status::InvalidArgument("in_flight_tx_max is 0");
  if (options.retry_backoff_initial_ms <= 0 ||
      options.retry_backoff_max_ms < options.retry_backoff_initial_ms) {
    return Status::InvalidArgument("bad retry backoff");
  }
  std::shared_ptr<const TlsContext> tls;
  if (!options.tls_ca_file.empty() || !options.tls_cert_file.empty() ||
      !options.tls_key_file.empty()) {
    if (options.tls_ca_file.empty() || options.tls_cert_file.empty() ||
        options.tls_key_file.empty()) {
      return Status::InvalidArgument(
          "TLS needs all three of tls_ca_file, tls_cert_file and tls_key_file");
    }
    auto ctx = TlsContext::Create(TlsFiles{.ca_file = options.tls_ca_file,
                                           .cert_file = options.tls_cert_file,
                                           .key_file = options.tls_key_file},
                                  TlsSide::kClient);
    if (!ctx.ok()) return ctx.status();
    tls = std::move(*ctx);
  }
  auto core = std::make_shared<internal::ClientCore>(std::move(options), std::move(tls));
  Status s = core->Start();
  if (!s.ok()) {
    core->Shutdown();
    return s;
  }
  return std::unique_ptr<Client>(new Client(std::move(core)));
}

Client::~Client() { core_->Shutdown(); }

Result<std::shared_ptr<AsyncTransaction>> Client::BeginAsync() {
  DTX_RETURN_IF_ERROR(core_->AcquireTxSlot());
  auto state = std::make_shared<internal::TxState>(core_, core_->NextTxId());
  return std::shared_ptr<AsyncTransaction>(new AsyncTransaction(std::move(state)));
}

Result<Transaction> Client::Begin() {
  auto tx = BeginAsync();
  if (!tx.ok()) return tx.status();
  return Transaction(std::move(tx).value());
}

namespace {
bool Retryable(const Status& s, const Transaction& tx) {
  if (tx.outcome_unknown()) return false;
  if (s.IsAborted()) {
    return !tx.abort_reason() || *tx.abort_reason() != AbortReason::kClientAbort;
  }
  return s.IsUnavailable() || s.IsTimeout() || s.IsBusy();
}
}  // namespace

Status Client::Run(const std::function<Status(Transaction&)>& fn, int retries) {
  DTX_CHECK_MSG(!core_->InLoopThread(), "Client::Run on the client's loop thread");
  const ClientOptions& o = core_->options();
  int backoff_ms = o.retry_backoff_initial_ms;
  std::minstd_rand rng(
      static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  for (int attempt = 0;; ++attempt) {
    Status s;
    auto begun = Begin();
    if (!begun.ok()) {
      s = begun.status();
      if (!s.IsBusy() || attempt >= retries) return s;
    } else {
      Transaction tx = std::move(begun).value();
      s = fn(tx);
      if (s.ok()) {
        if (!tx.finished()) s = tx.Commit();
      } else if (!tx.finished()) {
        (void)tx.Abort();
      }
      if (s.ok()) return s;
      if (!Retryable(s, tx) || attempt >= retries) return s;
    }
    std::uniform_int_distribution<int> jitter(backoff_ms / 2, backoff_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
    backoff_ms = std::min(backoff_ms * 2, o.retry_backoff_max_ms);
  }
}

std::vector<std::string> Client::participants() const { return core_->participants(); }
int64_t Client::shard_map_version() const { return core_->shard_map_version(); }
size_t Client::ShardOf(const std::string& key) const { return core_->ShardOf(key); }
size_t Client::open_transactions() const { return core_->open_transactions(); }
uint64_t Client::primary_switches() const { return core_->primary_switches(); }

}  // namespace dtx
