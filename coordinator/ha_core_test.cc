// Step-by-step tests of HaCore (coordinator/ha_core.h): heartbeats and
// suspicion, replication and the commit point, the backup's sync state,
// promotion, fencing a lost backup out, step-down, refusals. A small harness
// plays the driver: an in-memory WAL per node (records become durable only
// when the test syncs them) and hand-fed replies.
#include "coordinator/ha_core.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace dtx::coordinator {

// Test-only access to HaCore's transitions (declared a friend in ha_core.h).
struct HaCoreTestAccess {
  static void Transition(HaCore& ha, HaState to) { ha.Transition(to, "forced by a test"); }
};

namespace {

const std::vector<std::string> kParticipants = {"127.0.0.1:5000", "127.0.0.1:5001",
                                                "127.0.0.1:5002"};
const std::string kC0 = "127.0.0.1:4000";
const std::string kC1 = "127.0.0.1:4001";

std::string KeyOn(size_t shard, size_t n = 3) {
  for (int i = 0;; ++i) {
    std::string k = "key" + std::to_string(i);
    if (ShardHash(k) % n == shard) return k;
  }
}

CommitRequest Writes(TxId txid, std::vector<size_t> shards) {
  CommitRequest r;
  r.txid = txid;
  r.shard_map_version = 1;
  for (size_t s : shards) r.writes.push_back(WriteItem{KeyOn(s), std::string("v")});
  return r;
}

struct Entry {
  uint64_t lsn;
  RecordType type;
  std::string payload;
  PersistTag tag;
  bool forced;
  bool durable;
};

// One coordinator node: an HaCore and its in-memory log. Every output is
// accumulated in `out` until the test clears it.
class Node {
 public:
  Node(Role role, std::string self, std::string peer,
       std::vector<std::string> participants = kParticipants,
       uint64_t resync_after_records = kResyncAfterRecords) {
    HaCoreOptions o;
    o.role = role;
    o.self_address = self;
    o.peer = std::move(peer);
    o.heartbeat_ms = 100;
    o.detector.suspect_after_ms = 500;
    o.replicate_timeout_ms = 1000;
    o.resync_after_records = resync_after_records;
    CoreOptions co;
    co.participants = std::move(participants);
    co.self_address = self;
    ha_ = std::make_unique<HaCore>(o, co);
  }
  HaCore& ha() { return *ha_; }

  // A durable record already in the log before Start (e.g. an older run's EPOCH).
  void Preload(const Record& r) {
    log.push_back(Entry{next_lsn_++, TypeOf(r), EncodePayload(r), 0, false, true});
    ASSERT_TRUE(
        ha_->Replay(log.back().lsn, static_cast<uint8_t>(log.back().type), log.back().payload)
            .ok());
  }

  void Start() {
    ha_->Start(now);
    Drain();
  }
  // Moves the HaCore's output into `out`, appending records to the log.
  void Drain() {
    HaReady r = ha_->TakeReady();
    for (PersistRecord& p : r.persist) {
      log.push_back(Entry{next_lsn_++, p.type, p.payload, p.tag, p.forced, false});
    }
    if (r.reload_log) {
      ++reloads;
      for (Entry& e : log) {
        e.forced = false;  // notices for older records are dead
        ASSERT_TRUE(ha_->Replay(e.lsn, static_cast<uint8_t>(e.type), e.payload).ok());
      }
    }
    auto move_all = [](auto& to, auto& from) {
      for (auto& x : from) to.push_back(std::move(x));
    };
    move_all(out.persist, r.persist);
    move_all(out.released, r.released);
    move_all(out.send, r.send);
    move_all(out.replies, r.replies);
    move_all(out.probes, r.probes);
    move_all(out.replicate, r.replicate);
    move_all(out.replicate_answers, r.replicate_answers);
    move_all(out.adopt, r.adopt);
    move_all(out.notes, r.notes);
  }
  // Every appended record becomes durable; forced ones are reported in order.
  void Sync() {
    for (size_t i = 0; i < log.size(); ++i) {
      if (log[i].durable) continue;
      log[i].durable = true;
      if (log[i].forced) {
        ha_->OnPersisted(now, log[i].tag, log[i].lsn);
        Drain();
      }
    }
  }
  void Tick(uint64_t ms) {
    for (uint64_t t = 0; t < ms; t += 10) {
      now += 10;
      ha_->Tick(now);
      Drain();
    }
  }
  // Every outstanding heartbeat probe is answered (ok) or fails.
  void AnswerProbes(bool participants_ok, std::optional<PeerView> peer) {
    std::vector<ProbeMsg> probes = std::move(out.probes);
    out.probes.clear();
    for (const ProbeMsg& p : probes) {
      if (p.peer) {
        ha_->OnProbeReply(now, p.to, peer.has_value(), peer);
      } else {
        ha_->OnProbeReply(now, p.to, participants_ok);
      }
      Drain();
    }
  }
  // Answers the outstanding AdoptEpoch to each participant as `by[participant]`
  // says (a STALE_EPOCH names `held` / `owner`).
  void AnswerAdoptsBy(const std::map<std::string, CallStatus>& by, Epoch held = 0,
                      const std::string& owner = {}) {
    std::vector<AdoptEpochMsg> adopts = std::move(out.adopt);
    out.adopt.clear();
    for (const AdoptEpochMsg& m : adopts) {
      const CallStatus st = by.at(m.to);
      ha_->OnAdoptEpochReply(
          now, m.id, st, "test",
          st == CallStatus::kStaleEpoch ? std::optional<Epoch>(held) : std::nullopt, owner);
      Drain();
    }
  }
  // Answers every outstanding AdoptEpoch with `status`.
  void AnswerAdopts(CallStatus status, size_t max = SIZE_MAX) {
    std::vector<AdoptEpochMsg> adopts = std::move(out.adopt);
    out.adopt.clear();
    // The first `max` get `status`, the rest fail (unreachable).
    for (size_t i = 0; i < adopts.size(); ++i) {
      ha_->OnAdoptEpochReply(now, adopts[i].id, i < max ? status : CallStatus::kUnavailable,
                             "test");
      Drain();
    }
  }
  // Votes YES on every outstanding PREPARE.
  void VoteYes() {
    std::vector<OutMessage> sends = std::move(out.send);
    out.send.clear();
    for (const OutMessage& m : sends) {
      if (const auto* p = std::get_if<PrepareMsg>(&m.body)) {
        PrepareReply r;
        r.msg_id = m.id;
        r.txid = p->txid;
        r.participant = m.to;
        r.vote = Vote::kYes;
        ha_->OnPrepareReply(now, r);
        Drain();
      } else {
        out.send.push_back(m);
      }
    }
  }
  std::vector<CommitResult> CommitResults() const {
    std::vector<CommitResult> v;
    for (const Reply& r : out.replies) {
      if (const auto* c = std::get_if<CommitResult>(&r.body)) v.push_back(*c);
    }
    return v;
  }
  size_t CommitsSent(Epoch epoch) const {
    size_t n = 0;
    for (const OutMessage& m : out.send) {
      if (const auto* c = std::get_if<CommitMsg>(&m.body); c && c->epoch == epoch) ++n;
    }
    return n;
  }

  uint64_t now = 1000;
  std::vector<Entry> log;
  HaReady out;
  int reloads = 0;

