#include "coordinator/ha_core.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "common/check.h"
#include "common/probe.h"

namespace dtx::coordinator {

const char* RoleName(Role r) { return r == Role::kPrimary ? "primary" : "backup"; }

const char* HaStateName(HaState s) {
  switch (s) {
    case HaState::kInit: return "init";
    case HaState::kAlone: return "alone";
    case HaState::kStarting: return "starting";
    case HaState::kEstablishing: return "establishing";
    case HaState::kPrimarySolo: return "primary-solo";
    case HaState::kPrimarySyncing: return "primary-syncing";
    case HaState::kPrimaryInSync: return "primary-in-sync";
    case HaState::kPrimaryFencing: return "primary-fencing";
    case HaState::kBackupSyncing: return "backup-syncing";
    case HaState::kBackupInSync: return "backup-in-sync";
  }
  return "?";
}

const char* PeerRoleName(const std::optional<NodeRole>& role) {
  return role ? NodeRoleName(*role) : "unknown";
}

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
}

// ---- states and transitions ----------------------------------------------------------------

bool HaCore::IsLegalTransition(HaState from, HaState to) {
  using S = HaState;
  switch (from) {
    case S::kInit: return to == S::kAlone || to == S::kStarting || to == S::kBackupSyncing;
    // Alone by configuration, yet a Replicate at a newer epoch deposes it
    // (the step-down path does not ask whether a peer is configured).
    case S::kAlone: return to == S::kBackupSyncing;
    case S::kStarting: return to == S::kEstablishing || to == S::kBackupSyncing;
    // A step-down waits until our EPOCH record is durable (Drain).
    case S::kEstablishing: return to == S::kPrimarySolo;
    case S::kPrimarySolo: return to == S::kPrimarySyncing || to == S::kBackupSyncing;
    case S::kPrimarySyncing:
      return to == S::kPrimaryInSync || to == S::kPrimaryFencing || to == S::kBackupSyncing;
    case S::kPrimaryInSync:
      return to == S::kPrimarySyncing || to == S::kPrimaryFencing || to == S::kBackupSyncing;
    case S::kPrimaryFencing:
      return to == S::kPrimarySolo || to == S::kPrimarySyncing || to == S::kBackupSyncing;
    case S::kBackupSyncing: return to == S::kBackupInSync || to == S::kStarting;
    case S::kBackupInSync:
      return to == S::kBackupSyncing || to == S::kEstablishing || to == S::kStarting;
  }
  return false;
}

bool HaCore::IsEstablished(HaState s) {
  switch (s) {
    case HaState::kAlone:
    case HaState::kPrimarySolo:
    case HaState::kPrimarySyncing:
    case HaState::kPrimaryInSync:
    case HaState::kPrimaryFencing: return true;
    case HaState::kInit:
    case HaState::kStarting:
    case HaState::kEstablishing:
    case HaState::kBackupSyncing:
    case HaState::kBackupInSync: return false;
  }
  return false;
}

Role HaCore::role() const {
  switch (state_) {
    case HaState::kInit: return opts_.role;
    case HaState::kBackupSyncing:
    case HaState::kBackupInSync: return Role::kBackup;
    case HaState::kAlone:
    case HaState::kStarting:
    case HaState::kEstablishing:
    case HaState::kPrimarySolo:
    case HaState::kPrimarySyncing:
    case HaState::kPrimaryInSync:
    case HaState::kPrimaryFencing: return Role::kPrimary;
  }
  return Role::kBackup;
}

NodeRole HaCore::node_role() const {
  if (role() == Role::kBackup) return NodeRole::kBackup;
  return IsEstablished(state_) ? NodeRole::kPrimary : NodeRole::kStarting;
}

BackupState HaCore::backup_state() const {
  switch (state_) {
    case HaState::kInit:
    case HaState::kAlone: return BackupState::kNone;
    case HaState::kPrimarySyncing: return BackupState::kSyncing;
    case HaState::kPrimaryInSync: return BackupState::kInSync;
    case HaState::kStarting:
    case HaState::kEstablishing:
    case HaState::kPrimarySolo:
    case HaState::kPrimaryFencing:
    case HaState::kBackupSyncing:
    case HaState::kBackupInSync: return BackupState::kDown;
  }
  return BackupState::kDown;
}

void HaCore::Transition(HaState to, const std::string& why) {
  const HaState from = state_;
  if (!IsLegalTransition(from, to)) {
    const std::string msg = std::string("invalid HA transition ") + HaStateName(from) + " -> " +
                            HaStateName(to) + " (" + why + ")";
    DTX_CHECK_MSG(IsLegalTransition(from, to), msg.c_str());
  }
  state_ = to;
  Note(false, std::string("state ") + HaStateName(from) + " -> " + HaStateName(to) + ": " + why);
}

void HaCore::BecomeAlone() {
  DTX_CHECK(opts_.peer.empty());
  Transition(HaState::kAlone, "no peer: primary, committing alone");
}

void HaCore::BecomeStarting(const std::string& why) {
  DTX_CHECK(!opts_.peer.empty() && !core_->started());
  Transition(HaState::kStarting, why);
}

