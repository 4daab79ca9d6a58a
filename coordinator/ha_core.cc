#include "coordinator/ha_core.h"

#include <algorithm>
#include <utility>

#include "common/check.h"
#include "common/probe.h"

namespace dtx::coordinator {

const char* RoleName(Role r) { return r == Role::kPrimary ? "primary" : "backup"; }

const char* BackupStateName(BackupState s) {
  switch (s) {
    case BackupState::kNone: return "none";
    case BackupState::kDown: return "down";
    case BackupState::kSyncing: return "syncing";
    case BackupState::kInSync: return "in-sync";
  }
  return "?";
}

namespace {
FailureDetectorOptions DetectorOptions(const HaCoreOptions& o) {
  FailureDetectorOptions fdo = o.detector;
  fdo.heartbeat_interval_ms = o.heartbeat_ms;
  return fdo;
}
}  // namespace

HaCore::HaCore(HaCoreOptions options, CoreOptions core_options)
    : opts_(std::move(options)),
      core_opts_(std::move(core_options)),
      peer_fd_(DetectorOptions(opts_)) {
  DTX_CHECK(opts_.heartbeat_ms > 0);
  if (core_opts_.self_address.empty()) core_opts_.self_address = opts_.self_address;
  core_ = std::make_unique<CoordinatorCore>(core_opts_);
  role_ = opts_.role;
}

void HaCore::Note(bool warn, std::string text) { ready_.notes.push_back(HaNote{warn, std::move(text)}); }

std::optional<uint64_t> HaCore::Unwrap(uint64_t id) const {
  if ((id & kHaTagBit) != 0 || (id >> kIncarnationShift) != incarnation_) return std::nullopt;
  return id & ((uint64_t{1} << kIncarnationShift) - 1);
}

PersistTag HaCore::HaPersist(const Record& r, bool forced, TxId txid) {
  PersistRecord p;
  p.tag = kHaTagBit | ha_tag_next_++;
  p.type = TypeOf(r);
  p.payload = EncodePayload(r);
  p.forced = forced;
  p.txid = txid;
  ready_.persist.push_back(std::move(p));
  return ready_.persist.back().tag;
}

const char* HaCore::RoleLabel() const {
  if (role_ == Role::kBackup) return "backup";
  return established_ ? "primary" : "starting";
}

const FailureDetector* HaCore::participant_detector(const std::string& address) const {
  auto it = watches_.find(address);
  return it == watches_.end() ? nullptr : &it->second.fd;
}

bool HaCore::participant_suspected(const std::string& address) const {
  auto it = watches_.find(address);
  return it != watches_.end() && it->second.suspected;
}

PeerView HaCore::View() const {
  PeerView v;
  v.role = RoleLabel();
  v.epoch = core_->epoch();
  if (role_ == Role::kBackup) v.in_sync = in_sync_;
  return v;
}

// ---- recovery ----------------------------------------------------------------------------

Status HaCore::Replay(uint64_t lsn, uint8_t type, std::string_view payload) {
  if (type == kSkipRecordType) {
    // Our own knowledge, not the 2PC core's: the latest SKIP holds the run.
    Result<SkipRecord> r = DecodeSkip(payload);
    if (!r.ok()) return Status::Corruption("LSN " + std::to_string(lsn) + ": " + r.status().ToString());
    blocked_lo_ = r->lo;
    blocked_hi_ = r->hi;
    return Status::OK();
  }
  DTX_RETURN_IF_ERROR(core_->Replay(lsn, type, payload));
  // Remember the newest snapshot in the log (a SYNC is followed by its EPOCH).
  if (type == static_cast<uint8_t>(RecordType::kSync)) {
    Result<Record> rec = DecodeRecord(type, payload);
    if (rec.ok()) replayed_sync_generation_ = std::get<SyncRecord>(*rec).generation;
  } else if (type == static_cast<uint8_t>(RecordType::kEpoch) && replayed_sync_generation_) {
    snapshot_epoch_ = core_->epoch();
    snapshot_generation_ = *replayed_sync_generation_;
    replayed_sync_generation_.reset();
  }
  return Status::OK();
}

void HaCore::Start(uint64_t now_ms) {
  DTX_CHECK(!started_);
  started_ = true;
  const FailureDetectorOptions fdo = DetectorOptions(opts_);
  for (const std::string& p : core_opts_.participants) {
    auto [it, inserted] = watches_.emplace(p, Watch{FailureDetector(fdo)});
    it->second.fd.Start(now_ms);
  }
  peer_fd_ = FailureDetector(fdo);
  peer_fd_.Start(now_ms);
  if (opts_.peer.empty()) {
    role_ = Role::kPrimary;  // alone: nobody else could decide
    backup_state_ = BackupState::kNone;
    core_->Start(now_ms);
    established_ = true;
    solo_ok_ = true;
  } else {
    backup_state_ = BackupState::kDown;  // until it answers and has our snapshot
    if (role_ == Role::kPrimary) {
      Note(false, "starting: will establish a newer epoch than " +
                      std::to_string(core_->epoch()) + " before serving");
    } else {
      Note(false, "backup: not in sync until the primary's snapshot is durable here");
    }
  }
  HeartbeatRound(now_ms);
  next_heartbeat_ms_ = now_ms + opts_.heartbeat_ms;
  Drain(now_ms);
}

// ---- 2PC ---------------------------------------------------------------------------------

void HaCore::Commit(uint64_t now_ms, RequestToken token, CommitRequest req) {
  if (role_ != Role::kPrimary) {
    ready_.replies.push_back(Reply{token, Error{ErrorCode::kNotPrimary, "this coordinator is a backup"}});
    Drain(now_ms);
    return;
  }
  open_commits_.insert(token);
  core_->Commit(now_ms, token, std::move(req));
  Drain(now_ms);
}

void HaCore::QueryDecision(uint64_t now_ms, RequestToken token, TxId txid) {
  if (role_ != Role::kPrimary) {
    // A backup decides nothing, and its log may hold DECISIONs that never
    // reached a commit point (from before it stepped down, until the next
    // snapshot): only the primary answers.
    ready_.replies.push_back(Reply{token, Decision::kUnknown});
    Drain(now_ms);
    return;
  }
  open_queries_.insert(token);
  core_->QueryDecision(now_ms, token, txid);
  Drain(now_ms);
}

void HaCore::OnPrepareReply(uint64_t now_ms, const PrepareReply& r) {
  std::optional<uint64_t> id = Unwrap(r.msg_id);
  if (!id || !core_->started()) return;
  PrepareReply in = r;
  in.msg_id = *id;
  core_->OnPrepareReply(now_ms, in);
  Drain(now_ms);
}

void HaCore::OnCommitReply(uint64_t now_ms, const AckReply& r) {
  std::optional<uint64_t> id = Unwrap(r.msg_id);
  if (!id || !core_->started()) return;
  AckReply in = r;
  in.msg_id = *id;
  core_->OnCommitReply(now_ms, in);
  Drain(now_ms);
}

void HaCore::OnAbortReply(uint64_t now_ms, const AckReply& r) {
  std::optional<uint64_t> id = Unwrap(r.msg_id);
  if (!id || !core_->started()) return;
  AckReply in = r;
  in.msg_id = *id;
  core_->OnAbortReply(now_ms, in);
  Drain(now_ms);
}

void HaCore::OnPersisted(uint64_t now_ms, PersistTag tag, uint64_t lsn) {
  if ((tag & kHaTagBit) != 0) {
    OnOwnPersisted(now_ms, tag, lsn);
    Drain(now_ms);
    return;
  }
  std::optional<uint64_t> core_tag = Unwrap(tag);
  if (!core_tag) return;  // a record of a replaced core
  auto w = decision_waits_.find(tag);
  if (w != decision_waits_.end()) {
    w->second.local = true;
    w->second.lsn = lsn;
    MaybeRelease(now_ms, tag);
    Drain(now_ms);
    return;
  }
  core_->OnPersisted(now_ms, *core_tag, lsn);
  if (solo_epoch_pending_ != 0 && !core_->epoch_pending() && core_->epoch() == solo_epoch_pending_) {
    Note(true, "epoch " + std::to_string(solo_epoch_pending_) +
                   " is durable and held by a majority of participants: the backup is fenced out; "
                   "committing alone until it is re-synced");
    solo_epoch_pending_ = 0;
    if (backup_state_ == BackupState::kDown) {
      solo_ok_ = true;
      std::vector<PersistTag> waiting;
      for (const auto& [t, dw] : decision_waits_) waiting.push_back(t);
      for (PersistTag t : waiting) MaybeRelease(now_ms, t);
    }
  }
  Drain(now_ms);
}

void HaCore::MaybeRelease(uint64_t now_ms, PersistTag tag) {
  auto it = decision_waits_.find(tag);
  if (it == decision_waits_.end()) return;
  const DecisionWait& w = it->second;
  // The commit point: durable here and at the backup - or, with no backup
  // that could take over (alone by configuration, or after fencing it out
  // with a newer epoch at a majority of participants), here alone.
  if (!w.local || (!w.backup && !solo_ok_)) return;
  const TxId txid = w.txid;
  const uint64_t lsn = w.lsn;
  decision_waits_.erase(it);
  ready_.released.push_back(txid);
  std::optional<uint64_t> core_tag = Unwrap(tag);
  DTX_CHECK(core_tag.has_value());
  core_->OnPersisted(now_ms, *core_tag, lsn);
}

void HaCore::Tick(uint64_t now_ms) {
  if (!started_) return;
  if (core_->started()) core_->Tick(now_ms);
  if (now_ms >= next_heartbeat_ms_) {
    HeartbeatRound(now_ms);
    next_heartbeat_ms_ = now_ms + opts_.heartbeat_ms;
  }
  CheckSuspicions(now_ms);
  Drain(now_ms);
}

// ---- draining ----------------------------------------------------------------------------

void HaCore::Drain(uint64_t now_ms) {
  for (;;) {
    Ready r = core_->TakeReady();
    if (r.empty()) break;
    for (PersistRecord& p : r.persist) {
      p.tag = Wrap(p.tag);
      if (p.type == RecordType::kDecision && p.forced) decision_waits_[p.tag] = DecisionWait{p.txid};
      if (backup_state_ == BackupState::kInSync || backup_state_ == BackupState::kSyncing) {
        repl_batch_.push_back(ReplRecord{p.type, p.payload});
        if (p.type == RecordType::kDecision && p.forced) repl_batch_tags_.push_back(p.tag);
      }
      ready_.persist.push_back(std::move(p));
    }
    for (OutMessage& m : r.send) {
      m.id = Wrap(m.id);
      ready_.send.push_back(std::move(m));
    }
    for (Reply& rep : r.replies) {
      open_commits_.erase(rep.token);
      open_queries_.erase(rep.token);
      ready_.replies.push_back(std::move(rep));
    }
    ready_.truncate_before = std::max(ready_.truncate_before, r.truncate_before);
  }
  FlushReplicate();
  if (core_->fenced() && !core_fenced_seen_) {
    core_fenced_seen_ = true;
    Note(true, "a participant reported a newer coordinator epoch than " +
                   std::to_string(core_->epoch()) +
                   ": this coordinator is fenced and refuses new commits (NOT_PRIMARY)");
    if (!opts_.peer.empty()) StepDownLater("a participant reported a newer epoch");
  }
  // A step-down waits for our own EPOCH record on its way (it would race it).
  if (step_down_pending_ && establishing_tag_ == 0) {
    std::string why = std::move(*step_down_pending_);
    step_down_pending_.reset();
    BecomeBackup(now_ms, why);
  }
}

HaReady HaCore::TakeReady() {
  HaReady out = std::move(ready_);
  ready_ = HaReady{};
  return out;
}

// ---- heartbeats and failure detection ----------------------------------------------------

void HaCore::HeartbeatRound(uint64_t now_ms) {
  // A probe still out is not duplicated: its reply (or timeout) decides.
  for (auto& [address, w] : watches_) {
    if (w.probe_out) continue;
    w.probe_out = true;
    ready_.probes.push_back(ProbeMsg{address, false, RoleLabel(), core_->epoch()});
  }
  if (!opts_.peer.empty() && !peer_probe_out_) {
    peer_probe_out_ = true;
    ready_.probes.push_back(ProbeMsg{opts_.peer, true, RoleLabel(), core_->epoch()});
  }
  if (role_ == Role::kPrimary && backup_state_ == BackupState::kInSync &&
      replicated_since_snapshot_ >= opts_.resync_after_records) {
    DTX_PROBE(coordinator_resync_snapshot);
    StartSync(now_ms);  // a fresh snapshot lets the backup drop its older log
  }
}

void HaCore::OnProbeReply(uint64_t now_ms, const std::string& to, bool ok,
                          const std::optional<PeerView>& view) {
  if (!started_) return;
  if (!opts_.peer.empty() && to == opts_.peer) {
    peer_probe_out_ = false;
    if (ok) {
      peer_fd_.Heartbeat(now_ms);
      if (view) OnPeerView(now_ms, *view);
    }
  } else if (auto it = watches_.find(to); it != watches_.end()) {
    it->second.probe_out = false;
    if (ok) it->second.fd.Heartbeat(now_ms);
  }
  CheckSuspicions(now_ms);
  Drain(now_ms);
}

void HaCore::OnPeerView(uint64_t now_ms, const PeerView& view) {
  std::string name = view.name.empty() ? peer_view_.name : view.name;
  peer_view_ = view;
  peer_view_.name = std::move(name);
  if (role_ == Role::kPrimary && view.role == "primary" && view.epoch > core_->epoch()) {
    StepDownLater("peer " + opts_.peer + " is primary at epoch " + std::to_string(view.epoch));
    return;
  }
  if (role_ == Role::kPrimary && established_ && view.role == "backup" &&
      backup_state_ == BackupState::kDown && bump_.epoch == 0) {
    StartSync(now_ms);
  }
  DriveRole(now_ms);
}

PeerView HaCore::OnPeerHeartbeat(uint64_t now_ms, const std::string& sender, const PeerView& view) {
  if (started_) {
    if (!opts_.peer.empty() && sender == opts_.peer) {
      // Proof of life from the peer, whichever side probes.
      peer_fd_.Heartbeat(now_ms);
      UpdatePeerSuspicion(now_ms);
      peer_view_.role = view.role;
      peer_view_.epoch = view.epoch;
      if (!view.name.empty()) peer_view_.name = view.name;
    }
    if (role_ == Role::kPrimary && view.role == "primary" && view.epoch > core_->epoch()) {
      StepDownLater("peer " + sender + " is primary at epoch " + std::to_string(view.epoch));
    }
  }
  PeerView mine = View();
  Drain(now_ms);
  return mine;
}

void HaCore::CheckSuspicions(uint64_t now_ms) {
  for (auto& [address, w] : watches_) {
    const bool s = w.fd.Suspected(now_ms);
    if (s == w.suspected) continue;
    w.suspected = s;
    if (s) {
      ++stats_.participant_suspicions;
      Note(true, "participant " + address + " suspected: no heartbeat for " +
                     std::to_string(w.fd.heard() ? w.fd.AgeMs(now_ms) : int64_t{-1}) + " ms");
    } else {
      Note(false, "participant " + address + " is answering heartbeats again");
    }
    if (role_ == Role::kPrimary && core_->started()) core_->SetParticipantSuspected(now_ms, address, s);
  }
  // The peer's suspicion first: DriveRole must not act on a suspicion that
  // a heartbeat or Replicate received since has already refuted (a backup
  // re-synced after a heal would otherwise promote at once).
  UpdatePeerSuspicion(now_ms);
  DriveRole(now_ms);
}

void HaCore::UpdatePeerSuspicion(uint64_t now_ms) {
  if (opts_.peer.empty()) return;
  const bool s = peer_fd_.Suspected(now_ms);
  if (s == peer_suspected_) return;
  peer_suspected_ = s;
  if (s) {
    ++stats_.peer_suspicions;
    Note(true, "peer coordinator " + opts_.peer + " suspected: no heartbeat for " +
                   std::to_string(peer_fd_.AgeMs(now_ms)) + " ms");
    if (role_ == Role::kPrimary) BackupLost(now_ms, "backup suspected (no heartbeat)");
    peer_suspected_at_ms_ = now_ms;
  } else {
    Note(false, "peer coordinator " + opts_.peer + " is answering heartbeats again");
  }
}

// ---- replication: primary side -----------------------------------------------------------

void HaCore::FlushReplicate() {
  if (repl_batch_.empty() || opts_.peer.empty()) return;
  ReplicateMsg m;
  m.id = next_ha_msg_++;
  m.epoch = core_->epoch();
  m.primary = opts_.self_address;
  m.generation = generation_;
  m.snapshot = false;
  m.records = std::move(repl_batch_);
  m.timeout_ms = opts_.replicate_timeout_ms;
  repl_batch_.clear();
  replicated_since_snapshot_ += m.records.size();
  replicate_out_[m.id] = ReplicateOut{generation_, false, std::move(repl_batch_tags_)};
  repl_batch_tags_.clear();
  ready_.replicate.push_back(std::move(m));
}

void HaCore::StartSync(uint64_t /*now_ms*/) {
  if (opts_.peer.empty() || role_ != Role::kPrimary || !established_) return;
  ++generation_;
  backup_state_ = BackupState::kSyncing;
  replicated_since_snapshot_ = 0;
  // From now on the backup may count itself in sync and take over if we
  // die: every decision needs its ack.
  solo_ok_ = false;
  // Records queued for the previous generation are covered by the snapshot.
  repl_batch_.clear();
  repl_batch_tags_.clear();
  ReplicateMsg m;
  m.id = next_ha_msg_++;
  m.epoch = core_->epoch();
  m.primary = opts_.self_address;
  m.generation = generation_;
  m.snapshot = true;
  m.timeout_ms = opts_.replicate_timeout_ms * 5;
  auto add = [&m](const Record& r) { m.records.push_back(ReplRecord{TypeOf(r), EncodePayload(r)}); };
  add(SyncRecord{generation_});
  add(EpochRecord{core_->epoch()});
  // Every DECISION appended and not ENDed, including ones not yet durable
  // here: those wait for this snapshot's ack like any in-sync DECISION.
  for (const DecisionRecord& d : core_->OpenDecisions()) add(d);
  std::vector<PersistTag> tags;
  for (auto& [tag, w] : decision_waits_) {
    w.backup = false;
    tags.push_back(tag);
  }
  Note(false, "replication: sending a snapshot to backup " + opts_.peer + " (generation " +
                  std::to_string(generation_) + ", " + std::to_string(m.records.size()) + " records)");
  replicate_out_[m.id] = ReplicateOut{generation_, true, std::move(tags)};
  ready_.replicate.push_back(std::move(m));
}

void HaCore::OnReplicateReply(uint64_t now_ms, MessageId id, CallStatus status,
                              const std::string& error) {
  auto it = replicate_out_.find(id);
  if (it == replicate_out_.end()) return;
  ReplicateOut out = std::move(it->second);
  replicate_out_.erase(it);
  if (out.generation != generation_) return;  // an older generation: already settled
  if (status != CallStatus::kOk) {
    BackupLost(now_ms, "Replicate failed: " + error);
    Drain(now_ms);
    return;
  }
  if (out.snapshot && backup_state_ == BackupState::kSyncing) {
    backup_state_ = BackupState::kInSync;
    Note(false, "replication: backup " + opts_.peer + " is in sync (generation " +
                    std::to_string(out.generation) + ")");
  }
  for (PersistTag t : out.tags) {
    auto w = decision_waits_.find(t);
    if (w == decision_waits_.end()) continue;
    w->second.backup = true;
    ready_.backup_acked.push_back(w->second.txid);
    MaybeRelease(now_ms, t);
  }
  Drain(now_ms);
}

void HaCore::BackupLost(uint64_t now_ms, const std::string& why) {
  if (backup_state_ != BackupState::kInSync && backup_state_ != BackupState::kSyncing) return;
  ++generation_;  // replies still out belong to the lost generation
  ++stats_.backup_losses;
  DTX_PROBE(coordinator_backup_lost);
  backup_state_ = BackupState::kDown;
  repl_batch_.clear();
  repl_batch_tags_.clear();
  // The backup may still think it is in sync (it may only be cut off from
  // us), so committing alone now could let it take over without our
  // decisions. Decisions wait until DriveRole has fenced it out with a newer
  // epoch at a majority of participants (then we commit alone) or we learn
  // that it took over (then we step down and they never commit here).
  Note(true, "replication: backup " + opts_.peer + " lost (" + why +
                 "); fencing it out before committing alone");
  DriveRole(now_ms);
}

// ---- replication: backup side ------------------------------------------------------------

void HaCore::OnReplicate(uint64_t now_ms, RequestToken token, ReplicateIn req) {
  auto refuse = [&](ErrorCode code, std::string message) {
    ready_.replicate_answers.push_back(ReplicateAnswer{token, Error{code, std::move(message)}, 0});
    Drain(now_ms);
  };
  if (!started_) return refuse(ErrorCode::kUnavailable, "coordinator is starting");
  // The newest epoch in our log, counting records appended but not yet
  // durable (and so not yet replayed into the mirror): a delayed older
  // batch must not follow a newer one.
  const Epoch current = std::max(core_->epoch(), appended_epoch_);
  if (req.epoch < current) {
    return refuse(ErrorCode::kStaleEpoch, "Replicate at epoch " + std::to_string(req.epoch) +
                                              " but epoch " + std::to_string(current) +
                                              " is current here");
  }
  if (role_ != Role::kBackup) {
    const Epoch mine = std::max<Epoch>(core_->epoch(), bump_.epoch);
    if (req.epoch > mine) {
      // A primary at a newer epoch: we were deposed.
      StepDownLater("Replicate from " + req.primary + " at epoch " + std::to_string(req.epoch));
      return refuse(ErrorCode::kUnavailable, "stepping down; send a snapshot");
    }
    return refuse(ErrorCode::kStaleEpoch, "this coordinator is the primary at epoch " +
                                              std::to_string(mine) + "; Replicate at epoch " +
                                              std::to_string(req.epoch) + " is stale");
  }
  if (!opts_.peer.empty() && req.primary == opts_.peer) {
    // Proof of life of the primary at the current epoch: no longer suspected.
    peer_fd_.Heartbeat(now_ms);
    UpdatePeerSuspicion(now_ms);
  }
  if (req.snapshot && req.epoch == snapshot_epoch_ && req.generation <= snapshot_generation_) {
    // A late copy of a snapshot we already have (or an older one): its SYNC
    // would close every DECISION replicated since (found by the simulator,
    // tests/sim/README.md).
    return refuse(ErrorCode::kUnavailable,
                  "snapshot of generation " + std::to_string(req.generation) + " at epoch " +
                      std::to_string(req.epoch) + " is not newer than generation " +
                      std::to_string(snapshot_generation_) + " here");
  }
  // A batch belongs to the snapshot of its epoch and generation: a primary
  // restarted at a newer epoch numbers its generations from 1 again, so a
  // batch that overtook its snapshot must not pass for the old one's (its
  // DECISION would then be closed by the snapshot's SYNC arriving after it).
  if (!req.snapshot && (req.generation != sync_generation_ || req.epoch != snapshot_epoch_)) {
    return refuse(ErrorCode::kUnavailable, "not in sync for generation " +
                                               std::to_string(req.generation) + " (have " +
                                               std::to_string(sync_generation_) + " at epoch " +
                                               std::to_string(snapshot_epoch_) +
                                               "): send a snapshot");
  }
  // Validate everything before appending anything: a bad batch leaves no trace.
  Epoch epoch = current;
  for (const ReplRecord& r : req.records) {
    Result<Record> rec = DecodeRecord(static_cast<uint8_t>(r.type), r.payload);
    if (!rec.ok()) return refuse(ErrorCode::kBadArgument, "Replicate: " + rec.status().ToString());
    if (const auto* e = std::get_if<EpochRecord>(&*rec)) {
      if (e->epoch < epoch) {
        return refuse(ErrorCode::kStaleEpoch, "Replicate: EPOCH " + std::to_string(e->epoch) +
                                                  " < " + std::to_string(epoch));
      }
      epoch = e->epoch;
    }
  }
  appended_epoch_ = epoch;
  if (req.snapshot) {
    sync_generation_ = req.generation;
    in_sync_ = false;
    snapshot_epoch_ = req.epoch;
    snapshot_generation_ = req.generation;
  }
  if (req.records.empty()) {
    ready_.replicate_answers.push_back(ReplicateAnswer{token, std::nullopt, 0});
    Drain(now_ms);
    return;
  }
  // Appended (forced) now; each record is replayed into the mirror once it is
  // durable (OnPersisted comes in LSN order), and the call is answered when
  // the last one is.
  PersistTag first = 0;
  for (size_t i = 0; i < req.records.size(); ++i) {
    ReplRecord& r = req.records[i];
    PersistRecord p;
    p.tag = kHaTagBit | ha_tag_next_++;
    p.type = r.type;
    p.payload = r.payload;
    p.forced = true;
    if (Result<Record> rec = DecodeRecord(static_cast<uint8_t>(r.type), r.payload); rec.ok()) {
      if (const auto* d = std::get_if<DecisionRecord>(&*rec)) p.txid = d->txid;
      if (const auto* e = std::get_if<EndRecord>(&*rec)) p.txid = e->txid;
    }
    if (i == 0) first = p.tag;
    BackupAppend a;
    a.record = std::move(r);
    a.last = i + 1 == req.records.size();
    a.token = token;
    a.snapshot = req.snapshot;
    a.generation = req.generation;
    a.first_lsn_tag = first;
    backup_appends_.emplace(p.tag, std::move(a));
    ready_.persist.push_back(std::move(p));
    ++stats_.replicated_records;
  }
  Drain(now_ms);
}

void HaCore::OnOwnPersisted(uint64_t now_ms, PersistTag tag, uint64_t lsn) {
  if (tag == establishing_tag_ && tag != 0) {
    establishing_tag_ = 0;
    const Epoch e = establishing_epoch_;
    const std::string payload = EncodePayload(EpochRecord{e});
    Status r = core_->Replay(lsn, static_cast<uint8_t>(RecordType::kEpoch), payload);
    DTX_CHECK_MSG(r.ok(), "the EPOCH record of a newly established epoch failed to replay");
    core_->Start(now_ms);
    established_ = true;
    solo_ok_ = backup_state_ == BackupState::kDown;
    Note(true, "serving as primary at epoch " + std::to_string(e) + " (" +
                   (peer_suspected_at_ms_ == 0 ? std::string("peer never suspected")
                                               : std::to_string(now_ms - peer_suspected_at_ms_) +
                                                     " ms after the peer was last suspected") +
                   "); re-driving " + std::to_string(core_->committing()) + " decisions");
    for (const auto& [address, w] : watches_) {
      if (w.suspected) core_->SetParticipantSuspected(now_ms, address, true);
    }
    return;
  }
  auto it = backup_appends_.find(tag);
  if (it == backup_appends_.end()) return;
  BackupAppend a = std::move(it->second);
  backup_appends_.erase(it);
  if (tag == a.first_lsn_tag) batch_first_lsn_[tag] = lsn;
  Status s = core_->Replay(lsn, static_cast<uint8_t>(a.record.type), a.record.payload);
  if (!s.ok()) {
    const std::string why = "a validated replicated record failed to replay: " + s.ToString() +
                            " (role " + RoleLabel() + ", core started " +
                            std::to_string(core_->started()) + ")";
    DTX_CHECK_MSG(s.ok(), why.c_str());
  }
  if (!a.last) return;
  uint64_t first_lsn = lsn;
  if (auto f = batch_first_lsn_.find(a.first_lsn_tag); f != batch_first_lsn_.end()) {
    first_lsn = f->second;
    batch_first_lsn_.erase(f);
  }
  if (a.snapshot && a.generation == sync_generation_ && role_ == Role::kBackup) {
    in_sync_ = true;
    Note(false, "backup: snapshot of generation " + std::to_string(a.generation) +
                    " is durable: in sync");
    // Everything before the snapshot's SYNC record is superseded.
    ready_.truncate_before = std::max(ready_.truncate_before, first_lsn);
  }
  ready_.replicate_answers.push_back(ReplicateAnswer{a.token, std::nullopt, lsn});
}

// ---- failover and fencing ----------------------------------------------------------------

void HaCore::DriveRole(uint64_t now_ms) {
  if (!started_ || opts_.peer.empty()) return;
  // Neither of us serves: we are a backup and the peer answers as a backup
  // or as a primary still "starting" (trying to establish an epoch).
  const bool nobody_serves = role_ == Role::kBackup && !peer_suspected_ &&
                             (peer_view_.role == "backup" || peer_view_.role == "starting");
  const bool both_backups = nobody_serves && peer_view_.role == "backup";
  if (nobody_serves != both_backups_) {
    both_backups_ = nobody_serves;
    both_backups_since_ms_ = now_ms;
  }
  const bool nobody_served_long =
      nobody_serves && now_ms - both_backups_since_ms_ >= kBothBackupsYieldFactor * opts_.detector.suspect_after_ms;
  if (bump_.epoch != 0 || establishing_tag_ != 0 || step_down_pending_) return;
  if (now_ms < bump_retry_at_ms_) return;
  const Epoch epoch = core_->epoch();
  if (role_ == Role::kPrimary && !established_) {
    if (peer_view_.role == "primary" && peer_view_.epoch >= epoch) {
      StepDownLater("peer " + opts_.peer + " is primary at epoch " + std::to_string(peer_view_.epoch));
      return;
    }
    if (peer_view_.role.empty() && !peer_suspected_) return;  // wait to hear from it, or suspect it
    if (peer_view_.role == "starting" && !peer_suspected_ && opts_.self_address > opts_.peer) {
      return;  // both starting: the lower address goes first
    }
    StartBump(now_ms, NextBumpEpoch(), "starting as primary");
  } else if (role_ == Role::kPrimary && established_ && !solo_ok_ &&
             backup_state_ == BackupState::kDown && solo_epoch_pending_ == 0) {
    StartBump(now_ms, NextBumpEpoch(), "backup lost: fencing it out before committing alone");
  } else if (role_ == Role::kBackup && in_sync_ && peer_suspected_) {
    StartBump(now_ms, NextBumpEpoch(), "primary suspected: promoting");
  } else if (nobody_serves && epoch > 0 &&
             ((both_backups && epoch > peer_view_.epoch) ||
              (epoch == peer_view_.epoch &&
               ((both_backups && opts_.self_address < opts_.peer) || nobody_served_long)))) {
    // Both coordinators are backups (e.g. both restarted, the one started as
    // primary with the older log stepped down, or a deposed primary's backup
    // still counting itself in sync with it). The newest log is the owner
    // of its epoch - the other's epoch is lower - or, at equal epochs, acked
    // every decision of it: it holds every commit decision and takes over.
    // At equal epochs the lower address goes first; if that has not ended
    // the situation after a while (e.g. the other holds the grants of the
    // next epoch at a majority), the higher address tries too.
    // Exclusive epoch grants keep a race with the peer safe.
    Note(true, "both coordinators are backups; our log (epoch " + std::to_string(epoch) +
                   ") is at least as new as the peer's (epoch " +
                   std::to_string(peer_view_.epoch) + "): taking over");
    role_ = Role::kPrimary;  // starting; established once the new epoch is durable
    StartBump(now_ms, NextBumpEpoch(), "both coordinators are backups: the newest log takes over");
  }
}

void HaCore::StartBump(uint64_t now_ms, Epoch epoch, std::string why) {
  bump_ = Bump{};
  bump_.id = ++next_bump_id_;
  bump_.epoch = epoch;
  bump_.started_ms = now_ms;
  bump_.why = std::move(why);
  adopt_out_.clear();
  Note(false, "epoch " + std::to_string(epoch) + ": asking " +
                  std::to_string(core_opts_.participants.size()) + " participants to adopt it (" +
                  bump_.why + ")");
  if (core_opts_.participants.empty()) {
    BumpSucceeded(now_ms);
    return;
  }
  for (const std::string& p : core_opts_.participants) {
    const MessageId id = next_ha_msg_++;
    adopt_out_[id] = p;
    ready_.adopt.push_back(AdoptEpochMsg{id, p, epoch, opts_.detector.suspect_after_ms});
  }
}

void HaCore::OnAdoptEpochReply(uint64_t now_ms, MessageId id, CallStatus status,
                               const std::string& error, std::optional<Epoch> current_epoch,
                               const std::string& owner) {
  auto it = adopt_out_.find(id);
  if (it == adopt_out_.end() || bump_.epoch == 0) return;
  const std::string participant = it->second;
  adopt_out_.erase(it);
  if (status == CallStatus::kOk) {
    ++bump_.ok;
  } else {
    ++bump_.failed;
    bump_.last_error = participant + ": " + error;
    if (status == CallStatus::kStaleEpoch) {
      // Refused: the participant holds a newer epoch, or this one granted to
      // another coordinator (or to an unknown one).
      ++bump_.stale;
      if (current_epoch && *current_epoch >= bump_.highest_seen) {
        bump_.highest_seen = *current_epoch;
        bump_.highest_owner = owner;
      }
    }
  }
  const size_t n = core_opts_.participants.size();
  const size_t majority = n / 2 + 1;
  // Each participant grants an epoch to one coordinator only, ever (the
  // owner is persisted with it), so at most one contender reaches a majority;
  // a STALE_EPOCH from some participants does not stop us from winning at
  // the others.
  if (bump_.ok >= majority) {
    BumpSucceeded(now_ms);
  } else if (bump_.ok + bump_.failed == n) {
    std::string why = "only " + std::to_string(bump_.ok) + " of " + std::to_string(n) +
                      " participants adopted it; last error " + bump_.last_error;
    if (bump_.highest_seen != 0) {
      why += "; highest epoch seen " + std::to_string(bump_.highest_seen) +
             (bump_.highest_owner.empty() ? std::string(" (owner unknown)")
                                          : " (held by " + bump_.highest_owner + ")");
    }
    // A blocking set: so many participants granted the epoch to us that no
    // other coordinator can ever hold it at a majority, while it is lost to
    // us at others - nobody can establish it, so skip it.
    const size_t blocking = n - majority + 1;
    if (bump_.ok >= blocking && bump_.stale > 0) {
      BumpBlocked(now_ms, why);
    } else {
      // Stale only when the refusals alone rule a majority out; otherwise
      // the participants that did not answer may still grant it to us.
      BumpFailed(now_ms, bump_.stale > n - majority, why);
    }
  }
  Drain(now_ms);
}

Epoch HaCore::NextBumpEpoch() const {
  const Epoch e = core_->epoch();
  if (blocked_lo_ <= e && blocked_hi_ > e) return blocked_hi_ + 1;
  return e + 1;
}

uint64_t HaCore::SkipDelayMs() const {
  // No randomness in the core: the two coordinators move on after different
  // delays (the lower address first), growing with the run of skipped epochs,
  // so that two contenders splitting the grants of every epoch separate.
  const uint64_t run = static_cast<uint64_t>(std::min<Epoch>(blocked_hi_ - blocked_lo_, 8));
  const uint64_t base = opts_.self_address < opts_.peer ? opts_.heartbeat_ms / 2 : opts_.heartbeat_ms * 2;
  return base + run * (opts_.heartbeat_ms / 4);
}

void HaCore::BumpBlocked(uint64_t now_ms, const std::string& why) {
  const Epoch x = bump_.epoch;
  bump_.epoch = 0;
  adopt_out_.clear();
  // x == NextBumpEpoch(): it extends a known run, or starts one above the
  // core epoch (every epoch in between is in our log).
  const Epoch e = core_->epoch();
  if (blocked_lo_ <= e && blocked_hi_ > e && x == blocked_hi_ + 1) {
    blocked_hi_ = x;
  } else if (x == e + 1) {
    blocked_lo_ = e;
    blocked_hi_ = x;
  }  // else the core epoch moved during the bump: nothing usable was learnt
  if (blocked_hi_ == x) {
    DTX_PROBE(coordinator_epoch_blocked);
    // Remembered across a restart (a SKIP record, not forced: the EPOCH of
    // the next epoch we establish is forced and syncs it too).
    PersistRecord p;
    p.tag = kHaTagBit | ha_tag_next_++;
    p.type = static_cast<RecordType>(kSkipRecordType);
    p.payload = EncodeSkip(SkipRecord{blocked_lo_, blocked_hi_});
    p.forced = false;
    ready_.persist.push_back(std::move(p));
  }
  bump_retry_at_ms_ = now_ms + SkipDelayMs();
  Note(true, "epoch " + std::to_string(x) + " not adopted but blocked: " + why +
                 "; no coordinator can establish it, next attempt at epoch " +
                 std::to_string(NextBumpEpoch()));
}

void HaCore::BumpSucceeded(uint64_t now_ms) {
  const Epoch e = bump_.epoch;
  Note(false, "epoch " + std::to_string(e) + " adopted by a majority of participants in " +
                  std::to_string(now_ms - bump_.started_ms) + " ms (" + bump_.why + ")");
  bump_.epoch = 0;
  adopt_out_.clear();
  ++stats_.epoch_bumps;
  if (role_ == Role::kPrimary && established_) {
    // The backup (which may think it is in sync) can no longer take over at
    // e: commit alone once EPOCH e is durable here.
    solo_epoch_pending_ = e;
    core_->BumpEpoch(now_ms, e);
    return;
  }
  if (role_ == Role::kBackup && !in_sync_) {
    // A snapshot arrived meanwhile and is not durable yet: try again later.
    bump_retry_at_ms_ = now_ms + opts_.heartbeat_ms;
    return;
  }
  if (role_ == Role::kBackup) {
    ++stats_.promotions;
    DTX_PROBE(coordinator_promotion);
  }
  role_ = Role::kPrimary;  // refuses Replicate from now on
  EstablishAt(e);
}

void HaCore::BumpFailed(uint64_t now_ms, bool stale, const std::string& why) {
  const Epoch e = bump_.epoch;
  bump_.epoch = 0;
  adopt_out_.clear();
  bump_retry_at_ms_ = now_ms + opts_.detector.suspect_after_ms;
  Note(true, "epoch " + std::to_string(e) + " not adopted (" +
                 (stale ? "a newer coordinator exists" : "no majority") + "): " + why);
  if (!stale) return;  // try again later
  if (role_ == Role::kBackup) {
    // Someone moved past our epoch without us: we do not hold its decisions.
    in_sync_ = false;
    return;
  }
  StepDownLater("epoch " + std::to_string(e) + " is held by another coordinator");
}

void HaCore::EstablishAt(Epoch epoch) {
  DTX_CHECK(!core_->started() && establishing_tag_ == 0);
  establishing_epoch_ = epoch;
  establishing_tag_ = HaPersist(EpochRecord{epoch}, /*forced=*/true, TxId{});
}

void HaCore::StepDownLater(std::string why) {
  if (!step_down_pending_) step_down_pending_ = std::move(why);
}

void HaCore::BecomeBackup(uint64_t /*now_ms*/, const std::string& why) {
  if (role_ == Role::kBackup) return;
  const bool was_established = established_;
  Note(true, "stepping down to backup: " + why);
  role_ = Role::kBackup;
  established_ = false;
  solo_ok_ = false;
  solo_epoch_pending_ = 0;
  backup_state_ = BackupState::kDown;
  ++generation_;
  bump_ = Bump{};
  adopt_out_.clear();
  repl_batch_.clear();
  repl_batch_tags_.clear();
  decision_waits_.clear();
  replicate_out_.clear();
  in_sync_ = false;
  sync_generation_ = -1;
  if (!was_established) return;
  ++stats_.step_downs;
  DTX_PROBE(coordinator_step_down);
  // Requests in flight: whether they committed is the new primary's to tell
  // (a DECISION that reached the commit point is held by the backup).
  for (RequestToken t : open_commits_) {
    ready_.replies.push_back(Reply{
        t, CommitResult{Outcome::kUnknown, std::nullopt,
                        "coordinator stepped down (" + why + "); ask the primary with the same txid"}});
  }
  for (RequestToken t : open_queries_) ready_.replies.push_back(Reply{t, Decision::kUnknown});
  open_commits_.clear();
  open_queries_.clear();
  // Rebuild the core as an unstarted mirror of our log: the driver replays it.
  // What this process answered from memory only (aborts, one-phase outcomes)
  // stays remembered: a late copy of a request answered ABORTED must not run
  // the transaction again when we are primary again.
  const CoordinatorCore::Memory memory = core_->ExportMemory();
  core_ = std::make_unique<CoordinatorCore>(core_opts_);
  core_->ImportMemory(memory);
  ++incarnation_;
  core_fenced_seen_ = false;
  ready_.reload_log = true;
}

}  // namespace dtx::coordinator