 private:
  std::unique_ptr<HaCore> ha_;
  uint64_t next_lsn_ = 1;
};

// Carries every Replicate from `from` to `to` (the backup) and its answers back.
void Replicate(Node& from, Node& to, bool sync_backup = true) {
  std::vector<ReplicateMsg> msgs = std::move(from.out.replicate);
  from.out.replicate.clear();
  for (const ReplicateMsg& m : msgs) {
    HaCore::ReplicateIn in{m.epoch, m.primary, m.generation, m.snapshot, m.records};
    to.ha().OnReplicate(to.now, m.id, in);
    to.Drain();
  }
  if (sync_backup) to.Sync();
  std::vector<ReplicateAnswer> answers = std::move(to.out.replicate_answers);
  to.out.replicate_answers.clear();
  for (const ReplicateAnswer& a : answers) {
    from.ha().OnReplicateReply(from.now, a.token, a.error ? CallStatus::kError : CallStatus::kOk,
                               a.error ? a.error->message : "");
    from.Drain();
  }
}

TEST(HaCore, AloneCommitsWithoutABackupAndProbesParticipants) {
  Node n(Role::kPrimary, kC0, "");
  EXPECT_EQ(n.ha().state(), HaState::kInit);
  n.Start();
  EXPECT_EQ(n.ha().state(), HaState::kAlone);
  EXPECT_EQ(n.ha().node_role(), NodeRole::kPrimary);
  EXPECT_EQ(n.ha().backup_state(), BackupState::kNone);
  ASSERT_EQ(n.out.probes.size(), 3u) << "one probe per participant, none to a peer";
  n.Sync();  // EPOCH 1
  EXPECT_EQ(n.ha().epoch(), 1u);
  n.ha().Commit(n.now, 7, Writes(TxId{1, 1}, {0, 1}));
  n.Drain();
  n.VoteYes();
  EXPECT_TRUE(n.out.replicate.empty());
  EXPECT_TRUE(n.CommitResults().empty()) << "not before the DECISION is durable";
  n.Sync();
  ASSERT_EQ(n.out.released.size(), 1u);
  ASSERT_EQ(n.CommitResults().size(), 1u);
  EXPECT_EQ(n.CommitResults()[0].outcome, Outcome::kCommitted);
  EXPECT_EQ(n.CommitsSent(1), 2u);
}

TEST(HaCore, ParticipantSilentPastTheTimeoutIsSuspectedAndClearedByAHeartbeat) {
  Node n(Role::kPrimary, kC0, "");
  n.Start();
  n.Sync();
  n.AnswerProbes(true, std::nullopt);
  // Participant 2 never answers; the others do every round.
  for (int i = 0; i < 6; ++i) {
    n.Tick(100);
    std::vector<ProbeMsg> probes = std::move(n.out.probes);
    n.out.probes.clear();
    for (const ProbeMsg& p : probes) {
      if (p.to != kParticipants[2]) n.ha().OnProbeReply(n.now, p.to, true);
      n.Drain();
    }
  }
  EXPECT_TRUE(n.ha().participant_suspected(kParticipants[2]));
  EXPECT_FALSE(n.ha().participant_suspected(kParticipants[0]));
  EXPECT_TRUE(n.ha().core().participant_suspected(kParticipants[2])) << "the 2PC core is told";
  EXPECT_EQ(n.ha().stats().participant_suspicions, 1u);
  // A new transaction touching it fails fast.
  n.ha().Commit(n.now, 9, Writes(TxId{1, 2}, {0, 2}));
  n.Drain();
  EXPECT_TRUE(n.CommitResults().empty()) << "ABORTED waits for its abort DECISION";
  n.Sync();
  ASSERT_EQ(n.CommitResults().size(), 1u);
  EXPECT_EQ(n.CommitResults()[0].reason, AbortReason::kParticipantUnavailable);
  n.ha().OnProbeReply(n.now, kParticipants[2], true);
  n.Drain();
  EXPECT_FALSE(n.ha().participant_suspected(kParticipants[2]));
  EXPECT_FALSE(n.ha().core().participant_suspected(kParticipants[2]));
}

// Brings up c0 (primary) and c1 (backup): c0 establishes epoch 2 at the
// participants and snapshots c1.
void PairUp(Node& c0, Node& c1) {
  c0.Start();
  c1.Start();
  EXPECT_EQ(c0.ha().state(), HaState::kStarting);
  EXPECT_EQ(c1.ha().state(), HaState::kBackupSyncing);
  // c0 is starting: it refuses commits until established.
  c0.ha().Commit(c0.now, 1, Writes(TxId{9, 9}, {0, 1}));
  c0.Drain();
  ASSERT_EQ(c0.out.replies.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<Error>(c0.out.replies[0].body));
  c0.out.replies.clear();
  EXPECT_EQ(c0.ha().node_role(), NodeRole::kStarting);
  // c0 hears c1 is a backup: it moves to epoch 1 (a fresh log is at 0).
  c0.AnswerProbes(true, c1.ha().View());
  ASSERT_EQ(c0.out.adopt.size(), 3u);
  EXPECT_EQ(c0.out.adopt[0].epoch, 1u);
  c0.AnswerAdopts(CallStatus::kOk);
  ASSERT_FALSE(c0.out.persist.empty());
  EXPECT_EQ(c0.out.persist.back().type, RecordType::kEpoch);
  EXPECT_FALSE(c0.ha().established()) << "not before its EPOCH record is durable";
  EXPECT_EQ(c0.ha().state(), HaState::kEstablishing);
  c0.Sync();
  EXPECT_TRUE(c0.ha().established());
  EXPECT_EQ(c0.ha().state(), HaState::kPrimarySolo) << "its new epoch fences any backup out";
  EXPECT_EQ(c0.ha().epoch(), 1u);
  EXPECT_EQ(c0.ha().backup_state(), BackupState::kDown);
  // The next heartbeat reply from the backup starts a snapshot.
  c0.Tick(100);
  c0.AnswerProbes(true, c1.ha().View());
  ASSERT_EQ(c0.out.replicate.size(), 1u);
  EXPECT_TRUE(c0.out.replicate[0].snapshot);
  EXPECT_EQ(c0.ha().backup_state(), BackupState::kSyncing);
  EXPECT_EQ(c0.ha().state(), HaState::kPrimarySyncing);
  EXPECT_FALSE(c1.ha().in_sync());
  Replicate(c0, c1);
  EXPECT_TRUE(c1.ha().in_sync());
  EXPECT_EQ(c1.ha().state(), HaState::kBackupInSync);
  EXPECT_EQ(c0.ha().state(), HaState::kPrimaryInSync);
  EXPECT_EQ(c1.ha().epoch(), 1u) << "the mirror replayed the snapshot's EPOCH";
  EXPECT_EQ(c0.ha().backup_state(), BackupState::kInSync);
  EXPECT_FALSE(c0.ha().committing_alone());
  c0.out = HaReady{};
  c1.out = HaReady{};
}

TEST(HaCore, CommitPointWaitsForTheBackupsDurableAck) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  c0.ha().Commit(c0.now, 5, Writes(TxId{2, 1}, {0, 1}));
  c0.Drain();
  c0.VoteYes();
  ASSERT_EQ(c0.out.replicate.size(), 1u);
  ASSERT_EQ(c0.out.replicate[0].records.size(), 1u);
  EXPECT_EQ(c0.out.replicate[0].records[0].type, RecordType::kDecision);
  c0.Sync();
  EXPECT_TRUE(c0.out.released.empty()) << "durable here only";
  EXPECT_TRUE(c0.CommitResults().empty());
  // The backup appends; its answer waits until that is durable.
  Replicate(c0, c1, /*sync_backup=*/false);
  EXPECT_TRUE(c0.out.released.empty());
  c1.Sync();
  ASSERT_EQ(c1.out.replicate_answers.size(), 1u);
  EXPECT_TRUE(c1.ha().core().KnowsCommitted(TxId{2, 1})) << "the mirror holds the decision";
  Replicate(c0, c1);
  ASSERT_EQ(c0.out.released.size(), 1u);
  ASSERT_EQ(c0.CommitResults().size(), 1u);
  EXPECT_EQ(c0.CommitResults()[0].outcome, Outcome::kCommitted);
  // The backup refuses commits and answers queries UNKNOWN.
  c1.ha().Commit(c1.now, 3, Writes(TxId{2, 2}, {0, 1}));
  c1.ha().QueryDecision(c1.now, 4, TxId{2, 1});
  c1.Drain();
  ASSERT_EQ(c1.out.replies.size(), 2u);
  EXPECT_EQ(std::get<Error>(c1.out.replies[0].body).code, ErrorCode::kNotPrimary);
  EXPECT_EQ(std::get<Decision>(c1.out.replies[1].body), Decision::kUnknown);
}