void HaCore::BecomeEstablishing(Epoch epoch, const std::string& why) {
  // Our core is an unstarted mirror of our log, and `epoch` is newer than
  // every epoch in it: a majority adopted it for us just now.
  DTX_CHECK(!core_->started() && establishing_tag_ == 0);
  DTX_CHECK(epoch > core_->epoch());
  Transition(HaState::kEstablishing, why);
  establishing_epoch_ = epoch;
  establishing_tag_ = HaPersist(EpochRecord{epoch}, /*forced=*/true, TxId{});
}

void HaCore::BecomePrimarySolo(const std::string& why) {
  // The backup cannot take over: our epoch, newer than any it could hold
  // decisions of, is durable here (and held by a majority).
  DTX_CHECK(core_->started() && durable_epoch_ == core_->epoch());
  Transition(HaState::kPrimarySolo, why);
}

void HaCore::BecomePrimarySyncing() {
  DTX_CHECK(core_->started() && !opts_.peer.empty());
  Transition(HaState::kPrimarySyncing,
             "snapshot of generation " + std::to_string(generation_) + " sent to the backup");
}

void HaCore::BecomePrimaryInSync() {
  DTX_CHECK(core_->started());
  Transition(HaState::kPrimaryInSync,
             "the backup acked the snapshot of generation " + std::to_string(generation_));
}

void HaCore::BecomePrimaryFencing(const std::string& why) {
  // solo_epoch_pending_ may be set: a fencing epoch adopted before the
  // backup was re-synced and lost again still fences it once durable.
  DTX_CHECK(core_->started());
  Transition(HaState::kPrimaryFencing, why);
}

void HaCore::BecomeBackupSyncing(const std::string& why) {
  // Either a step-down (its core is rebuilt as an unstarted mirror right
  // after) or a backup that fell out of sync.
  Transition(HaState::kBackupSyncing, why);
}

void HaCore::BecomeBackupInSync() {
  DTX_CHECK(!core_->started() && sync_generation_ >= 0);
  Transition(HaState::kBackupInSync,
             "the snapshot of generation " + std::to_string(sync_generation_) + " is durable here");
}

void HaCore::CheckInvariants() const {
  // The core decides exactly in the established states.
  DTX_CHECK(core_->started() == IsEstablished(state_));
  DTX_CHECK((establishing_tag_ != 0) == (state_ == HaState::kEstablishing));
  DTX_CHECK(solo_epoch_pending_ == 0 || IsEstablished(state_));
  // HA's count of the durable epoch never runs ahead of the core's epoch,
  // and matches it whenever the core has no EPOCH record pending.
  DTX_CHECK(durable_epoch_ <= core_->epoch());
  DTX_CHECK(core_->epoch_pending() || !core_->started() || durable_epoch_ == core_->epoch());
  // DECISIONs wait for their commit point only at a primary whose core runs.
  DTX_CHECK(decision_waits_.empty() || IsEstablished(state_));
  // Replication flows only to a backup being synced or in sync.
  DTX_CHECK(repl_batch_.empty() || state_ == HaState::kPrimarySyncing ||
            state_ == HaState::kPrimaryInSync);
  DTX_CHECK(bump_.epoch == 0 || state_ == HaState::kStarting ||
            state_ == HaState::kPrimaryFencing || state_ == HaState::kBackupInSync ||
            state_ == HaState::kBackupSyncing);
}

void HaCore::Note(bool warn, std::string text) {
  ready_.notes.push_back(HaNote{warn, std::move(text)});
}

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
  v.role = node_role();
  v.epoch = core_->epoch();
  if (role() == Role::kBackup) v.in_sync = in_sync();
  return v;
}

// ---- recovery ----------------------------------------------------------------------------

Status HaCore::Replay(uint64_t lsn, uint8_t type, std::string_view payload) {
  // Before Start, or into the fresh mirror after a step-down: never into a running core.
  DTX_CHECK(!IsEstablished(state_) && !core_->started());
  if (type == kSkipRecordType) {
    // Our own knowledge, not the 2PC core's: the latest SKIP holds the run.
    Result<SkipRecord> r = DecodeSkip(payload);
    if (!r.ok())
      return Status::Corruption("LSN " + std::to_string(lsn) + ": " + r.status().ToString());
    blocked_lo_ = r->lo;
    blocked_hi_ = r->hi;
    return Status::OK();
  }
  DTX_RETURN_IF_ERROR(core_->Replay(lsn, type, payload));
  // Replayed records are durable.
  if (type == static_cast<uint8_t>(RecordType::kEpoch)) durable_epoch_ = core_->epoch();
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
  DTX_CHECK(state_ == HaState::kInit);
  const FailureDetectorOptions fdo = DetectorOptions(opts_);
  for (const std::string& p : core_opts_.participants) {
    auto [it, inserted] = watches_.emplace(p, Watch{FailureDetector(fdo)});
    it->second.fd.Start(now_ms);
  }
  peer_fd_ = FailureDetector(fdo);
  peer_fd_.Start(now_ms);
  last_tick_ms_ = now_ms;
  if (opts_.peer.empty()) {
    // Alone: nobody else could decide, whatever the configured role. A new
    // epoch of our own (CoordinatorCore::StartEpoch::kNew).
    core_->Start(now_ms, CoordinatorCore::StartEpoch::kNew);
    BecomeAlone();
  } else if (opts_.role == Role::kPrimary) {
    BecomeStarting("starting: will establish a newer epoch than " + std::to_string(core_->epoch()) +
                   " before serving");
  } else {
    BecomeBackupSyncing("backup: not in sync until the primary's snapshot is durable here");
  }
  HeartbeatRound(now_ms);
  next_heartbeat_ms_ = now_ms + opts_.heartbeat_ms;
  Drain(now_ms);
}

