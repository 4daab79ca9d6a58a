// The deterministic simulator: the real participant and coordinator protocol
// cores (participant/core.h; coordinator/ha_core.h, which owns
// coordinator/core.h) driven by one seeded schedule
// of message delays, reordering, duplication and loss, WAL syncs, node crashes
// that lose unsynced records, and restarts that replay the surviving log;
// simulated bank clients on top; invariants checked after a fault-free "heal"
// phase. tests/sim/README.md describes the model and every check.
//
// Determinism: one event queue ordered by (virtual time, sequence number) and
// one splitmix64 stream per run, seeded with the run's seed; no wall clock, no
// std::random_device, no hash-ordered iteration where it reaches the schedule.
// So RunSeed(seed, options) gives the same events, stats, fingerprint and trace
// every time.
//
// Thread-safety: RunSeed keeps all state in locals; concurrent calls are
// independent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/probe.h"
#include "common/types.h"

namespace dtx::sim {

// Deliberate breakage of the model, used only to show that the checks can
// fail (sim_test): a simulator whose checks never fire would prove nothing.
enum class Sabotage {
  kNone,
  // A crash also loses the last few *synced* WAL records (durability lie).
  kLoseSyncedRecords,
  // Clients commit transfers without their read set (blind writes): lost
  // updates, so the bank total drifts.
  kBlindWrites,
  // (failover) Participants accept calls stamped with an old epoch: fencing
  // is gone, a deposed primary's calls still count.
  kAcceptOldEpochs,
  // (failover) A backup that is not in sync is made to believe it is: the
  // simulator forges an empty snapshot for it, so it may promote without the
  // primary's decisions.
  kFakeSync,
  // (reuse_txids) The coordinator is given the reused txid's earlier content,
  // while the client records its new content: what a coordinator that never
  // compares contents does (issue 14) - it answers the earlier outcome.
  kStoredOutcomeForReuse,
  // Participants apply every ABORT to whatever attempt of its txid they
  // hold, as before attempts were stamped (docs/design.md "Attempts"): a
  // late ABORT of an earlier attempt drops a newer one that voted YES.
  kIgnoreAttemptStamps,
};

// Zero/negative means "drawn from the seed" (documented ranges in README.md).
struct SimOptions {
  int participants = 0;          // 1..4
  int clients = 0;               // 1..5
  int accounts = 0;              // 2..10
  uint64_t fault_phase_ms = 0;   // clients start transactions and faults happen until then
  uint64_t heal_max_ms = 20000;  // after that: no faults; must quiesce within this
  bool faults = true;            // false: a reliable network and no crashes
  // Shrink the cores' bounded tables (remembered outcomes, EPOCH rewrite gap)
  // so that forgetting and log truncation happen within a run.
  bool small_tables = false;
  // Clients repeat Commit with the same txid after a timeout or an UNKNOWN
  // outcome (as bindings/cpp does), up to 3 attempts.
  bool client_retries = true;
  Sabotage sabotage = Sabotage::kNone;
  // Two coordinators, coordinator-0 (primary) and coordinator-1 (backup),
  // with replication, heartbeats and failover; faults then also hang a
  // coordinator for a while and partition coordinators from each other or
  // from the participants.
  bool failover = false;
  // Clients reuse txids: a client's next transaction takes the txid of its
  // previous one (new reads and writes) with probability 1/3. Such a
  // transaction must be refused (BAD_ARGUMENT) or really commit - the usual
  // checks judge it as a transaction of its own - never be told another
  // transaction's outcome.
  bool reuse_txids = false;
  // During the fault phase about 1 message in 200 is held back far longer
  // than the usual long delay: 2 to 30 virtual seconds (delivered at most 5 s
  // into the heal), well past any timeout; and 3 in 10 of the coordinators'
  // ABORTs and COMMITs up to 3 s - a late ABORT then meets the client's
  // later attempts of its txid, still prepared.
  bool long_delays = false;
  // One more client, the adversary, that may only use the client API
  // (Coordinator.Commit and GetOutcome): GetOutcome on random txids and on
  // other clients' txids, Commits of its own (blind writes to keys of its
  // own), other clients' txids with its own content, and verbatim copies of
  // other clients' Commits sent again at any later time (a retry after an
  // arbitrary delay). Its transactions are judged by the usual checks, and
  // every outcome it is told about another client's transaction must be
  // true (check `false-outcome`).
  bool adversary = false;
  bool trace = false;  // keep a line per event (for --trace and failure reports)
};

struct Violation {
  std::string check;  // e.g. "atomicity", "bank-total"
  TxId txid;          // zero if the check is not about one transaction
  std::string detail;
};

struct RunStats {
  std::string config;  // the drawn parameters, one line
  uint64_t events = 0;
  uint64_t end_ms = 0;
  uint64_t messages = 0, dropped = 0, duplicated = 0;
  uint64_t crashes = 0, coordinator_crashes = 0;
  uint64_t transfers_committed = 0, transfers_aborted = 0, transfers_unknown = 0;
  uint64_t audits_committed = 0, audits_aborted = 0;
  uint64_t read_failures = 0, commit_retries = 0;
  uint64_t decision_queries = 0, replay_inferred_aborts = 0, in_doubt_replayed = 0;
  uint64_t checkpoints = 0;
  // reuse_txids: transactions sent under a reused txid, and how they ended.
  uint64_t txid_reuses = 0, reuses_refused = 0, reuses_committed = 0;
  // adversary: calls it made, GetOutcome answers naming an outcome, its own
  // transactions committed, and copies of other clients' Commits answered
  // with an outcome.
  uint64_t adversary_calls = 0, adversary_outcomes = 0, adversary_committed = 0,
           adversary_replays_answered = 0;
  // failover
  uint64_t promotions = 0, step_downs = 0, hangs = 0, partitions = 0;
  uint64_t max_epoch = 0;  // the highest coordinator epoch reached
  // A hash over every event's (time, sequence, kind) and the stats above:
  // equal fingerprints for equal seeds is the determinism check.
  uint64_t fingerprint = 0;
  // How often this run reached each coverage probe (common/probe.h); not
  // part of the fingerprint.
  probe::Counts probes{};
};

struct TraceLine {
  uint64_t at_ms = 0;
  TxId txid;  // zero: about no single transaction (crash, restart, sync, ...)
  std::string text;
};

struct RunResult {
  uint64_t seed = 0;
  std::vector<Violation> violations;
  RunStats stats;
  std::vector<TraceLine> trace;  // only with SimOptions::trace
  bool ok() const { return violations.empty(); }
};

RunResult RunSeed(uint64_t seed, const SimOptions& options);

// Coverage probes (common/probe.h) summed over runs.
struct ProbeTotals {
  uint64_t runs = 0;
  probe::Counts hits{};   // times each probe was reached
  probe::Counts seeds{};  // runs that reached it at least once
  void Add(const RunStats& s);
};
// One line per probe: name, seeds reaching it, hits, what it is.
std::string ProbeTable(const ProbeTotals& totals);

// The dtx-sim command line that replays `seed` under `options`.
std::string ReplayCommand(uint64_t seed, const SimOptions& options);

// The summary line of a run: seed, verdict, drawn config, counters.
std::string Summary(const RunResult& r);

// A readable failure report for a failed run: the seed, how to replay it,
// each violation (at most `violations_max`) and the last `tail` trace lines
// touching its transaction. Re-runs the seed with tracing on (deterministic,
// so it is the same schedule).
std::string ExplainFailure(const RunResult& failed, const SimOptions& options,
                           size_t violations_max = 3, size_t tail = 40);

// A DTX_CHECK inside a core aborts the process; this makes the abort print
// "seed S" first (async-signal-safe SIGABRT handler). SetCurrentSeed is cheap.
void InstallAbortReporter();
void SetCurrentSeed(uint64_t seed);

}  // namespace dtx::sim