TEST(HaCore, LostBackupIsFencedOutWithANewerEpochBeforeThePrimaryCommitsAlone) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  c0.ha().Commit(c0.now, 5, Writes(TxId{3, 1}, {0, 1}));
  c0.Drain();
  c0.VoteYes();
  c0.Sync();
  // The Replicate call fails: the decision does not commit alone yet.
  ASSERT_EQ(c0.out.replicate.size(), 1u);
  c0.ha().OnReplicateReply(c0.now, c0.out.replicate[0].id, CallStatus::kTimeout, "timeout");
  c0.out.replicate.clear();
  c0.Drain();
  EXPECT_EQ(c0.ha().backup_state(), BackupState::kDown);
  EXPECT_EQ(c0.ha().state(), HaState::kPrimaryFencing);
  EXPECT_TRUE(c0.out.released.empty());
  ASSERT_EQ(c0.out.adopt.size(), 3u) << "fencing the backup out";
  EXPECT_EQ(c0.out.adopt[0].epoch, 2u);
  // One ack is not a majority (the others are unreachable): try again later.
  c0.AnswerAdopts(CallStatus::kOk, 1);
  EXPECT_TRUE(c0.out.released.empty());
  EXPECT_EQ(c0.ha().bump_in_progress(), 0u);
  // A second round: a majority; EPOCH 2 must still be durable first.
  c0.Tick(600);
  ASSERT_FALSE(c0.out.adopt.empty());
  c0.AnswerAdopts(CallStatus::kOk);
  EXPECT_TRUE(c0.out.released.empty());
  c0.Sync();
  EXPECT_EQ(c0.ha().epoch(), 2u);
  ASSERT_EQ(c0.out.released.size(), 1u);
  ASSERT_EQ(c0.CommitResults().size(), 1u);
  EXPECT_EQ(c0.CommitResults()[0].outcome, Outcome::kCommitted);
  EXPECT_TRUE(c0.ha().committing_alone());
  EXPECT_EQ(c0.ha().state(), HaState::kPrimarySolo);
  // The backup, still thinking itself in sync, now can only try epoch 2,
  // which the participants refuse: it drops out of sync and never promotes.
  c1.Tick(600);
  ASSERT_FALSE(c1.out.adopt.empty()) << "the primary is suspected";
  EXPECT_EQ(c1.out.adopt[0].epoch, 2u);
  c1.AnswerAdopts(CallStatus::kStaleEpoch);
  EXPECT_FALSE(c1.ha().in_sync());
  EXPECT_EQ(c1.ha().role(), Role::kBackup);
  EXPECT_EQ(c1.ha().state(), HaState::kBackupSyncing);
  c1.Tick(2000);
  EXPECT_TRUE(c1.out.adopt.empty()) << "a backup not in sync never promotes";
  // It re-syncs when it answers heartbeats again.
  c0.Tick(100);
  c0.AnswerProbes(true, c1.ha().View());
  ASSERT_EQ(c0.out.replicate.size(), 1u);
  Replicate(c0, c1);
  EXPECT_TRUE(c1.ha().in_sync());
  EXPECT_EQ(c1.ha().epoch(), 2u);
  EXPECT_EQ(c0.ha().backup_state(), BackupState::kInSync);
}

TEST(HaCore, InSyncBackupPromotesWhenThePrimaryIsSuspectedAndRedrivesDecisions) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  c0.ha().Commit(c0.now, 5, Writes(TxId{4, 1}, {0, 1}));
  c0.Drain();
  c0.VoteYes();
  c0.Sync();
  Replicate(c0, c1);
  ASSERT_EQ(c0.CommitResults().size(), 1u);
  // c0 dies before phase 2 completes. c1 hears nothing from it for 500 ms.
  c1.out.probes.clear();
  c1.Tick(400);
  EXPECT_TRUE(c1.out.adopt.empty());
  c1.Tick(200);
  EXPECT_TRUE(c1.ha().peer_suspected());
  ASSERT_EQ(c1.out.adopt.size(), 3u);
  EXPECT_EQ(c1.out.adopt[0].epoch, 2u);
  c1.AnswerAdopts(CallStatus::kOk, 2);  // a majority of 3
  EXPECT_EQ(c1.ha().role(), Role::kPrimary);
  EXPECT_EQ(c1.ha().node_role(), NodeRole::kStarting);
  EXPECT_EQ(c1.ha().state(), HaState::kEstablishing) << "promoted straight from in sync";
  c1.out.send.clear();
  c1.Sync();
  EXPECT_TRUE(c1.ha().established());
  EXPECT_EQ(c1.ha().state(), HaState::kPrimarySolo);
  EXPECT_EQ(c1.ha().epoch(), 2u);
  EXPECT_EQ(c1.ha().stats().promotions, 1u);
  EXPECT_EQ(c1.CommitsSent(2), 2u) << "COMMIT re-sent at the new epoch";
  // It refuses the old primary's Replicate now.
  HaCore::ReplicateIn old{1, kC0, 1, false, {}};
  c1.ha().OnReplicate(c1.now, 77, old);
  c1.Drain();
  ASSERT_EQ(c1.out.replicate_answers.size(), 1u);
  ASSERT_TRUE(c1.out.replicate_answers[0].error.has_value());
  EXPECT_EQ(c1.out.replicate_answers[0].error->code, ErrorCode::kStaleEpoch);
  // Presumed abort at the new primary for an unknown txid.
  c1.ha().QueryDecision(c1.now, 8, TxId{4, 99});
  c1.Drain();
  EXPECT_EQ(std::get<Decision>(c1.out.replies.back().body), Decision::kAbort);
}

// A backup that was itself paused (its ticks stop for 3 s, as under SIGSTOP)
// heard nothing meanwhile because it was not listening: its first tick after
// the resume must not promote it. The detectors start over, so a primary that
// stays silent for a whole window after the resume is suspected as usual.
TEST(HaCore, OwnPauseIsNotTheSilenceOfThePeers) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  c1.out.probes.clear();
  c1.now += 3000;  // no tick for 3 s
  c1.Tick(10);
  EXPECT_FALSE(c1.ha().peer_suspected());
  EXPECT_TRUE(c1.out.adopt.empty()) << "promoted on silence it slept through";
  EXPECT_EQ(c1.ha().stats().own_pauses, 1u);
  EXPECT_EQ(c1.ha().stats().peer_suspicions, 0u);
  ASSERT_FALSE(c1.out.notes.empty());
  EXPECT_NE(c1.out.notes.back().text.find("failure detectors start over"), std::string::npos);
  // Still silent a whole window later: suspected, and the in-sync backup
  // promotes as in the test above.
  c1.Tick(400);
  EXPECT_FALSE(c1.ha().peer_suspected());
  c1.Tick(200);
  EXPECT_TRUE(c1.ha().peer_suspected());
  EXPECT_EQ(c1.out.adopt.size(), 3u);
  EXPECT_EQ(c1.ha().stats().own_pauses, 1u) << "regular ticks are no pause";
}

TEST(HaCore, BackupThatIsNotInSyncNeverPromotes) {
  Node c1(Role::kBackup, kC1, kC0);
  c1.Start();
  c1.Tick(3000);
  EXPECT_TRUE(c1.ha().peer_suspected());
  EXPECT_TRUE(c1.out.adopt.empty());
  EXPECT_EQ(c1.ha().role(), Role::kBackup);
}

TEST(HaCore, PrimarySeeingANewerPrimaryStepsDownAnswersUnknownAndReloads) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  c0.ha().Commit(c0.now, 5, Writes(TxId{5, 1}, {0, 1}));
  c0.Drain();
  ASSERT_FALSE(c0.out.send.empty());
  std::vector<OutMessage> old_prepares = c0.out.send;
  PeerView newer;
  newer.role = NodeRole::kPrimary;
  newer.epoch = 7;
  PeerView answer = c0.ha().OnPeerHeartbeat(c0.now, kC1, newer);
  (void)answer;
  c0.Drain();
  EXPECT_EQ(c0.ha().role(), Role::kBackup);
  EXPECT_EQ(c0.ha().state(), HaState::kBackupSyncing);
  EXPECT_EQ(c0.reloads, 1);
  EXPECT_EQ(c0.ha().stats().step_downs, 1u);
  ASSERT_EQ(c0.CommitResults().size(), 1u);
  EXPECT_EQ(c0.CommitResults()[0].outcome, Outcome::kUnknown);
  EXPECT_FALSE(c0.ha().core().started()) << "an unstarted mirror";
  // Late votes for the old core's PREPAREs are dropped, not fed to the mirror.
  for (const OutMessage& m : old_prepares) {
    PrepareReply r;
    r.msg_id = m.id;
    r.txid = TxId{5, 1};
    r.participant = m.to;
    r.vote = Vote::kYes;
    c0.ha().OnPrepareReply(c0.now, r);
  }
  c0.Drain();
  EXPECT_TRUE(c0.out.persist.empty() || c0.out.persist.back().type != RecordType::kDecision);
}

TEST(HaCore, ParticipantStaleEpochFencesThePrimaryWhichStepsDown) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  c0.ha().Commit(c0.now, 5, Writes(TxId{6, 1}, {0, 1}));
  c0.Drain();
  const OutMessage m = c0.out.send[0];
  PrepareReply r;
  r.msg_id = m.id;
  r.txid = TxId{6, 1};
  r.participant = m.to;
  r.status = CallStatus::kStaleEpoch;
  c0.ha().OnPrepareReply(c0.now, r);
  c0.Drain();
  EXPECT_EQ(c0.ha().role(), Role::kBackup);
  ASSERT_EQ(c0.CommitResults().size(), 1u);
  EXPECT_NE(c0.CommitResults()[0].outcome, Outcome::kCommitted);
}

