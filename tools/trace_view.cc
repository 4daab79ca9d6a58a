#include "tools/trace_view.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

namespace dtx::tools {

namespace {

bool IsHex(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos;
}

uint64_t HexValue(std::string_view s) {
  uint64_t v = 0;
  for (char c : s) {
    v <<= 4;
    if (c >= '0' && c <= '9') v |= static_cast<uint64_t>(c - '0');
    else if (c >= 'a' && c <= 'f') v |= static_cast<uint64_t>(c - 'a' + 10);
    else v |= static_cast<uint64_t>(c - 'A' + 10);
  }
  return v;
}

std::string_view StripHexPrefix(std::string_view s) {
  if (s.size() >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.remove_prefix(2);
  return s;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The first word of a detail ("participant-1 yes" -> "participant-1").
std::string_view FirstWord(std::string_view s) { return s.substr(0, s.find(' ')); }

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

// Phase of each event of one node, in record order.
std::vector<std::string> PhasesOf(const NodeAnswer& n) {
  std::vector<std::string> out;
  std::string phase = "prepare";
  for (const obs::SpanEvent& e : n.events) {
    const std::string_view ev = e.event;
    const std::string_view d = e.detail;
    if (n.coordinator) {
      if (phase == "prepare" && (ev == "logged" || ev == "synced" || ev == "replicated" ||
                                 ev == "decided" || ev == "replied")) {
        phase = "decision";
      }
      if (ev == "acked" || ev == "ended" || ev == "commit" || ev == "abort") phase = "phase2";
    } else {
      if (ev == "in_doubt") phase = "in-doubt";
      if ((ev == "received" || ev == "decided") && StartsWith(d, "commit")) phase = "commit";
      if ((ev == "received" || ev == "decided") && StartsWith(d, "abort")) phase = "abort";
      if (ev == "received" && StartsWith(d, "prepare")) phase = "prepare";
    }
    out.push_back(phase);
  }
  return out;
}

bool HasEvent(const NodeAnswer& n, std::string_view ev) {
  return std::any_of(n.events.begin(), n.events.end(),
                     [&](const obs::SpanEvent& e) { return ev == e.event; });
}

// What a participant should do next after `last` in `phase`.
std::string NotYet(std::string_view phase, std::string_view last) {
  if (phase == "prepare") {
    if (last == "received") return "not yet locked";
    if (last == "locked") return "not yet logged/voted";
    if (last == "logged") return "not yet synced/voted";
    if (last == "synced") return "not yet voted";
    if (last == "voted") return "voted; no decision yet";
  } else if (phase == "commit") {
    if (last == "received" || last == "decided") return "not yet logged";
    if (last == "logged") return "not yet synced/applied";
    if (last == "synced") return "not yet applied";
    if (last == "applied") return "not yet acked";
  } else if (phase == "abort") {
    if (last == "received" || last == "decided" || last == "logged") return "not yet acked";
  }
  return "";
}

const NodeAnswer* FindNode(const std::vector<NodeAnswer>& nodes, std::string_view name) {
  for (const NodeAnswer& n : nodes) {
    if (n.node == name) return &n;
  }
  return nullptr;
}

// Waiting at participant `p` in `phase`; `asked_unix_ns`: when the
// coordinator asked it (0: unknown).
Waiting WaitingAt(const std::vector<NodeAnswer>& nodes, const std::string& p,
                  const std::string& phase, int64_t asked_unix_ns, int64_t now_unix_ns,
                  const std::string& coordinator_view) {
  Waiting w;
  w.node = p;
  w.phase = phase;
  const NodeAnswer* n = FindNode(nodes, p);
  int64_t since = asked_unix_ns;
  std::string state;
  if (n == nullptr) {
    state = "not in cluster.conf";
  } else if (!n->answered) {
    state = "did not answer: " + n->error;
  } else if (n->events.empty()) {
    state = "no events for this txid there";
  } else {
    const obs::SpanEvent& last = n->events.back();
    w.last_event = last.event;
    since = last.unix_ns;
    state = w.last_event;
    const std::string next = NotYet(phase, w.last_event);
    if (!next.empty()) state += ", " + next;
  }
  w.for_s = since > 0 ? std::max<double>(0, static_cast<double>(now_unix_ns - since) / 1e9) : 0;
  w.text = p + " in " + phase + " (" + state + ")";
  if (since > 0) w.text += " for " + Fixed(w.for_s, 1) + " s";
  if (!coordinator_view.empty()) w.text += "; " + coordinator_view;
  return w;
}

std::optional<Waiting> FindWaiting(const std::vector<NodeAnswer>& nodes, int64_t now_unix_ns,
                                   std::string* state) {
  // The coordinator's view first: it knows whom it asked and who answered.
  const NodeAnswer* coord = nullptr;
  for (const NodeAnswer& n : nodes) {
    if (n.coordinator && n.answered && !n.events.empty()) {
      coord = &n;
      break;
    }
  }
  if (coord != nullptr) {
    if (HasEvent(*coord, "ended")) {
      *state = "complete";
      return std::nullopt;
    }
    std::vector<std::string> asked;  // in order of the prepare events
    std::map<std::string, int64_t> asked_at;
    std::map<std::string, std::string> vote;  // participant -> yes/no/read_only/error:...
    std::set<std::string> acked;
    std::string decision;  // commit / abort / unknown / ""
    bool replied = false;
    for (const obs::SpanEvent& e : coord->events) {
      const std::string_view ev = e.event;
      const std::string p(FirstWord(e.detail));
      if (ev == "prepare" && !p.empty()) {
        if (asked_at.emplace(p, e.unix_ns).second) asked.push_back(p);
      } else if (ev == "voted" && !p.empty()) {
        const std::string_view d = e.detail;
        vote[p] = std::string(d.size() > p.size() ? d.substr(p.size() + 1) : std::string_view());
      } else if (ev == "acked" && !p.empty()) {
        acked.insert(p);
      } else if (ev == "decided") {
        decision = std::string(FirstWord(e.detail));
      } else if (ev == "replied") {
        replied = true;
      }
    }
    for (const std::string& p : asked) {
      if (vote.count(p) == 0 && decision.empty()) {
        *state = "waiting";
        return WaitingAt(nodes, p, "prepare", asked_at[p], now_unix_ns,
                         coord->node + " sent prepare, has no vote from it");
      }
    }
    if (asked.empty() && decision.empty() && !replied) {
      *state = "waiting";
      Waiting w;
      w.node = coord->node;
      w.phase = "prepare";
      w.last_event = coord->events.back().event;
      w.for_s = std::max<double>(
          0, static_cast<double>(now_unix_ns - coord->events.back().unix_ns) / 1e9);
      w.text = coord->node + " in prepare (" + w.last_event + ", no prepare sent yet) for " +
               Fixed(w.for_s, 1) + " s";
      return w;
    }
    if (decision.empty() && !replied) {
      *state = "waiting";
      Waiting w;
      w.node = coord->node;
      w.phase = "decision";
      w.last_event = coord->events.back().event;
      w.for_s = std::max<double>(
          0, static_cast<double>(now_unix_ns - coord->events.back().unix_ns) / 1e9);
      w.text = coord->node + " in decision (all votes in; last event " + w.last_event +
               ", not yet decided) for " + Fixed(w.for_s, 1) + " s";
      return w;
    }
    // Phase 2: commit goes to the YES voters, abort to everyone that may hold
    // locks. A transaction on one participant is one-phase: its vote was the
    // outcome and there is no phase 2.
    if ((decision == "commit" || decision == "abort") && asked.size() > 1) {
      for (const std::string& p : asked) {
        const std::string& v = vote[p];
        // Presumed abort: an abort needs no ack, only a commit does.
        const bool expects_ack = decision == "commit" && v == "yes";
        if (expects_ack && acked.count(p) == 0) {
          *state = "waiting";
          return WaitingAt(nodes, p, decision, 0, now_unix_ns,
                           coord->node + " decided " + decision + ", has no ack from it");
        }
      }
      *state = "complete";
      return std::nullopt;
    }
    *state = replied ? "complete" : "unknown";
    return std::nullopt;
  }
  // No coordinator events (it did not answer, or its ring lost them): what
  // the participants say. A participant still in prepare holds everyone up,
  // then one in phase 2, then one prepared and in doubt.
  bool any = false;
  for (int pass = 0; pass < 3; ++pass) {
    for (const NodeAnswer& n : nodes) {
      if (n.coordinator || !n.answered || n.events.empty()) continue;
      any = true;
      const std::vector<std::string> phases = PhasesOf(n);
      const std::string& phase = phases.back();
      const std::string last = n.events.back().event;
      std::string vote;
      for (const obs::SpanEvent& e : n.events) {
        if (std::string_view(e.event) == "voted") vote = e.detail;
      }
      if (pass == 0 && phase == "prepare" && last != "voted" && last != "refused") {
        *state = "waiting";
        return WaitingAt(nodes, n.node, "prepare", 0, now_unix_ns, "");
      }
      const bool acked =
          std::any_of(n.events.begin(), n.events.end(), [&](const obs::SpanEvent& e) {
            return std::string_view(e.event) == "acked" && phases[&e - n.events.data()] == phase;
          });
      if (pass == 1 && (phase == "commit" || phase == "abort") && !acked) {
        *state = "waiting";
        return WaitingAt(nodes, n.node, phase, 0, now_unix_ns, "");
      }
      if (pass == 2 && ((phase == "prepare" && vote == "yes") || phase == "in-doubt")) {
        *state = "waiting";
        Waiting w = WaitingAt(nodes, n.node, "decision", 0, now_unix_ns, "");
        w.text = n.node + " in decision (prepared, voted yes, in doubt: no decision yet) for " +
                 Fixed(w.for_s, 1) + " s";
        return w;
      }
    }
  }
  *state = any ? "unknown" : "not_found";
  return std::nullopt;
}

// Milliseconds and seconds to 3 decimals (the text form's precision); a
// non-finite value becomes null.
double Round3(double v) { return std::round(v * 1000) / 1000; }

}  // namespace

Result<TxId> ParseTxId(std::string_view text) {
  std::string_view s = text;
  if (StartsWith(s, "txid=")) s.remove_prefix(5);
  if (const size_t colon = s.find(':'); colon != std::string_view::npos) {
    std::string_view hi = StripHexPrefix(s.substr(0, colon));
    std::string_view lo = StripHexPrefix(s.substr(colon + 1));
    if (IsHex(hi) && IsHex(lo) && hi.size() <= 16 && lo.size() <= 16)
      return TxId{HexValue(hi), HexValue(lo)};
  } else {
    s = StripHexPrefix(s);
    if (s.size() == 32 && IsHex(s)) return TxId{HexValue(s.substr(0, 16)), HexValue(s.substr(16))};
  }
  return Status::InvalidArgument(
      "bad txid '" + std::string(text) +
      "': expected 32 hex digits (as printed by TxId::ToString, hi then lo) or HI:LO in hex");
}

TraceReport AnalyzeTrace(const TxId& txid, std::vector<NodeAnswer> nodes, int64_t now_unix_ns) {
  TraceReport r;
  r.txid = txid;
  std::vector<obs::NodeTrace> traces;
  std::map<std::string, std::vector<std::string>> phases;
  for (const NodeAnswer& n : nodes) {
    if (!n.answered) continue;
    traces.push_back(obs::NodeTrace{n.node, n.events});
    phases[n.node] = PhasesOf(n);
  }
  std::vector<obs::TimelineEntry> merged = obs::MergeTimelines(traces);
  if (!merged.empty()) r.first_unix_ns = merged.front().event.unix_ns;
  // Index of each event within its node (record order = seq order), for its phase.
  std::map<std::string, std::map<uint64_t, size_t>> index;
  for (const NodeAnswer& n : nodes) {
    for (size_t i = 0; i < n.events.size(); ++i) index[n.node][n.events[i].seq] = i;
  }
  std::map<std::string, int64_t> prev;
  std::map<std::pair<std::string, std::string>, size_t> span_of;
  for (obs::TimelineEntry& e : merged) {
    TimelineRow row;
    row.node = e.node;
    row.phase = phases[e.node][index[e.node][e.event.seq]];
    row.offset_ms = Ms(e.event.unix_ns - r.first_unix_ns);
    auto p = prev.find(e.node);
    row.since_prev_ms = p == prev.end() ? 0 : Ms(e.event.unix_ns - p->second);
    prev[e.node] = e.event.unix_ns;
    auto key = std::make_pair(row.node, row.phase);
    auto s = span_of.find(key);
    if (s == span_of.end()) {
      span_of[key] = r.phases.size();
      r.phases.push_back(PhaseSpan{row.node, row.phase, row.offset_ms, 0, 1});
    } else {
      PhaseSpan& ps = r.phases[s->second];
      ps.duration_ms = row.offset_ms - ps.start_ms;
      ++ps.events;
    }
    row.event = std::move(e.event);
    r.timeline.push_back(std::move(row));
  }
  r.waiting = FindWaiting(nodes, now_unix_ns, &r.state);
  if (r.timeline.empty()) {
    r.state = "not_found";
    r.waiting.reset();
  }
  r.nodes = std::move(nodes);
  return r;
}

std::string RenderTraceText(const TraceReport& r) {
  std::string out;
  size_t answered = 0;
  for (const NodeAnswer& n : r.nodes) answered += n.answered ? 1 : 0;
  out += "trace " + r.txid.ToString() + ": " + std::to_string(r.timeline.size()) + " events from " +
         std::to_string(answered) + " of " + std::to_string(r.nodes.size()) + " nodes";
  if (r.first_unix_ns != 0) {
    const time_t secs = static_cast<time_t>(r.first_unix_ns / 1000000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof(buf), ", first at %04d-%02d-%02d %02d:%02d:%02d.%06d UTC",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>((r.first_unix_ns % 1000000000) / 1000));
    out += buf;
  }
  out += "\n";
  if (!r.timeline.empty()) {
    char line[256];
    std::snprintf(line, sizeof(line), "%12s %11s  %-15s %-9s %-10s %s\n", "AT_MS", "+NODE_MS",
                  "NODE", "PHASE", "EVENT", "DETAIL");
    out += line;
    for (const TimelineRow& row : r.timeline) {
      std::snprintf(line, sizeof(line), "%12.3f %11.3f  %-15s %-9s %-10s %s\n", row.offset_ms,
                    row.since_prev_ms, row.node.c_str(), row.phase.c_str(), row.event.event,
                    row.event.detail.c_str());
      out += line;
    }
    out += "phases per node (first to last event):\n";
    for (const PhaseSpan& p : r.phases) {
      std::snprintf(line, sizeof(line), "  %-15s %-9s %10.3f ms  (%d event%s, from +%.3f ms)\n",
                    p.node.c_str(), p.phase.c_str(), p.duration_ms, p.events,
                    p.events == 1 ? "" : "s", p.start_ms);
      out += line;
    }
  }
  for (const NodeAnswer& n : r.nodes) {
    if (!n.answered) {
      out += n.node + ": NO ANSWER (" + n.error + ")\n";
    } else if (n.events.empty()) {
      out += n.node + ": no events for this txid\n";
    }
  }
  if (r.state == "not_found") {
    out +=
        "no node that answered knows this txid (never seen, or its events left the trace rings)\n";
  } else if (r.waiting) {
    out += "waiting: " + r.waiting->text + "\n";
  } else {
    out += "state: " + r.state + "\n";
  }
  return out;
}

std::string RenderTraceJson(const TraceReport& r) {
  using Json = nlohmann::ordered_json;  // keys in the order written
  Json nodes = Json::array();
  for (const NodeAnswer& n : r.nodes) {
    Json node = {{"node", n.node}, {"answered", n.answered}, {"events", n.events.size()}};
    if (!n.answered) node["error"] = n.error;
    nodes.push_back(std::move(node));
  }
  Json events = Json::array();
  for (const TimelineRow& row : r.timeline) {
    events.push_back({{"node", row.node},
                      {"phase", row.phase},
                      {"event", row.event.event},
                      {"detail", row.event.detail},
                      {"unix_ns", row.event.unix_ns},
                      {"mono_ns", row.event.mono_ns},
                      {"seq", row.event.seq},
                      {"offset_ms", Round3(row.offset_ms)},
                      {"since_prev_ms", Round3(row.since_prev_ms)}});
  }
  Json phases = Json::array();
  for (const PhaseSpan& p : r.phases) {
    phases.push_back({{"node", p.node},
                      {"phase", p.phase},
                      {"start_ms", Round3(p.start_ms)},
                      {"duration_ms", Round3(p.duration_ms)},
                      {"events", p.events}});
  }
  Json unanswered = Json::array();
  for (const NodeAnswer& n : r.nodes) {
    if (!n.answered) unanswered.push_back({{"node", n.node}, {"error", n.error}});
  }
  Json waiting = nullptr;
  if (r.waiting) {
    const Waiting& w = *r.waiting;
    waiting = {{"node", w.node},
               {"phase", w.phase},
               {"last_event", w.last_event},
               {"for_s", Round3(w.for_s)},
               {"text", w.text}};
  }
  Json out = Json::object();
  out["txid"] = r.txid.ToString();
  out["state"] = r.state;
  out["nodes"] = std::move(nodes);
  out["events"] = std::move(events);
  out["phases"] = std::move(phases);
  out["unanswered"] = std::move(unanswered);
  out["waiting"] = std::move(waiting);
  // A detail is bytes from a node (a key may be in it): what is not UTF-8
  // becomes U+FFFD instead of an exception.
  return out.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace dtx::tools