// ---- 2PC ---------------------------------------------------------------------------------

void HaCore::Commit(uint64_t now_ms, RequestToken token, CommitRequest req) {
  if (role() != Role::kPrimary) {
    ready_.replies.push_back(
        Reply{token, Error{ErrorCode::kNotPrimary, "this coordinator is a backup"}});
    Drain(now_ms);
    return;
  }
  open_commits_.insert(token);
  core_->Commit(now_ms, token, std::move(req));
  Drain(now_ms);
}

void HaCore::QueryDecision(uint64_t now_ms, RequestToken token, TxId txid,
                           const Fingerprint& fingerprint, Attempt attempt) {
  if (role() != Role::kPrimary) {
    // A backup decides nothing, and its log may hold DECISIONs that never
    // reached a commit point (from before it stepped down, until the next
    // snapshot): only the primary answers.
    ready_.replies.push_back(Reply{token, Decision::kUnknown});
    Drain(now_ms);
    return;
  }
  open_queries_.insert(token);
  core_->QueryDecision(now_ms, token, txid, fingerprint, attempt);
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
  if (auto e = epoch_tags_.find(tag); e != epoch_tags_.end()) {
    // Notices come in LSN order, and EPOCH records in epoch order.
    DTX_CHECK(e->second >= durable_epoch_);
    durable_epoch_ = e->second;
    epoch_tags_.erase(e);
  }
  auto w = decision_waits_.find(tag);
  if (w != decision_waits_.end()) {
    w->second.local = true;
    w->second.lsn = lsn;
    MaybeRelease(now_ms, tag);
    Drain(now_ms);
    return;
  }
  core_->OnPersisted(now_ms, *core_tag, lsn);
  if (solo_epoch_pending_ != 0 && !core_->epoch_pending() &&
      core_->epoch() == solo_epoch_pending_) {
    Note(true, "epoch " + std::to_string(solo_epoch_pending_) +
                   " is durable and held by a majority of participants: the backup is fenced out; "
                   "committing alone until it is re-synced");
    solo_epoch_pending_ = 0;
    // Still fencing (else the backup was re-synced meanwhile: its acks count).
    if (state_ == HaState::kPrimaryFencing) {
      BecomePrimarySolo("epoch " + std::to_string(core_->epoch()) + " fenced the backup out");
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
  const bool alone = state_ == HaState::kAlone || state_ == HaState::kPrimarySolo;
  if (!w.local || (!w.backup && !alone)) return;
  // Pair assertions at the commit point (the DECISION's dependants - the
  // COMMITTED reply, COMMIT messages - follow from here): only an
  // established primary releases a decision, and only one of an epoch that
  // is durable in its log. The decision's epoch may be older than the
  // current one: a DECISION that waited while a lost backup was fenced out
  // is released under the new epoch - which is why only a decision of the
  // newest epoch must find that epoch durable.
  DTX_CHECK_MSG(IsEstablished(state_),
                "a DECISION reached its commit point at a node not established as primary");
  DTX_CHECK(core_->started());
  DTX_CHECK_MSG(w.epoch <= durable_epoch_ && durable_epoch_ <= core_->epoch(),
                "a DECISION reached its commit point before its epoch was durable here");
  // Of an older epoch only with the backup's ack (given before the epoch
  // moved on) or after the lost backup was fenced out.
  DTX_CHECK_MSG(w.epoch == durable_epoch_ || w.backup || state_ == HaState::kPrimarySolo,
                "a DECISION of an older epoch reached its commit point alone without fencing");
  const TxId txid = w.txid;
  const uint64_t lsn = w.lsn;
  decision_waits_.erase(it);
  ready_.released.push_back(txid);
  std::optional<uint64_t> core_tag = Unwrap(tag);
  DTX_CHECK(core_tag.has_value());
  core_->OnPersisted(now_ms, *core_tag, lsn);
}

void HaCore::Tick(uint64_t now_ms) {
  if (state_ == HaState::kInit) return;
  // This node's own pause (SIGSTOP, a frozen VM, a starved loop): a tick more
  // than half a detection window after the previous one. Whatever it did not
  // hear meanwhile says nothing about its peers - it was not listening - and
  // acting on it (a resumed backup promoting, a resumed primary dropping its
  // backup) only fights the node that did keep running. So every detector of
  // a peer not yet suspected starts over from now: what stays silent for a whole
  // window after the resume is suspected as usual (docs/design.md "Failure detection,
  // replication, fencing").
  if (now_ms > last_tick_ms_ + opts_.detector.suspect_after_ms / 2) {
    ++stats_.own_pauses;
    Note(true, "no tick for " + std::to_string(now_ms - last_tick_ms_) +
                   " ms (this node was paused or starved): failure detectors start over");
    // A peer suspected before the pause stays so until it is heard.
    for (auto& [address, w] : watches_) {
      if (!w.suspected) w.fd.Start(now_ms);
    }
    if (!peer_suspected_) peer_fd_.Start(now_ms);
  }
  last_tick_ms_ = now_ms;
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
      if ((p.type == RecordType::kDecision && p.forced && !p.relog) ||
          p.type == RecordType::kEpoch) {
        // The core's own record: a decode failure is a bug, not an input.
        Result<Record> rec = DecodeRecord(static_cast<uint8_t>(p.type), p.payload);
        DTX_CHECK_MSG(rec.ok(), "the core persisted a record that does not decode");
        if (const auto* d = std::get_if<DecisionRecord>(&*rec)) {
          // A DECISION is made only by a running core, at its epoch.
          DTX_CHECK(IsEstablished(state_) && d->epoch == core_->epoch());
          decision_waits_[p.tag] = DecisionWait{p.txid, d->epoch};
        } else if (const auto* e = std::get_if<EpochRecord>(&*rec)) {
          DTX_CHECK(p.forced && e->epoch >= durable_epoch_);
          epoch_tags_[p.tag] = e->epoch;
        }
      }
      if (state_ == HaState::kPrimaryInSync || state_ == HaState::kPrimarySyncing) {
        repl_batch_.push_back(ReplRecord{p.type, p.payload});
        if (p.type == RecordType::kDecision && p.forced && !p.relog) {
          repl_batch_tags_.push_back(p.tag);
        }
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
  if (step_down_pending_ && state_ != HaState::kEstablishing) {
    std::string why = std::move(*step_down_pending_);
    step_down_pending_.reset();
    StepDown(now_ms, why);
  }
  CheckInvariants();
}

HaReady HaCore::TakeReady() {
  HaReady out = std::move(ready_);
  ready_ = HaReady{};
  return out;
}

// ---- heartbeats and failure detection ----------------------------------------------------

void HaCore::HeartbeatRound(uint64_t now_ms) {
  DTX_CHECK(state_ != HaState::kInit);
  // A probe still out is not duplicated: its reply (or timeout) decides.
  for (auto& [address, w] : watches_) {
    if (w.probe_out) continue;
    w.probe_out = true;
    ready_.probes.push_back(ProbeMsg{address, false, node_role(), core_->epoch()});
  }
  if (!opts_.peer.empty() && !peer_probe_out_) {
    peer_probe_out_ = true;
    ready_.probes.push_back(ProbeMsg{opts_.peer, true, node_role(), core_->epoch()});
  }
  if (state_ == HaState::kPrimaryInSync &&
      replicated_since_snapshot_ >= opts_.resync_after_records) {
    DTX_PROBE(coordinator_resync_snapshot);
    StartSync(now_ms);  // a fresh snapshot lets the backup drop its older log
  }
}

void HaCore::OnProbeReply(uint64_t now_ms, const std::string& address, bool ok,
                          const std::optional<PeerView>& view) {
  if (state_ == HaState::kInit) return;
  if (!opts_.peer.empty() && address == opts_.peer) {
    peer_probe_out_ = false;
    if (ok) {
      peer_fd_.Heartbeat(now_ms);
      if (view && !IgnoreEpochJump(view->epoch, address, "a heartbeat answer")) {
        OnPeerView(now_ms, *view);
      }
    }
  } else if (auto it = watches_.find(address); it != watches_.end()) {
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
  if (role() == Role::kPrimary && view.role == NodeRole::kPrimary && view.epoch > core_->epoch()) {
    StepDownLater("peer " + opts_.peer + " is primary at epoch " + std::to_string(view.epoch));
    return;
  }
  // A backup we do not replicate to answers: sync it (not during an epoch
  // round: a fencing round decides first).
  if ((state_ == HaState::kPrimarySolo || state_ == HaState::kPrimaryFencing) &&
      view.role == NodeRole::kBackup && bump_.epoch == 0) {
    StartSync(now_ms);
  }
  DriveRole(now_ms);
}

PeerView HaCore::OnPeerHeartbeat(uint64_t now_ms, const std::string& sender, const PeerView& view) {
  if (state_ != HaState::kInit) {
    const bool ignore_view = IgnoreEpochJump(view.epoch, sender, "a heartbeat");
    if (!opts_.peer.empty() && sender == opts_.peer) {
      // Proof of life from the peer, whichever side probes.
      peer_fd_.Heartbeat(now_ms);
      UpdatePeerSuspicion(now_ms);
    }
    if (!ignore_view && !opts_.peer.empty() && sender == opts_.peer) {
      peer_view_.role = view.role;
      peer_view_.epoch = view.epoch;
      if (!view.name.empty()) peer_view_.name = view.name;
    }
    if (!ignore_view && role() == Role::kPrimary && view.role == NodeRole::kPrimary &&
        view.epoch > core_->epoch()) {
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
    if (IsEstablished(state_)) core_->SetParticipantSuspected(now_ms, address, s);
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
    if (role() == Role::kPrimary) BackupLost(now_ms, "backup suspected (no heartbeat)");
    peer_suspected_at_ms_ = now_ms;
  } else {
    Note(false, "peer coordinator " + opts_.peer + " is answering heartbeats again");
  }
}

// ---- replication: primary side -----------------------------------------------------------

void HaCore::FlushReplicate() {
  if (repl_batch_.empty() || opts_.peer.empty()) return;
  DTX_CHECK(state_ == HaState::kPrimarySyncing || state_ == HaState::kPrimaryInSync);
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
  DTX_CHECK(state_ == HaState::kPrimarySolo || state_ == HaState::kPrimaryFencing ||
            state_ == HaState::kPrimaryInSync);
  ++generation_;
  replicated_since_snapshot_ = 0;
  // From now on the backup may count itself in sync and take over if we
  // die: every decision needs its ack.
  BecomePrimarySyncing();
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
  auto add = [&m](const Record& r) {
    m.records.push_back(ReplRecord{TypeOf(r), EncodePayload(r)});
  };
  add(SyncRecord{generation_});
  add(EpochRecord{core_->epoch()});
  // The outcomes our log keeps of finished transactions: the backup's SYNC
  // forgets everything before it, and a promoted backup must answer a
  // repeated Commit as we did (an ABORTED answer above all: a new attempt of
  // that txid must never commit; tests/sim/README.md "Aborts are logged").
  for (const Record& r : core_->ClosedOutcomes(kSnapshotOutcomeBytesMax)) add(r);
  // Every DECISION appended and not ENDed, including ones not yet durable
  // here: those wait for this snapshot's ack like any in-sync DECISION.
  for (const DecisionRecord& d : core_->OpenDecisions()) add(d);
  std::vector<PersistTag> tags;
  for (auto& [tag, w] : decision_waits_) {
    w.backup = false;
    tags.push_back(tag);
  }
  Note(false, "replication: sending a snapshot to backup " + opts_.peer + " (generation " +
                  std::to_string(generation_) + ", " + std::to_string(m.records.size()) +
                  " records)");
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
  // generation_ moves on whenever we leave kPrimarySyncing / kPrimaryInSync,
  // so a reply of the current generation finds us in one of them - and a
  // snapshot's, in kPrimarySyncing (one snapshot per generation).
  DTX_CHECK(state_ == HaState::kPrimarySyncing || state_ == HaState::kPrimaryInSync);
  DTX_CHECK(!out.snapshot || state_ == HaState::kPrimarySyncing);
  if (status != CallStatus::kOk) {
    BackupLost(now_ms, "Replicate failed: " + error);
    Drain(now_ms);
    return;
  }
  if (out.snapshot) {
    BecomePrimaryInSync();
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
  if (state_ != HaState::kPrimaryInSync && state_ != HaState::kPrimarySyncing) return;
  ++generation_;  // replies still out belong to the lost generation
  ++stats_.backup_losses;
  DTX_PROBE(coordinator_backup_lost);
  BecomePrimaryFencing("backup lost: " + why);
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
  if (state_ == HaState::kInit) return refuse(ErrorCode::kUnavailable, "coordinator is starting");
  // The newest epoch in our log, counting records appended but not yet
  // durable (and so not yet replayed into the mirror): a delayed older
  // batch must not follow a newer one.
  const Epoch current = std::max(core_->epoch(), appended_epoch_);
  if (IgnoreEpochJump(req.epoch, req.primary, "a Replicate")) {
    return refuse(ErrorCode::kBadArgument, "Replicate at epoch " + std::to_string(req.epoch) +
                                               " is more than kEpochJumpMax (" +
                                               std::to_string(kEpochJumpMax) + ") above epoch " +
                                               std::to_string(KnownEpoch()) + " here");
  }
  if (req.epoch < current) {
    return refuse(ErrorCode::kStaleEpoch, "Replicate at epoch " + std::to_string(req.epoch) +
                                              " but epoch " + std::to_string(current) +
                                              " is current here");
  }
  if (role() != Role::kBackup) {
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
    return refuse(ErrorCode::kUnavailable,
                  "not in sync for generation " + std::to_string(req.generation) + " (have " +
                      std::to_string(sync_generation_) + " at epoch " +
                      std::to_string(snapshot_epoch_) + "): send a snapshot");
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
      if (EpochJumpTooFar(current, e->epoch)) {
        return refuse(ErrorCode::kBadArgument,
                      "Replicate: EPOCH " + std::to_string(e->epoch) +
                          " is more than kEpochJumpMax (" + std::to_string(kEpochJumpMax) +
                          ") above epoch " + std::to_string(current) + " here");
      }
      if (e->epoch == std::numeric_limits<Epoch>::max()) {
        // No epoch could follow it (NextBumpEpoch): refused, never adopted.
        return refuse(ErrorCode::kBadArgument,
                      "Replicate: EPOCH " + std::to_string(e->epoch) + " out of range");
      }
      epoch = e->epoch;
    }
  }
  appended_epoch_ = epoch;
  DTX_CHECK(appended_epoch_ >= core_->epoch());  // what we append never goes below the mirror
  if (req.snapshot) {
    sync_generation_ = req.generation;
    if (state_ == HaState::kBackupInSync) {
      BecomeBackupSyncing("a snapshot of generation " + std::to_string(req.generation) +
                          " at epoch " + std::to_string(req.epoch) + " arrived");
    }
    snapshot_epoch_ = req.epoch;
    snapshot_generation_ = req.generation;
    DTX_CHECK(state_ == HaState::kBackupSyncing);  // in sync only once this snapshot is durable
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
    a.epoch = req.epoch;
    a.first_lsn_tag = first;
    backup_appends_.emplace(p.tag, std::move(a));
    ready_.persist.push_back(std::move(p));
    ++stats_.replicated_records;
  }
  Drain(now_ms);
}

void HaCore::OnOwnPersisted(uint64_t now_ms, PersistTag tag, uint64_t lsn) {
  if (tag == establishing_tag_ && tag != 0) {
    DTX_CHECK(state_ == HaState::kEstablishing);
    establishing_tag_ = 0;
    const Epoch e = establishing_epoch_;
    const std::string payload = EncodePayload(EpochRecord{e});
    Status r = core_->Replay(lsn, static_cast<uint8_t>(RecordType::kEpoch), payload);
    DTX_CHECK_MSG(r.ok(), "the EPOCH record of a newly established epoch failed to replay");
    DTX_CHECK(core_->epoch() == e);
    durable_epoch_ = e;
    core_->Start(now_ms, CoordinatorCore::StartEpoch::kReplayed);
    // Nobody can take over at an epoch below e any more, and the backup
    // never acked anything of e: commit alone until it is synced.
    BecomePrimarySolo("epoch " + std::to_string(e) + " is durable and held by a majority");
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
  // Pair assertions at the backup's replay (the records were validated when
  // appended, OnReplicate): they go into an unstarted mirror - we are a
  // backup, or a former one whose new epoch's EPOCH record follows them in
  // the log - from a batch of an epoch no newer than the newest we appended.
  DTX_CHECK_MSG(!IsEstablished(state_) && !core_->started(),
                "a replicated record reached a running core");
  Status s = core_->Replay(lsn, static_cast<uint8_t>(a.record.type), a.record.payload);
  if (!s.ok()) {
    const std::string why = "a validated replicated record failed to replay: " + s.ToString() +
                            " (state " + HaStateName(state_) + ", core started " +
                            std::to_string(core_->started()) + ")";
    DTX_CHECK_MSG(s.ok(), why.c_str());
  }
  if (a.record.type == RecordType::kEpoch) {
    DTX_CHECK(core_->epoch() <= appended_epoch_);
    durable_epoch_ = core_->epoch();
  }
  if (!a.last) return;
  uint64_t first_lsn = lsn;
  if (auto f = batch_first_lsn_.find(a.first_lsn_tag); f != batch_first_lsn_.end()) {
    first_lsn = f->second;
    batch_first_lsn_.erase(f);
  }
  if (a.snapshot && a.generation == sync_generation_ && role() == Role::kBackup) {
    if (state_ == HaState::kBackupSyncing) BecomeBackupInSync();
    Note(false,
         "backup: snapshot of generation " + std::to_string(a.generation) + " is durable: in sync");
    // Everything before the snapshot's SYNC record is superseded.
    ready_.truncate_before = std::max(ready_.truncate_before, first_lsn);
  }
  ready_.replicate_answers.push_back(ReplicateAnswer{a.token, std::nullopt, lsn});
}

// ---- failover and fencing ----------------------------------------------------------------

void HaCore::DriveRole(uint64_t now_ms) {
  if (state_ == HaState::kInit || opts_.peer.empty()) return;
  TrackNobodyServes(now_ms);
  // One epoch round at a time, none while a step-down is due, none before
  // the retry delay of the last one.
  if (bump_.epoch != 0 || step_down_pending_ || now_ms < bump_retry_at_ms_) return;
  switch (state_) {
    case HaState::kStarting: DriveStarting(now_ms); return;
    case HaState::kPrimaryFencing:
      // Decisions wait until a newer epoch fences the lost backup out; once
      // it is adopted, until its EPOCH record is durable (solo_epoch_pending_).
      if (solo_epoch_pending_ == 0) {
        StartBump(now_ms, NextBumpEpoch(), "backup lost: fencing it out before committing alone");
      }
      return;
    case HaState::kBackupInSync:
      if (peer_suspected_) {
        StartBump(now_ms, NextBumpEpoch(), "primary suspected: promoting");
        return;
      }
      MaybeTakeOver(now_ms);
      return;
    case HaState::kBackupSyncing:
      // Not in sync: never promotes on suspicion (it may lack decisions).
      MaybeTakeOver(now_ms);
      return;
    case HaState::kInit:
    case HaState::kAlone:
    case HaState::kEstablishing:  // waiting for our EPOCH record
    case HaState::kPrimarySolo:
    case HaState::kPrimarySyncing:
    case HaState::kPrimaryInSync: return;
  }
}

void HaCore::TrackNobodyServes(uint64_t now_ms) {
  // Neither of us serves: we are a backup and the peer answers as a backup
  // or as a primary still "starting" (trying to establish an epoch).
  const bool nobody_serves =
      role() == Role::kBackup && !peer_suspected_ &&
      (peer_view_.role == NodeRole::kBackup || peer_view_.role == NodeRole::kStarting);
  if (nobody_serves != both_backups_) {
    both_backups_ = nobody_serves;
    both_backups_since_ms_ = now_ms;
  }
}

void HaCore::DriveStarting(uint64_t now_ms) {
  DTX_CHECK(state_ == HaState::kStarting);
  const Epoch epoch = core_->epoch();
  if (peer_view_.role == NodeRole::kPrimary && peer_view_.epoch >= epoch) {
    StepDownLater("peer " + opts_.peer + " is primary at epoch " +
                  std::to_string(peer_view_.epoch));
    return;
  }
  if (!peer_view_.role && !peer_suspected_) return;  // wait to hear from it, or suspect it
  if (peer_view_.role == NodeRole::kStarting && !peer_suspected_ &&
      opts_.self_address > opts_.peer) {
    return;  // both starting: the lower address goes first
  }
  StartBump(now_ms, NextBumpEpoch(), "starting as primary");
}

void HaCore::MaybeTakeOver(uint64_t now_ms) {
  DTX_CHECK(role() == Role::kBackup);
  if (!both_backups_) return;  // the peer serves, is suspected, or is not known to be a backup
  const Epoch epoch = core_->epoch();
  if (epoch == 0) return;
  const bool peer_is_backup = peer_view_.role == NodeRole::kBackup;
  const bool newer_log = peer_is_backup && epoch > peer_view_.epoch;
  const bool same_epoch = epoch == peer_view_.epoch;
  const bool served_long =
      now_ms - both_backups_since_ms_ >= kBothBackupsYieldFactor * opts_.detector.suspect_after_ms;
  // Both coordinators are backups (e.g. both restarted, the one started as
  // primary with the older log stepped down, or a deposed primary's backup
  // still counting itself in sync with it). The newest log is the owner
  // of its epoch - the other's epoch is lower - or, at equal epochs, acked
  // every decision of it: it holds every commit decision and takes over.
  // At equal epochs the lower address goes first; if that has not ended
  // the situation after a while (e.g. the other holds the grants of the
  // next epoch at a majority), the higher address tries too.
  // Exclusive epoch grants keep a race with the peer safe.
  const bool take_over =
      newer_log ||
      (same_epoch && ((peer_is_backup && opts_.self_address < opts_.peer) || served_long));
  if (!take_over) return;
  Note(true, "both coordinators are backups; our log (epoch " + std::to_string(epoch) +
                 ") is at least as new as the peer's (epoch " + std::to_string(peer_view_.epoch) +
                 "): taking over");
  BecomeStarting("both coordinators are backups: the newest log takes over");
  StartBump(now_ms, NextBumpEpoch(), "both coordinators are backups: the newest log takes over");
}

void HaCore::StartBump(uint64_t now_ms, Epoch epoch, std::string why) {
  if (epoch == 0) {
    // NextBumpEpoch found no epoch above ours (the top of the range):
    // nothing to ask for. Unreachable by bounded steps in practice.
    bump_retry_at_ms_ = now_ms + opts_.detector.suspect_after_ms;
    Note(true, "no epoch left above " + std::to_string(core_->epoch()) + ": cannot " + why);
    return;
  }
  // Only a newer epoch, and only where a round may run (DriveRole).
  DTX_CHECK(epoch > core_->epoch());
  DTX_CHECK(state_ == HaState::kStarting || state_ == HaState::kPrimaryFencing ||
            state_ == HaState::kBackupInSync);
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
    if (status == CallStatus::kStaleEpoch && current_epoch &&
        IgnoreEpochJump(*current_epoch, participant, "a STALE_EPOCH answer to AdoptEpoch")) {
      // No coordinator can have moved that far (participants refuse such a
      // jump): not evidence of a newer coordinator, only a failed call.
    } else if (status == CallStatus::kStaleEpoch) {
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
  DTX_CHECK(bump_.ok + bump_.failed <= n &&
            bump_.stale <= bump_.failed);  // one answer per participant
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
  const Epoch last = blocked_lo_ <= e && blocked_hi_ > e ? blocked_hi_ : e;
  if (last == std::numeric_limits<Epoch>::max()) return 0;  // none left
  return last + 1;
}

Epoch HaCore::KnownEpoch() const {
  return std::max({core_->epoch(), appended_epoch_, bump_.epoch});
}

bool HaCore::IgnoreEpochJump(Epoch epoch, const std::string& from, const char* what) {
  const Epoch known = KnownEpoch();
  if (!EpochJumpTooFar(known, epoch)) return false;
  // Noted the first time and every kEpochJumpNoteEvery-th after: a peer
  // stuck at such an epoch heartbeats ten times a second.
  if (stats_.epoch_jumps_ignored++ % kEpochJumpNoteEvery == 0) {
    Note(true, std::string(what) + " from " + from + " carries epoch " + std::to_string(epoch) +
                   ", more than kEpochJumpMax (" + std::to_string(kEpochJumpMax) +
                   ") above epoch " + std::to_string(known) + " here: ignored (" +
                   std::to_string(stats_.epoch_jumps_ignored) + " so far)");
  }
  return true;
}

uint64_t HaCore::SkipDelayMs() const {
  // No randomness in the core: the two coordinators move on after different
  // delays (the lower address first), growing with the run of skipped epochs,
  // so that two contenders splitting the grants of every epoch separate.
  const uint64_t run = static_cast<uint64_t>(std::min<Epoch>(blocked_hi_ - blocked_lo_, 8));
  const uint64_t base =
      opts_.self_address < opts_.peer ? opts_.heartbeat_ms / 2 : opts_.heartbeat_ms * 2;
  return base + run * (opts_.heartbeat_ms / 4);
}

void HaCore::BumpBlocked(uint64_t now_ms, const std::string& why) {
  const Epoch x = bump_.epoch;
  bump_.epoch = 0;
  adopt_out_.clear();
  // x == NextBumpEpoch(): it extends a known run, or starts one above the
  // core epoch (every epoch in between is in our log). x >= 1, so x - 1
  // cannot overflow where blocked_hi_ + 1 or e + 1 could.
  const Epoch e = core_->epoch();
  DTX_CHECK(x >= 1);
  if (blocked_lo_ <= e && blocked_hi_ > e && x - 1 == blocked_hi_) {
    blocked_hi_ = x;
  } else if (x - 1 == e) {
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
  DTX_CHECK(blocked_lo_ <= blocked_hi_);
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
  switch (state_) {
    case HaState::kPrimaryFencing:
      // The backup (which may think it is in sync) can no longer take over
      // at e: commit alone once EPOCH e is durable here.
      solo_epoch_pending_ = e;
      core_->BumpEpoch(now_ms, e);
      return;
    case HaState::kBackupSyncing:
      // A snapshot arrived meanwhile and is not durable yet: try again later.
      bump_retry_at_ms_ = now_ms + opts_.heartbeat_ms;
      return;
    case HaState::kBackupInSync:
      ++stats_.promotions;
      DTX_PROBE(coordinator_promotion);
      BecomeEstablishing(
          e, "promoted at epoch " + std::to_string(e));  // refuses Replicate from now on
      return;
    case HaState::kStarting:
      BecomeEstablishing(e, "epoch " + std::to_string(e) + " adopted by a majority");
      return;
    case HaState::kInit:
    case HaState::kAlone:
    case HaState::kEstablishing:
    case HaState::kPrimarySolo:
    case HaState::kPrimarySyncing:
    case HaState::kPrimaryInSync: {
      // Epoch rounds run only in the states above (DriveRole), and a state
      // change resets the round (StepDown) or waits for it (OnPeerView).
      const std::string msg =
          std::string("an epoch round succeeded in state ") + HaStateName(state_);
      DTX_CHECK_MSG(false, msg.c_str());
    }
  }
}

void HaCore::BumpFailed(uint64_t now_ms, bool stale, const std::string& why) {
  const Epoch e = bump_.epoch;
  DTX_CHECK(e != 0);
  bump_.epoch = 0;
  adopt_out_.clear();
  bump_retry_at_ms_ = now_ms + opts_.detector.suspect_after_ms;
  Note(true, "epoch " + std::to_string(e) + " not adopted (" +
                 (stale ? "a newer coordinator exists" : "no majority") + "): " + why);
  if (!stale) return;  // try again later
  if (role() == Role::kBackup) {
    // Someone moved past our epoch without us: we do not hold its decisions.
    if (state_ == HaState::kBackupInSync) {
      BecomeBackupSyncing("epoch " + std::to_string(e) + " is held by another coordinator");
    }
    return;
  }
  StepDownLater("epoch " + std::to_string(e) + " is held by another coordinator");
}

void HaCore::StepDownLater(std::string why) {
  // Only a primary (established or not) is ever deposed.
  DTX_CHECK(role() == Role::kPrimary);
  if (!step_down_pending_) step_down_pending_ = std::move(why);
}

void HaCore::StepDown(uint64_t /*now_ms*/, const std::string& why) {
  if (role() == Role::kBackup) return;
  DTX_CHECK(state_ != HaState::kEstablishing);  // Drain waits for our EPOCH record
  const bool was_established = IsEstablished(state_);
  Note(true, "stepping down to backup: " + why);
  BecomeBackupSyncing("stepped down: " + why);
  solo_epoch_pending_ = 0;
  ++generation_;
  bump_ = Bump{};
  adopt_out_.clear();
  repl_batch_.clear();
  repl_batch_tags_.clear();
  decision_waits_.clear();
  replicate_out_.clear();
  sync_generation_ = -1;
  if (!was_established) return;
  ++stats_.step_downs;
  DTX_PROBE(coordinator_step_down);
  // Requests in flight: whether they committed is the new primary's to tell
  // (a DECISION that reached the commit point is held by the backup).
  for (RequestToken t : open_commits_) {
    ready_.replies.push_back(Reply{t, CommitResult{Outcome::kUnknown, std::nullopt,
                                                   "coordinator stepped down (" + why +
                                                       "); ask the primary with the same txid"}});
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
  // The driver replays the log into it; Replay counts its epochs again.
  durable_epoch_ = 0;
  epoch_tags_.clear();
  ++incarnation_;
  core_fenced_seen_ = false;
  ready_.reload_log = true;
}

}  // namespace dtx::coordinator