TEST(HaCore, ReplicateRefusals) {
  Node c1(Role::kBackup, kC1, kC0);
  c1.Start();
  // A batch that is not a snapshot, for a generation we do not have.
  c1.ha().OnReplicate(c1.now, 1, HaCore::ReplicateIn{1, kC0, 3, false, {}});
  // An undecodable record.
  c1.ha().OnReplicate(
      c1.now, 2, HaCore::ReplicateIn{1, kC0, 3, true, {ReplRecord{RecordType::kDecision, "x"}}});
  c1.Drain();
  ASSERT_EQ(c1.out.replicate_answers.size(), 2u);
  EXPECT_EQ(c1.out.replicate_answers[0].error->code, ErrorCode::kUnavailable);
  EXPECT_EQ(c1.out.replicate_answers[1].error->code, ErrorCode::kBadArgument);
  EXPECT_TRUE(c1.out.persist.empty()) << "a bad batch leaves no trace";
  EXPECT_FALSE(c1.ha().in_sync());
  // A snapshot at epoch 3, then a batch at epoch 2: stale.
  std::vector<ReplRecord> snap = {{RecordType::kSync, EncodePayload(SyncRecord{4})},
                                  {RecordType::kEpoch, EncodePayload(EpochRecord{3})}};
  c1.ha().OnReplicate(c1.now, 3, HaCore::ReplicateIn{3, kC0, 4, true, snap});
  c1.Drain();
  c1.Sync();
  EXPECT_TRUE(c1.ha().in_sync());
  c1.ha().OnReplicate(c1.now, 4, HaCore::ReplicateIn{2, kC0, 4, false, {}});
  c1.Drain();
  EXPECT_EQ(c1.out.replicate_answers.back().error->code, ErrorCode::kStaleEpoch);
}

// Found by the simulator: a delayed snapshot of an older epoch arriving after
// a newer one that is appended but not yet durable (so not yet in the mirror)
// must be refused, not appended after it.
TEST(HaCore, OlderReplicateAfterANewerOneNotYetDurableIsRefused) {
  Node c1(Role::kBackup, kC1, kC0);
  c1.Start();
  auto snapshot = [](int64_t gen, Epoch e) {
    return std::vector<ReplRecord>{{RecordType::kSync, EncodePayload(SyncRecord{gen})},
                                   {RecordType::kEpoch, EncodePayload(EpochRecord{e})}};
  };
  c1.ha().OnReplicate(c1.now, 1, HaCore::ReplicateIn{3, kC0, 6, true, snapshot(6, 3)});
  c1.Drain();
  c1.ha().OnReplicate(c1.now, 2, HaCore::ReplicateIn{2, kC0, 5, true, snapshot(5, 2)});
  c1.Drain();
  ASSERT_EQ(c1.out.replicate_answers.size(), 1u);
  EXPECT_EQ(c1.out.replicate_answers[0].token, 2u);
  ASSERT_TRUE(c1.out.replicate_answers[0].error.has_value());
  EXPECT_EQ(c1.out.replicate_answers[0].error->code, ErrorCode::kStaleEpoch);
  c1.Sync();
  EXPECT_TRUE(c1.ha().in_sync());
  EXPECT_EQ(c1.ha().epoch(), 3u);
  EXPECT_EQ(c1.ha().generation(), 6);
}

// Found by the simulator (dtx-sim --failover --small-tables
// --no-client-retries --seed 6207): a network copy of the primary's first
// snapshot arrived at the backup 600 ms late, after a batch that replicated
// a DECISION. Appended again, its SYNC closed that DECISION in the mirror;
// the backup promoted and answered ABORT to a transaction the primary had
// committed (atomicity). A snapshot not newer than the one held is refused,
// also after a restart (the log's SYNC says which one is held).
TEST(HaCore, LateCopyOfAnOlderOrSameSnapshotIsRefused) {
  Node c1(Role::kBackup, kC1, kC0);
  c1.Start();
  const TxId tx{8, 1};
  const std::vector<ReplRecord> snap = {{RecordType::kSync, EncodePayload(SyncRecord{1})},
                                        {RecordType::kEpoch, EncodePayload(EpochRecord{1})}};
  c1.ha().OnReplicate(c1.now, 1, HaCore::ReplicateIn{1, kC0, 1, true, snap});
  c1.Drain();
  c1.Sync();
  ASSERT_TRUE(c1.ha().in_sync());
  DecisionRecord d{tx, 1, true, {kParticipants[0], kParticipants[1]}};
  c1.ha().OnReplicate(
      c1.now, 2,
      HaCore::ReplicateIn{1, kC0, 1, false, {{RecordType::kDecision, EncodePayload(d)}}});
  c1.Drain();
  c1.Sync();
  ASSERT_TRUE(c1.ha().core().KnowsCommitted(tx));
  ASSERT_EQ(c1.ha().core().OpenDecisions().size(), 1u);
  c1.out = HaReady{};
  const size_t log_size = c1.log.size();
  // The late copy of the same snapshot, and an older generation.
  c1.ha().OnReplicate(c1.now, 3, HaCore::ReplicateIn{1, kC0, 1, true, snap});
  c1.ha().OnReplicate(c1.now, 4, HaCore::ReplicateIn{1, kC0, 0, true, snap});
  c1.Drain();
  c1.Sync();
  ASSERT_EQ(c1.out.replicate_answers.size(), 2u);
  for (const ReplicateAnswer& a : c1.out.replicate_answers) {
    ASSERT_TRUE(a.error.has_value());
    EXPECT_EQ(a.error->code, ErrorCode::kUnavailable);
  }
  EXPECT_EQ(c1.log.size(), log_size) << "nothing appended";
  EXPECT_EQ(c1.ha().core().OpenDecisions().size(), 1u) << "the DECISION is still open";
  EXPECT_TRUE(c1.ha().in_sync());

  // After a restart the replayed SYNC + EPOCH say which snapshot is held.
  Node r(Role::kBackup, kC1, kC0);
  for (const Entry& e : c1.log) {
    ASSERT_TRUE(r.ha().Replay(e.lsn, static_cast<uint8_t>(e.type), e.payload).ok());
  }
  r.Start();
  r.out = HaReady{};
  r.ha().OnReplicate(r.now, 5, HaCore::ReplicateIn{1, kC0, 1, true, snap});
  r.Drain();
  ASSERT_EQ(r.out.replicate_answers.size(), 1u);
  ASSERT_TRUE(r.out.replicate_answers[0].error.has_value());
  EXPECT_EQ(r.ha().core().OpenDecisions().size(), 1u);
  // A newer generation is a real re-sync and is taken.
  const std::vector<ReplRecord> snap2 = {{RecordType::kSync, EncodePayload(SyncRecord{2})},
                                         {RecordType::kEpoch, EncodePayload(EpochRecord{1})}};
  r.ha().OnReplicate(r.now, 6, HaCore::ReplicateIn{1, kC0, 2, true, snap2});
  r.Drain();
  r.Sync();
  ASSERT_EQ(r.out.replicate_answers.size(), 2u);
  EXPECT_FALSE(r.out.replicate_answers[1].error.has_value());
  EXPECT_TRUE(r.ha().in_sync());
}

TEST(HaCore, SameInputsGiveSameOutputs) {
  auto run = [] {
    Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
    PairUp(c0, c1);
    c0.ha().Commit(c0.now, 5, Writes(TxId{8, 1}, {0, 1, 2}));
    c0.Drain();
    c0.VoteYes();
    c0.Sync();
    Replicate(c0, c1);
    std::string s;
    for (const Entry& e : c0.log) s += std::to_string(e.lsn) + ":" + e.payload + ";";
    for (const Entry& e : c1.log) s += std::to_string(e.lsn) + ":" + e.payload + ";";
    for (const OutMessage& m : c0.out.send) s += std::to_string(m.id) + m.to + ";";
    return s;
  };
  EXPECT_EQ(run(), run());
}

}  // namespace
}  // namespace dtx::coordinator

