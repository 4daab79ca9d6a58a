// `dtxctl trace TXID`: what the nodes' span events (GetTrace) say about one
// transaction - one merged timeline, the phase of each event, per-node phase
// durations, the nodes that did not answer, and where a transaction that is
// not finished waits. Pure: no I/O, no Thrift; the caller gathers the
// answers (tools/admin_client.h GetNodeTrace) and prints Render*().
//
// Event names are those of the runtimes (docs/observability.md "Span
// events"): the coordinator records received, prepare (detail: the
// participant it is sent to), voted ("<participant> yes|no|read_only|error:..."),
// logged, synced, replicated, decided, replied, acked ("<participant>"),
// ended; a participant records received ("prepare ...", "commit", "abort"),
// locked, conflict, logged, synced, voted, decided, applied, acked, refused,
// in_doubt.
//
// Thread-safety: plain functions on values; no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/trace.h"
#include "common/types.h"

namespace dtx::tools {

// Accepts what TxId::ToString() prints (32 hex digits, hi then lo), with an
// optional "0x" or "txid=" prefix, and "HI:LO" (each 1..16 hex digits, "0x"
// optional). InvalidArgument otherwise.
Result<TxId> ParseTxId(std::string_view text);

// One node's answer to GetTrace (or why it gave none).
struct NodeAnswer {
  std::string node;  // name from cluster.conf
  bool coordinator = false;
  bool answered = false;
  std::string error;                   // !answered: short reason, e.g. "connection refused"
  std::vector<obs::SpanEvent> events;  // answered: in record order
};

struct TimelineRow {
  std::string node;
  obs::SpanEvent event;
  std::string phase;         // "prepare", "decision", "commit", "abort", "phase2", "in-doubt"
  double offset_ms = 0;      // since the first event of the transaction
  double since_prev_ms = 0;  // since the previous event of the same node (0 for its first)
};

struct PhaseSpan {
  std::string node;
  std::string phase;
  double start_ms = 0;     // offset of its first event
  double duration_ms = 0;  // first to last event of the phase on that node
  int events = 0;
};

// Where an unfinished transaction waits.
struct Waiting {
  std::string node;        // the node holding it up, e.g. "participant-1"
  std::string phase;       // "prepare", "decision", "commit", "abort"
  std::string last_event;  // that node's last event ("" if none / it did not answer)
  double for_s = 0;        // since that last event (or since the coordinator asked it)
  std::string
      text;  // one line, e.g. "participant-1 in prepare (logged, not yet synced/voted) for 2.3 s"
};

struct TraceReport {
  TxId txid;
  // "complete": the coordinator ended it (or every expected ack is in);
  // "waiting": see `waiting`; "unknown": events exist but they do not tell;
  // "not_found": no node that answered has any event.
  std::string state;
  std::vector<NodeAnswer> nodes;
  std::vector<TimelineRow> timeline;
  std::vector<PhaseSpan> phases;
  std::optional<Waiting> waiting;
  int64_t first_unix_ns = 0;
};

// Builds the report. `now_unix_ns` is the wall clock of the caller (on one
// host the nodes' event times are the same clock).
TraceReport AnalyzeTrace(const TxId& txid, std::vector<NodeAnswer> nodes, int64_t now_unix_ns);

// Human-readable: header, one line per event (offset, +delta on its node,
// node, phase, event, detail), per-node phase durations, "NAME: NO ANSWER
// (...)" per silent node, and the "waiting:" line.
std::string RenderTraceText(const TraceReport& report);

// One JSON object on one line: {"txid","state","nodes":[...],"events":[...],
// "phases":[...],"unanswered":[{"node","error"}],"waiting":{...}|null};
// times in ms (for_s in s) to 3 decimals. Bytes in a detail or an error
// that are not UTF-8 are written as U+FFFD.
std::string RenderTraceJson(const TraceReport& report);

}  // namespace dtx::tools