namespace dtx::coordinator {
namespace {

// A backup made in sync by a snapshot of `primary` at `epoch`.
void SyncAsBackup(Node& b, const std::string& primary, Epoch epoch, int64_t generation = 1) {
  HaCore::ReplicateIn snap{epoch,
                           primary,
                           generation,
                           true,
                           {{RecordType::kSync, EncodePayload(SyncRecord{generation})},
                            {RecordType::kEpoch, EncodePayload(EpochRecord{epoch})}}};
  b.ha().OnReplicate(b.now, 1, snap);
  b.Drain();
  b.Sync();
  ASSERT_TRUE(b.ha().in_sync());
  b.out = HaReady{};
}

// The livelock of seed 96 (tests/sim/README.md): two participants, the grants
// of epoch 2 split between the coordinators. Neither can ever get epoch 2;
// the one that holds a blocking set of it (n - majority + 1 = 1 grant) knows
// nobody can establish it, skips it and establishes epoch 3.
TEST(HaCore, EpochGrantedToUsByABlockingSetAndLostElsewhereIsSkipped) {
  const std::vector<std::string> two = {kParticipants[0], kParticipants[1]};
  Node c1(Role::kBackup, kC1, kC0, two);
  c1.Start();
  SyncAsBackup(c1, kC0, 1);
  c1.Tick(600);
  ASSERT_TRUE(c1.ha().peer_suspected());
  ASSERT_EQ(c1.out.adopt.size(), 2u);
  EXPECT_EQ(c1.out.adopt[0].epoch, 2u);
  c1.AnswerAdoptsBy({{two[0], CallStatus::kOk}, {two[1], CallStatus::kStaleEpoch}}, 2, kC0);
  EXPECT_TRUE(c1.ha().in_sync()) << "a blocked epoch is no sign of a newer primary";
  EXPECT_EQ(c1.ha().role(), Role::kBackup);
  EXPECT_EQ(c1.ha().blocked_epochs(), (std::pair<Epoch, Epoch>{1, 2}));
  EXPECT_EQ(c1.ha().NextBumpEpoch(), 3u);
  // The run is logged (SKIP, not forced) and survives a restart.
  ASSERT_FALSE(c1.log.empty());
  EXPECT_EQ(static_cast<uint8_t>(c1.log.back().type), kSkipRecordType);
  EXPECT_FALSE(c1.log.back().forced);
  {
    Node again(Role::kBackup, kC1, kC0, two);
    for (const Entry& e : c1.log) {
      ASSERT_TRUE(again.ha().Replay(e.lsn, static_cast<uint8_t>(e.type), e.payload).ok());
    }
    again.Start();
    EXPECT_EQ(again.ha().blocked_epochs(), (std::pair<Epoch, Epoch>{1, 2}));
    EXPECT_EQ(again.ha().NextBumpEpoch(), 3u);
    EXPECT_EQ(again.ha().epoch(), 1u);
  }
  // kC1 is the higher address: it waits 2 heartbeats before the next epoch.
  c1.Tick(100);
  EXPECT_TRUE(c1.out.adopt.empty()) << "the per-node delay";
  c1.Tick(200);
  ASSERT_EQ(c1.out.adopt.size(), 2u);
  EXPECT_EQ(c1.out.adopt[0].epoch, 3u);
  c1.AnswerAdopts(CallStatus::kOk);
  c1.Sync();
  EXPECT_TRUE(c1.ha().established());
  EXPECT_EQ(c1.ha().epoch(), 3u);
}

// Without a blocking set the epoch may be established by the other
// coordinator: never skipped, and a backup that lost it drops out of sync.
TEST(HaCore, EpochWithoutABlockingSetIsNeverSkipped) {
  const std::vector<std::string> two = {kParticipants[0], kParticipants[1]};
  Node c1(Role::kBackup, kC1, kC0, two);
  c1.Start();
  SyncAsBackup(c1, kC0, 1);
  c1.Tick(600);
  ASSERT_EQ(c1.out.adopt.size(), 2u);
  c1.AnswerAdoptsBy({{two[0], CallStatus::kUnavailable}, {two[1], CallStatus::kStaleEpoch}}, 2,
                    kC0);
  EXPECT_FALSE(c1.ha().in_sync());
  EXPECT_EQ(c1.ha().NextBumpEpoch(), 2u);
  c1.Tick(3000);
  EXPECT_TRUE(c1.out.adopt.empty());
  // Three participants: a blocking set is a majority, so nothing is ever
  // skipped; one refusal while another did not answer is not yet stale.
  Node c2(Role::kBackup, kC1, kC0);
  c2.Start();
  SyncAsBackup(c2, kC0, 1);
  c2.Tick(600);
  ASSERT_EQ(c2.out.adopt.size(), 3u);
  c2.AnswerAdoptsBy({{kParticipants[0], CallStatus::kOk},
                     {kParticipants[1], CallStatus::kStaleEpoch},
                     {kParticipants[2], CallStatus::kTimeout}},
                    2, kC0);
  EXPECT_TRUE(c2.ha().in_sync()) << "participant 2 may still grant epoch 2 to us";
  EXPECT_EQ(c2.ha().NextBumpEpoch(), 2u);
  c2.Tick(600);
  ASSERT_EQ(c2.out.adopt.size(), 3u);
  EXPECT_EQ(c2.out.adopt[0].epoch, 2u) << "the same epoch again";
}

// After a partition heals, the backup that re-synced from the primary must
// not promote on the suspicion it held during the partition: the primary's
// Replicate is proof of life at the current epoch (ha_netns_test saw a
// needless failover right after a heal).
TEST(HaCore, BackupResyncedAfterAHealDoesNotPromoteOnAnOldSuspicion) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  // Partition between the coordinators: the primary fences the backup out
  // with epoch 2; the backup suspects the primary and loses epoch 2.
  c0.Tick(600);
  EXPECT_EQ(c0.ha().backup_state(), BackupState::kDown);
  ASSERT_EQ(c0.out.adopt.size(), 3u);
  c0.AnswerAdopts(CallStatus::kOk);
  c0.Sync();
  ASSERT_EQ(c0.ha().epoch(), 2u);
  c1.Tick(600);
  ASSERT_TRUE(c1.ha().peer_suspected());
  ASSERT_EQ(c1.out.adopt.size(), 3u);
  c1.AnswerAdoptsBy({{kParticipants[0], CallStatus::kStaleEpoch},
                     {kParticipants[1], CallStatus::kStaleEpoch},
                     {kParticipants[2], CallStatus::kStaleEpoch}},
                    2, kC0);
  ASSERT_FALSE(c1.ha().in_sync());
  c1.Tick(600);  // still partitioned, past the retry delay
  // Heal: the primary hears the backup and sends a snapshot; it becomes
  // durable at the backup before the backup's next tick.
  c0.Tick(100);
  c0.AnswerProbes(true, c1.ha().View());
  ASSERT_EQ(c0.out.replicate.size(), 1u);
  Replicate(c0, c1);
  ASSERT_TRUE(c1.ha().in_sync());
  EXPECT_FALSE(c1.ha().peer_suspected()) << "the Replicate cleared the suspicion";
  c1.out.adopt.clear();
  c1.Tick(10);
  EXPECT_TRUE(c1.out.adopt.empty()) << "no promotion right after the heal";
  EXPECT_EQ(c1.ha().role(), Role::kBackup);
  EXPECT_EQ(c1.ha().stats().promotions, 0u);
}

// Found by the simulator (dtx-sim --failover --small-tables
// --no-client-retries --seed 1826): the primary restarted and established
// epoch 2, where its generations start from 1 again; its first batch (a
// DECISION) overtook its snapshot and was taken as part of the backup's
// epoch-1 generation 1; the snapshot's SYNC then closed it, the backup
// promoted and answered ABORT to a committed transaction (atomicity). A
// batch is accepted only for the snapshot of its own epoch and generation.
TEST(HaCore, BatchThatOvertookItsSnapshotAtANewEpochIsRefused) {
  Node c1(Role::kBackup, kC1, kC0);
  c1.Start();
  SyncAsBackup(c1, kC0, 1, 1);
  const TxId tx{8, 2};
  DecisionRecord d{tx, 2, true, {kParticipants[0], kParticipants[1]}};
  c1.ha().OnReplicate(
      c1.now, 2,
      HaCore::ReplicateIn{2, kC0, 1, false, {{RecordType::kDecision, EncodePayload(d)}}});
  c1.Drain();
  c1.Sync();
  ASSERT_EQ(c1.out.replicate_answers.size(), 1u);
  ASSERT_TRUE(c1.out.replicate_answers[0].error.has_value())
      << "the batch must wait for its snapshot";
  EXPECT_EQ(c1.out.replicate_answers[0].error->code, ErrorCode::kUnavailable);
  EXPECT_FALSE(c1.ha().core().KnowsCommitted(tx));
  // The snapshot of epoch 2, generation 1 (which carries the DECISION), then
  // a batch of that generation: both taken.
  c1.ha().OnReplicate(c1.now, 3,
                      HaCore::ReplicateIn{2,
                                          kC0,
                                          1,
                                          true,
                                          {{RecordType::kSync, EncodePayload(SyncRecord{1})},
                                           {RecordType::kEpoch, EncodePayload(EpochRecord{2})},
                                           {RecordType::kDecision, EncodePayload(d)}}});
  c1.Drain();
  c1.Sync();
  EXPECT_TRUE(c1.ha().in_sync());
  EXPECT_TRUE(c1.ha().core().KnowsCommitted(tx));
  c1.ha().OnReplicate(c1.now, 4, HaCore::ReplicateIn{2, kC0, 1, false, {}});
  c1.Drain();
  ASSERT_EQ(c1.out.replicate_answers.size(), 3u);
  EXPECT_FALSE(c1.out.replicate_answers[1].error.has_value());
  EXPECT_FALSE(c1.out.replicate_answers[2].error.has_value());
}

// Found by the simulator (dtx-sim --failover --seed 2009560): the primary
// answered a one-phase commit ABORTED (its PREPARE met the epoch it was
// itself establishing: STALE_EPOCH), stepped down and rebuilt its core from
// the log, then served again; a network copy of the same Commit arrived
// 700 ms late and, as the fresh core had forgotten the abort, ran and
// committed (aborted-visible). The in-memory outcomes survive the step-down.
// Since aborts are logged, a one-phase STALE_EPOCH is no longer ABORTED at
// all: the participant may have committed that attempt from another copy of
// the PREPARE (dtx-sim --failover --small-tables --seed 469), so it is
// UNKNOWN, and the rebuilt core remembers that: the late copy runs as a
// retry, which is never answered ABORTED without a vote.
TEST(HaCore, StepDownKeepsTheOutcomesAnsweredFromMemory) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  const TxId tx{9, 1};
  c0.ha().Commit(c0.now, 5, Writes(tx, {0}));
  c0.Drain();
  ASSERT_EQ(c0.out.send.size(), 1u);
  ASSERT_TRUE(std::get<PrepareMsg>(c0.out.send[0].body).one_phase);
  PrepareReply r;
  r.msg_id = c0.out.send[0].id;
  r.txid = tx;
  r.participant = c0.out.send[0].to;
  r.status = CallStatus::kStaleEpoch;
  c0.ha().OnPrepareReply(c0.now, r);
  c0.Drain();
  ASSERT_EQ(c0.CommitResults().size(), 1u);
  ASSERT_EQ(c0.CommitResults()[0].outcome, Outcome::kUnknown);
  ASSERT_EQ(c0.ha().role(), Role::kBackup);
  ASSERT_EQ(c0.reloads, 1);
  // The rebuilt core remembers the answer.
  const CoordinatorCore::Memory m = c0.ha().core().ExportMemory();
  ASSERT_EQ(m.unknown.size(), 1u);
  EXPECT_EQ(m.unknown[0].first, tx);

  // Served again (here: a fresh core as a started primary would hold it),
  // the late copy of the first Commit runs as a retry.
  CoreOptions co;
  co.participants = kParticipants;
  co.self_address = kC0;
  CoordinatorCore core(co);
  core.ImportMemory(m);
  core.Start(c0.now);
  Ready start = core.TakeReady();
  ASSERT_EQ(start.persist.size(), 1u);  // EPOCH 1
  core.OnPersisted(c0.now, start.persist[0].tag, 1);
  (void)core.TakeReady();
  core.Commit(c0.now, 6, Writes(tx, {0}));
  Ready again = core.TakeReady();
  ASSERT_EQ(again.send.size(), 1u);
  const auto* prepare = std::get_if<PrepareMsg>(&again.send[0].body);
  ASSERT_NE(prepare, nullptr);
  EXPECT_TRUE(prepare->is_retry) << "an earlier attempt may have committed";
}

// ---- the state machine's edges (HaState in ha_core.h) ------------------------------------

// kPrimaryFencing -> kPrimarySyncing: the lost backup answers as a backup
// once the fencing epoch was adopted but before its EPOCH record is durable.
// It is re-synced; the durable epoch then no longer makes the primary commit
// alone (kPrimarySolo): the waiting DECISION needs the snapshot's ack.
TEST(HaCore, FencingPrimaryResyncsABackupThatAnswersAgainAndWaitsForItsAck) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  c0.ha().Commit(c0.now, 5, Writes(TxId{20, 1}, {0, 1}));
  c0.Drain();
  c0.VoteYes();
  c0.Sync();
  ASSERT_EQ(c0.out.replicate.size(), 1u);
  c0.ha().OnReplicateReply(c0.now, c0.out.replicate[0].id, CallStatus::kTimeout, "timeout");
  c0.out.replicate.clear();
  c0.Drain();
  ASSERT_EQ(c0.ha().state(), HaState::kPrimaryFencing);
  c0.AnswerAdopts(CallStatus::kOk);  // epoch 2 adopted; its EPOCH record not yet durable
  EXPECT_EQ(c0.ha().state(), HaState::kPrimaryFencing);
  c0.Tick(100);
  c0.AnswerProbes(true, c1.ha().View());
  EXPECT_EQ(c0.ha().state(), HaState::kPrimarySyncing);
  ASSERT_EQ(c0.out.replicate.size(), 1u);
  EXPECT_TRUE(c0.out.replicate[0].snapshot);
  c0.Sync();  // EPOCH 2 durable
  EXPECT_EQ(c0.ha().epoch(), 2u);
  EXPECT_EQ(c0.ha().state(), HaState::kPrimarySyncing)
      << "the backup is being synced: no committing alone";
  EXPECT_TRUE(c0.out.released.empty());
  Replicate(c0, c1);
  EXPECT_EQ(c0.ha().state(), HaState::kPrimaryInSync);
  ASSERT_EQ(c0.out.released.size(), 1u) << "released on the snapshot's ack";
  EXPECT_EQ(c1.ha().epoch(), 2u);
}

// kPrimaryInSync -> kPrimarySyncing: after resync_after_records replicated
// records the next heartbeat round sends a fresh snapshot.
TEST(HaCore, InSyncPrimarySendsAFreshSnapshotAfterResyncAfterRecords) {
  Node c0(Role::kPrimary, kC0, kC1, kParticipants, /*resync_after_records=*/1);
  Node c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  c0.ha().Commit(c0.now, 5, Writes(TxId{21, 1}, {0, 1}));
  c0.Drain();
  c0.VoteYes();
  c0.Sync();
  Replicate(c0, c1);
  ASSERT_EQ(c0.out.released.size(), 1u);
  ASSERT_EQ(c0.ha().state(), HaState::kPrimaryInSync);
  const int64_t generation = c0.ha().generation();
  c0.Tick(100);
  EXPECT_EQ(c0.ha().state(), HaState::kPrimarySyncing);
  ASSERT_FALSE(c0.out.replicate.empty());
  EXPECT_TRUE(c0.out.replicate.back().snapshot);
  EXPECT_EQ(c0.ha().generation(), generation + 1);
  Replicate(c0, c1);
  EXPECT_EQ(c0.ha().state(), HaState::kPrimaryInSync);
}

// The backup's SYNC forgets everything before it: a fresh snapshot restates
// the outcomes the primary's log keeps, so a promoted backup answers a
// repeated Commit of a finished transaction as the primary did - above all
// an ABORTED one, which must never commit later (docs/design.md "Aborts
// answered are logged"). Before, only the open decisions were restated.
TEST(HaCore, AFreshSnapshotRestatesFinishedCommitsAndLoggedAborts) {
  Node c0(Role::kPrimary, kC0, kC1, kParticipants, /*resync_after_records=*/1);
  Node c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  const TxId committed{22, 1}, aborted{22, 2};
  // Committed and ended: every participant acknowledged its COMMIT.
  c0.ha().Commit(c0.now, 5, Writes(committed, {0, 1}));
  c0.Drain();
  c0.VoteYes();
  c0.Sync();
  Replicate(c0, c1);
  ASSERT_EQ(c0.CommitResults().size(), 1u);
  std::vector<OutMessage> sends = std::move(c0.out.send);
  c0.out.send.clear();
  for (const OutMessage& m : sends) {
    if (std::holds_alternative<CommitMsg>(m.body)) {
      c0.ha().OnCommitReply(c0.now, AckReply{m.id, committed, m.to, CallStatus::kOk, ""});
      c0.Drain();
    }
  }
  c0.Sync();
  Replicate(c0, c1);
  // Aborted: a NO vote; the ABORTED answer waits for the backup's ack.
  c0.ha().Commit(c0.now, 6, Writes(aborted, {0, 1}));
  c0.Drain();
  const OutMessage prepare = c0.out.send.front();
  PrepareReply no;
  no.msg_id = prepare.id;
  no.txid = aborted;
  no.participant = prepare.to;
  no.vote = Vote::kNo;
  c0.ha().OnPrepareReply(c0.now, no);
  c0.Drain();
  c0.Sync();
  EXPECT_EQ(c0.CommitResults().size(), 1u) << "not before the backup has the abort";
  Replicate(c0, c1);
  ASSERT_EQ(c0.CommitResults().size(), 2u);
  EXPECT_EQ(c0.CommitResults()[1].outcome, Outcome::kAborted);
  // A fresh snapshot (resync_after_records = 1): the backup's SYNC forgets
  // what came before it, and the snapshot restates it.
  c0.Tick(100);
  ASSERT_FALSE(c0.out.replicate.empty());
  ASSERT_TRUE(c0.out.replicate.back().snapshot);
  Replicate(c0, c1);
  ASSERT_EQ(c0.ha().state(), HaState::kPrimaryInSync);
  EXPECT_TRUE(c1.ha().core().KnowsCommitted(committed));
  EXPECT_EQ(c1.ha().core().RememberedOutcome(aborted), Outcome::kAborted);
  EXPECT_TRUE(c1.ha().core().OpenDecisions().empty());
}

// kBackupSyncing -> kStarting: both coordinators are backups; the newer log
// takes over (and the older one does not).
TEST(HaCore, TwoBackupsTheNewerLogTakesOver) {
  Node c0(Role::kBackup, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  c0.Preload(EpochRecord{2});
  c1.Preload(EpochRecord{3});
  c0.Start();
  c1.Start();
  c0.AnswerProbes(true, c1.ha().View());
  EXPECT_EQ(c0.ha().state(), HaState::kBackupSyncing) << "its log is older (epoch 2 < 3)";
  EXPECT_TRUE(c0.out.adopt.empty());
  c1.AnswerProbes(true, c0.ha().View());
  EXPECT_EQ(c1.ha().state(), HaState::kStarting);
  ASSERT_EQ(c1.out.adopt.size(), 3u);
  EXPECT_EQ(c1.out.adopt[0].epoch, 4u);
  c1.AnswerAdopts(CallStatus::kOk);
  EXPECT_EQ(c1.ha().state(), HaState::kEstablishing);
  c1.Sync();
  EXPECT_EQ(c1.ha().state(), HaState::kPrimarySolo);
  EXPECT_EQ(c1.ha().epoch(), 4u);
}

// kBackupInSync -> kStarting: an in-sync backup whose peer now answers as a
// backup with an older log (e.g. restarted on a fresh disk) takes over.
TEST(HaCore, InSyncBackupWithTheNewerLogTakesOverFromABackupPeer) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  ASSERT_EQ(c1.ha().state(), HaState::kBackupInSync);
  PeerView restarted;
  restarted.role = NodeRole::kBackup;
  restarted.epoch = 0;
  restarted.in_sync = false;
  c1.ha().OnPeerHeartbeat(c1.now, kC0, restarted);  // its heartbeat reaches us
  c1.Drain();
  EXPECT_EQ(c1.ha().state(), HaState::kBackupInSync) << "acts on the next tick";
  c1.Tick(10);
  EXPECT_EQ(c1.ha().state(), HaState::kStarting);
  ASSERT_EQ(c1.out.adopt.size(), 3u);
  EXPECT_EQ(c1.out.adopt[0].epoch, 2u);
}

// kStarting -> kBackupSyncing: a starting primary that hears the peer is
// primary at an epoch >= its own steps down (nothing to reload: its core
// never started).
TEST(HaCore, StartingPrimaryHearingAPrimaryStepsDownWithoutReloading) {
  Node c0(Role::kPrimary, kC0, kC1);
  c0.Start();
  ASSERT_EQ(c0.ha().state(), HaState::kStarting);
  PeerView primary;
  primary.role = NodeRole::kPrimary;
  primary.epoch = 0;
  c0.AnswerProbes(true, primary);
  EXPECT_EQ(c0.ha().state(), HaState::kBackupSyncing);
  EXPECT_TRUE(c0.out.adopt.empty());
  EXPECT_EQ(c0.reloads, 0);
  EXPECT_EQ(c0.ha().stats().step_downs, 0u) << "it never served";
}

// kAlone -> kBackupSyncing: even a coordinator alone by configuration is
// deposed by a Replicate from a primary at a newer epoch (it refuses the
// call and steps down).
TEST(HaCore, AloneCoordinatorIsDeposedByAReplicateAtANewerEpoch) {
  Node n(Role::kPrimary, kC0, "");
  n.Start();
  n.Sync();
  ASSERT_EQ(n.ha().state(), HaState::kAlone);
  n.ha().OnReplicate(n.now, 3, HaCore::ReplicateIn{5, kC1, 1, false, {}});
  n.Drain();
  ASSERT_EQ(n.out.replicate_answers.size(), 1u);
  EXPECT_TRUE(n.out.replicate_answers[0].error.has_value());
  EXPECT_EQ(n.ha().state(), HaState::kBackupSyncing);
  EXPECT_EQ(n.reloads, 1);
}

// A role the peer sends that this node does not know (nullopt after the
// edge's NodeRoleFromName, or kParticipant) is no reason to act on it as a
// coordinator's: a starting primary does not step down for it.
TEST(HaCore, UnknownPeerRoleIsNeitherTrustedNorFatal) {
  Node c0(Role::kPrimary, kC0, kC1);
  c0.Start();
  PeerView unknown;  // role nullopt: as never heard
  unknown.epoch = 99;
  c0.AnswerProbes(true, unknown);
  EXPECT_TRUE(c0.out.adopt.empty()) << "waits to hear a coordinator role, or to suspect the peer";
  EXPECT_EQ(c0.ha().state(), HaState::kStarting);
  PeerView participant;
  participant.role = NodeRole::kParticipant;
  participant.epoch = 99;
  c0.Tick(100);
  c0.AnswerProbes(true, participant);
  EXPECT_EQ(c0.ha().state(), HaState::kStarting) << "not a primary: no step-down";
  EXPECT_FALSE(c0.out.adopt.empty()) << "heard, and neither starting nor serving";
  EXPECT_EQ(NodeRoleFromName("starting"), NodeRole::kStarting);
  EXPECT_EQ(NodeRoleFromName("stopping"), std::nullopt);
  EXPECT_EQ(NodeRoleFromName(""), std::nullopt);
  for (NodeRole r :
       {NodeRole::kParticipant, NodeRole::kPrimary, NodeRole::kStarting, NodeRole::kBackup}) {
    EXPECT_EQ(NodeRoleFromName(NodeRoleName(r)), r);
  }
}

// An EPOCH record no epoch could follow is refused at the backup, not
// adopted (its promotion would have to ask for the epoch after it).
TEST(HaCore, ReplicatedEpochAtTheMaximumIsRefused) {
  Node c1(Role::kBackup, kC1, kC0);
  c1.Start();
  const Epoch max = std::numeric_limits<Epoch>::max();
  std::vector<ReplRecord> recs = {{RecordType::kSync, EncodePayload(SyncRecord{1})},
                                  {RecordType::kEpoch, EncodePayload(EpochRecord{max})}};
  c1.ha().OnReplicate(c1.now, 5, HaCore::ReplicateIn{1, kC0, 1, true, recs});
  c1.Drain();
  ASSERT_EQ(c1.out.replicate_answers.size(), 1u);
  ASSERT_TRUE(c1.out.replicate_answers[0].error.has_value());
  EXPECT_EQ(c1.out.replicate_answers[0].error->code, ErrorCode::kBadArgument);
  EXPECT_TRUE(c1.out.persist.empty());
  EXPECT_EQ(c1.ha().epoch(), 0);
}

// Epoch bounds (coordinator/README.md "Epoch bounds"): a heartbeat claiming
// a primary at epoch 10^15 neither deposes the primary nor stops the peer
// counting as alive; a sane newer epoch still deposes it.
TEST(HaCore, HeartbeatFarAboveOurEpochIsIgnoredNotObeyed) {
  Node c0(Role::kPrimary, kC0, kC1), c1(Role::kBackup, kC1, kC0);
  PairUp(c0, c1);
  const Epoch ours = c0.ha().epoch();
  PeerView forged;
  forged.role = NodeRole::kPrimary;
  forged.epoch = 1'000'000'000'000'000;
  c0.ha().OnPeerHeartbeat(c0.now, kC1, forged);
  c0.Drain();
  c0.Tick(100);
  c0.AnswerProbes(true, forged);
  EXPECT_EQ(c0.ha().state(), HaState::kPrimaryInSync);
  EXPECT_EQ(c0.ha().stats().step_downs, 0u);
  EXPECT_EQ(c0.ha().epoch(), ours);
  EXPECT_EQ(c0.ha().stats().epoch_jumps_ignored, 2u);
  EXPECT_NE(c0.ha().peer_view().epoch, forged.epoch) << "the view is dropped";
  EXPECT_FALSE(c0.ha().peer_suspected()) << "the peer still answered";
  ASSERT_FALSE(c0.out.notes.empty());
  bool noted = false;
  for (const HaNote& n : c0.out.notes) {
    noted = noted || n.text.find("kEpochJumpMax (1000000)") != std::string::npos;
  }
  EXPECT_TRUE(noted);
  // The bound itself is believed.
  PeerView newer = forged;
  newer.epoch = ours + kEpochJumpMax;
  c0.ha().OnPeerHeartbeat(c0.now, kC1, newer);
  c0.Drain();
  EXPECT_EQ(c0.ha().role(), Role::kBackup);
}

// A Replicate at an epoch, or carrying an EPOCH record, more than the bound
// above ours is refused BAD_ARGUMENT and leaves no trace; a primary does not
// step down for one. The real primary's next snapshot is still taken.
TEST(HaCore, ReplicateFarAboveOurEpochIsRefused) {
  Node c1(Role::kBackup, kC1, kC0);
  c1.Start();
  const Epoch forged = 1'000'000'000'000'000;
  c1.ha().OnReplicate(c1.now, 1, HaCore::ReplicateIn{forged, kC0, 1, true, {}});
  std::vector<ReplRecord> recs = {{RecordType::kSync, EncodePayload(SyncRecord{1})},
                                  {RecordType::kEpoch, EncodePayload(EpochRecord{forged})}};
  c1.ha().OnReplicate(c1.now, 2, HaCore::ReplicateIn{1, kC0, 1, true, recs});
  c1.Drain();
  ASSERT_EQ(c1.out.replicate_answers.size(), 2u);
  for (const ReplicateAnswer& a : c1.out.replicate_answers) {
    ASSERT_TRUE(a.error.has_value());
    EXPECT_EQ(a.error->code, ErrorCode::kBadArgument);
    EXPECT_NE(a.error->message.find("kEpochJumpMax"), std::string::npos) << a.error->message;
  }
  EXPECT_TRUE(c1.out.persist.empty());
  EXPECT_EQ(c1.ha().epoch(), 0);
  SyncAsBackup(c1, kC0, 1);
  EXPECT_TRUE(c1.ha().in_sync());
  EXPECT_EQ(c1.ha().epoch(), 1);

  Node c0(Role::kPrimary, kC0, "");
  c0.Start();
  c0.Sync();
  ASSERT_EQ(c0.ha().state(), HaState::kAlone);
  c0.ha().OnReplicate(c0.now, 3, HaCore::ReplicateIn{forged, kC1, 1, false, {}});
  c0.Drain();
  ASSERT_EQ(c0.out.replicate_answers.size(), 1u);
  EXPECT_EQ(c0.out.replicate_answers[0].error->code, ErrorCode::kBadArgument);
  EXPECT_EQ(c0.ha().state(), HaState::kAlone) << "not deposed";
  EXPECT_EQ(c0.reloads, 0);
}

// Participants answering AdoptEpoch STALE_EPOCH with an epoch far above ours
// (a participant poisoned before it bounded epochs): no coordinator can hold
// that epoch, so it is a failed call, not a newer coordinator - the starting
// primary keeps trying instead of stepping down for good.
TEST(HaCore, StaleEpochAnswerFarAboveOurEpochIsNotANewerCoordinator) {
  Node c0(Role::kPrimary, kC0, kC1);
  c0.Start();
  PeerView backup;
  backup.role = NodeRole::kBackup;
  c0.AnswerProbes(true, backup);
  ASSERT_EQ(c0.out.adopt.size(), 3u);
  c0.AnswerAdoptsBy({{kParticipants[0], CallStatus::kOk},
                     {kParticipants[1], CallStatus::kStaleEpoch},
                     {kParticipants[2], CallStatus::kStaleEpoch}},
                    1'000'000'000'000'000, "127.0.0.1:1");
  EXPECT_EQ(c0.ha().state(), HaState::kStarting);
  EXPECT_EQ(c0.ha().role(), Role::kPrimary);
  EXPECT_EQ(c0.ha().stats().step_downs, 0u);
  EXPECT_EQ(c0.ha().stats().epoch_jumps_ignored, 2u);
  // The next round asks again for the same next epoch, and wins.
  c0.Tick(600);
  c0.AnswerProbes(true, backup);
  ASSERT_EQ(c0.out.adopt.size(), 3u);
  EXPECT_EQ(c0.out.adopt[0].epoch, 1);
  c0.AnswerAdopts(CallStatus::kOk);
  c0.Sync();
  EXPECT_TRUE(c0.ha().established());
  EXPECT_EQ(c0.ha().epoch(), 1);
}

// A log at the top of the epoch range: no next epoch exists, and asking for
// one does not overflow; the node notes it and asks nobody.
TEST(HaCore, NoEpochAboveTheMaximumIsAskedFor) {
  Node c0(Role::kPrimary, kC0, kC1);
  c0.Preload(EpochRecord{std::numeric_limits<Epoch>::max()});
  c0.Start();
  EXPECT_EQ(c0.ha().NextBumpEpoch(), 0);
  PeerView backup;
  backup.role = NodeRole::kBackup;
  c0.AnswerProbes(true, backup);
  EXPECT_TRUE(c0.out.adopt.empty());
  EXPECT_EQ(c0.ha().state(), HaState::kStarting);
  bool noted = false;
  for (const HaNote& n : c0.out.notes) noted = noted || n.text.find("no epoch left") == 0;
  EXPECT_TRUE(noted);
}

// The table of legal edges: some that must never exist.
TEST(HaCore, TransitionTableForbidsPromotionOutOfSyncAndSteppingDownMidEstablish) {
  EXPECT_FALSE(HaCore::IsLegalTransition(HaState::kBackupSyncing, HaState::kEstablishing))
      << "a backup not in sync never promotes";
  EXPECT_FALSE(HaCore::IsLegalTransition(HaState::kEstablishing, HaState::kBackupSyncing))
      << "a step-down waits for our EPOCH record";
  EXPECT_FALSE(HaCore::IsLegalTransition(HaState::kPrimaryFencing, HaState::kPrimaryInSync))
      << "a lost backup is in sync again only through a snapshot";
  EXPECT_FALSE(HaCore::IsLegalTransition(HaState::kStarting, HaState::kPrimarySolo))
      << "established only once the EPOCH record is durable";
  for (HaState s : {HaState::kInit, HaState::kAlone, HaState::kStarting, HaState::kEstablishing,
                    HaState::kPrimarySolo, HaState::kPrimarySyncing, HaState::kPrimaryInSync,
                    HaState::kPrimaryFencing, HaState::kBackupSyncing, HaState::kBackupInSync}) {
    EXPECT_FALSE(HaCore::IsLegalTransition(s, s)) << HaStateName(s);
    EXPECT_FALSE(HaCore::IsLegalTransition(s, HaState::kInit)) << HaStateName(s);
  }
}

// Sabotage: an illegal transition stops the process (the check is on in
// release builds) instead of leaving the node in a state nothing expects.
TEST(HaCoreDeathTest, IllegalTransitionStopsTheProcess) {
  EXPECT_DEATH(
      {
        Node n(Role::kBackup, kC1, kC0);
        n.Start();
        HaCoreTestAccess::Transition(n.ha(), HaState::kPrimaryInSync);
      },
      "invalid HA transition backup-syncing -> primary-in-sync");
  // The same move along a legal edge passes the check.
  Node n(Role::kBackup, kC1, kC0);
  n.Start();
  HaCoreTestAccess::Transition(n.ha(), HaState::kStarting);
  EXPECT_EQ(n.ha().state(), HaState::kStarting);
}

}  // namespace
}  // namespace dtx::coordinator
