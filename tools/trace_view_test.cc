// dtxctl trace's analysis (tools/trace_view.h): txid forms, the merged
// timeline with phases and per-node durations, silent nodes, and where an
// unfinished transaction waits.
#include "tools/trace_view.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace dtx::tools {
namespace {

using Json = nlohmann::json;

// RenderTraceJson's output parsed back; a failure (and an empty object) if
// it is not one JSON object.
Json Parsed(const TraceReport& r) {
  const std::string text = RenderTraceJson(r);
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(j.is_object()) << text;
  return j.is_object() ? j : Json::object();
}

constexpr int64_t kT0 = 1'700'000'000'000'000'000;  // unix ns
constexpr int64_t kMs = 1'000'000;

obs::SpanEvent Ev(const char* event, int64_t at_ms, std::string detail = "") {
  static uint64_t seq = 0;
  obs::SpanEvent e;
  e.event = event;
  e.unix_ns = kT0 + at_ms * kMs;
  e.mono_ns = static_cast<uint64_t>(at_ms * kMs);
  e.detail = std::move(detail);
  e.seq = ++seq;
  return e;
}

NodeAnswer Node(std::string name, std::vector<obs::SpanEvent> events) {
  NodeAnswer n;
  n.coordinator = name.rfind("coordinator", 0) == 0;
  n.node = std::move(name);
  n.answered = true;
  n.events = std::move(events);
  return n;
}

NodeAnswer Silent(std::string name, std::string error) {
  NodeAnswer n;
  n.node = std::move(name);
  n.error = std::move(error);
  return n;
}

TEST(ParseTxId, AcceptsToStringFormAndHiLo) {
  const TxId t{0xabcdef0123456789ull, 0x42};
  for (const std::string& s :
       {t.ToString(), "0x" + t.ToString(), "txid=" + t.ToString(),
        std::string("abcdef0123456789:42"), std::string("0xabcdef0123456789:0x42")}) {
    auto p = ParseTxId(s);
    ASSERT_TRUE(p.ok()) << s << ": " << p.status().ToString();
    EXPECT_EQ(t, *p) << s;
  }
  for (const char* bad : {"", "xyz", "123", "0123456789abcdef0123456789abcdeg", "1:", ":1",
                          "11111111111111111:1", "0123456789abcdef0123456789abcdef0"}) {
    EXPECT_FALSE(ParseTxId(bad).ok()) << bad;
  }
}

TEST(AnalyzeTrace, FinishedTwoPhaseCommitIsCompleteWithPhasesPerNode) {
  std::vector<NodeAnswer> nodes = {
      Node("coordinator-0",
           {Ev("received", 0), Ev("prepare", 1, "participant-0"), Ev("prepare", 1, "participant-1"),
            Ev("voted", 4, "participant-0 yes"), Ev("voted", 5, "participant-1 yes"),
            Ev("logged", 5), Ev("synced", 7), Ev("decided", 7, "commit"),
            Ev("replied", 7, "COMMITTED"), Ev("acked", 9, "participant-0"),
            Ev("acked", 10, "participant-1"), Ev("ended", 10)}),
      Node("participant-0",
           {Ev("received", 2, "prepare"), Ev("locked", 2, "keys=1"), Ev("logged", 2, "PREPARE"),
            Ev("synced", 3), Ev("voted", 3, "yes"), Ev("received", 8, "commit"),
            Ev("decided", 8, "commit"), Ev("logged", 8, "COMMIT"), Ev("synced", 9),
            Ev("applied", 9), Ev("acked", 9, "commit")}),
      Node("participant-1", {}),
  };
  TraceReport r = AnalyzeTrace(TxId{1, 2}, nodes, kT0 + 100 * kMs);
  EXPECT_EQ("complete", r.state);
  EXPECT_FALSE(r.waiting.has_value());
  ASSERT_EQ(23u, r.timeline.size());
  EXPECT_EQ("coordinator-0", r.timeline.front().node);
  EXPECT_DOUBLE_EQ(0, r.timeline.front().offset_ms);
  // Per-node phases: participant-0 prepare 2..3 ms, commit 8..9 ms.
  bool saw_prepare = false, saw_commit = false;
  for (const PhaseSpan& p : r.phases) {
    if (p.node == "participant-0" && p.phase == "prepare") {
      saw_prepare = true;
      EXPECT_DOUBLE_EQ(1.0, p.duration_ms);
      EXPECT_EQ(5, p.events);
    }
    if (p.node == "participant-0" && p.phase == "commit") {
      saw_commit = true;
      EXPECT_DOUBLE_EQ(1.0, p.duration_ms);
    }
  }
  EXPECT_TRUE(saw_prepare);
  EXPECT_TRUE(saw_commit);
  const std::string text = RenderTraceText(r);
  EXPECT_NE(std::string::npos, text.find("participant-1: no events for this txid")) << text;
  EXPECT_NE(std::string::npos, text.find("state: complete")) << text;
  const Json json = Parsed(r);
  EXPECT_EQ(json.value("txid", ""), (TxId{1, 2}).ToString()) << json;
  EXPECT_EQ(json.value("state", ""), "complete") << json;
  EXPECT_TRUE(json.contains("waiting") && json["waiting"].is_null()) << json;
  ASSERT_EQ(json.value("events", Json::array()).size(), r.timeline.size()) << json;
  const Json& first = json["events"][0];
  EXPECT_EQ(first.value("node", ""), "coordinator-0") << first;
  EXPECT_EQ(first.value("event", ""), "received") << first;
  EXPECT_EQ(first.value("unix_ns", int64_t{0}), kT0) << first;
  EXPECT_EQ(first.value("offset_ms", -1.0), 0.0) << first;
  EXPECT_EQ(json.value("phases", Json::array()).size(), r.phases.size()) << json;
  EXPECT_EQ(json.value("unanswered", Json::object()), Json::array()) << json;
}

TEST(AnalyzeTrace, NamesTheParticipantThatHasNotVotedAndItsLastStep) {
  std::vector<NodeAnswer> nodes = {
      Node("coordinator-0",
           {Ev("received", 0), Ev("prepare", 1, "participant-0"), Ev("prepare", 1, "participant-1"),
            Ev("voted", 4, "participant-0 yes")}),
      Node("participant-0", {Ev("received", 2, "prepare"), Ev("voted", 3, "yes")}),
      Node("participant-1",
           {Ev("received", 2, "prepare"), Ev("locked", 2), Ev("logged", 2, "PREPARE")}),
  };
  TraceReport r = AnalyzeTrace(TxId{1, 2}, nodes, kT0 + 2302 * kMs);
  EXPECT_EQ("waiting", r.state);
  ASSERT_TRUE(r.waiting.has_value());
  EXPECT_EQ("participant-1", r.waiting->node);
  EXPECT_EQ("prepare", r.waiting->phase);
  EXPECT_EQ("logged", r.waiting->last_event);
  EXPECT_NEAR(2.3, r.waiting->for_s, 0.001);
  EXPECT_NE(
      std::string::npos,
      r.waiting->text.find("participant-1 in prepare (logged, not yet synced/voted) for 2.3 s"))
      << r.waiting->text;
  const Json json = Parsed(r);
  EXPECT_EQ(json.value("state", ""), "waiting") << json;
  const Json waiting = json.value("waiting", Json());
  EXPECT_EQ(waiting.value("node", ""), "participant-1") << json;
  EXPECT_EQ(waiting.value("phase", ""), "prepare") << json;
  EXPECT_EQ(waiting.value("last_event", ""), "logged") << json;
  EXPECT_NEAR(waiting.value("for_s", -1.0), r.waiting->for_s, 0.0005) << json;
  EXPECT_EQ(waiting.value("text", ""), r.waiting->text) << json;
}

TEST(AnalyzeTrace, SilentNodeIsMarkedAndStillTheOthersArePrinted) {
  std::vector<NodeAnswer> nodes = {
      Node("coordinator-0", {Ev("received", 0), Ev("prepare", 1, "participant-0"),
                             Ev("prepare", 1, "participant-1")}),
      Node("participant-0", {Ev("received", 2, "prepare"), Ev("voted", 3, "yes")}),
      Silent("participant-1", "connection refused"),
  };
  TraceReport r = AnalyzeTrace(TxId{1, 2}, nodes, kT0 + 1000 * kMs);
  EXPECT_EQ(5u, r.timeline.size());
  ASSERT_TRUE(r.waiting.has_value());
  // participant-0 voted (the coordinator just has not recorded it yet) but
  // participant-1 is the first without a vote... participant-0 comes first
  // in prepare order, and the coordinator has no vote from it either.
  EXPECT_EQ("participant-0", r.waiting->node);
  const std::string text = RenderTraceText(r);
  EXPECT_NE(std::string::npos, text.find("participant-1: NO ANSWER (connection refused)")) << text;
  const Json json = Parsed(r);
  EXPECT_EQ(json.value("unanswered", Json()),
            Json::parse(R"([{"node":"participant-1","error":"connection refused"}])"))
      << json;
  const Json answers = json.value("nodes", Json::array());
  ASSERT_EQ(answers.size(), 3u) << json;
  EXPECT_EQ(answers[2], Json::parse(R"({"node":"participant-1","answered":false,"events":0,)"
                                    R"("error":"connection refused"})"))
      << json;
}

TEST(AnalyzeTrace, MissingAckInPhaseTwo) {
  std::vector<NodeAnswer> nodes = {
      Node("coordinator-0",
           {Ev("received", 0), Ev("prepare", 1, "participant-0"), Ev("prepare", 1, "participant-1"),
            Ev("voted", 4, "participant-0 yes"), Ev("voted", 5, "participant-1 yes"),
            Ev("decided", 7, "commit"), Ev("replied", 7), Ev("acked", 9, "participant-0")}),
      Silent("participant-1", "timed out"),
  };
  TraceReport r = AnalyzeTrace(TxId{1, 2}, nodes, kT0 + 1000 * kMs);
  ASSERT_TRUE(r.waiting.has_value());
  EXPECT_EQ("participant-1", r.waiting->node);
  EXPECT_EQ("commit", r.waiting->phase);
  EXPECT_NE(std::string::npos, r.waiting->text.find("did not answer: timed out"))
      << r.waiting->text;
}

TEST(AnalyzeTrace, WithoutCoordinatorAPreparedParticipantIsInDoubt) {
  std::vector<NodeAnswer> nodes = {
      Silent("coordinator-0", "connection refused"),
      Node("participant-0", {Ev("received", 2, "prepare"), Ev("locked", 2),
                             Ev("logged", 2, "PREPARE"), Ev("synced", 3), Ev("voted", 3, "yes")}),
  };
  TraceReport r = AnalyzeTrace(TxId{1, 2}, nodes, kT0 + 1000 * kMs);
  ASSERT_TRUE(r.waiting.has_value());
  EXPECT_EQ("participant-0", r.waiting->node);
  EXPECT_EQ("decision", r.waiting->phase);
}

TEST(AnalyzeTrace, WithoutCoordinatorTheParticipantStillInPrepareIsNamedFirst) {
  std::vector<NodeAnswer> nodes = {
      Silent("coordinator-0", "timed out"),
      Node("participant-0", {Ev("received", 2, "prepare"), Ev("locked", 2),
                             Ev("logged", 2, "PREPARE"), Ev("synced", 3), Ev("voted", 3, "yes")}),
      Node("participant-1",
           {Ev("received", 2, "prepare"), Ev("locked", 2), Ev("logged", 2, "PREPARE")}),
  };
  TraceReport r = AnalyzeTrace(TxId{1, 2}, nodes, kT0 + 1000 * kMs);
  ASSERT_TRUE(r.waiting.has_value());
  EXPECT_EQ("participant-1", r.waiting->node);
  EXPECT_EQ("prepare", r.waiting->phase);
}

TEST(AnalyzeTrace, AbortNeedsNoAcks) {
  std::vector<NodeAnswer> nodes = {
      Node("coordinator-0",
           {Ev("received", 0), Ev("prepare", 1, "participant-0"), Ev("prepare", 1, "participant-1"),
            Ev("voted", 4, "participant-0 yes"), Ev("voted", 5, "participant-1 no"),
            Ev("decided", 7, "abort conflict"), Ev("replied", 7, "aborted")}),
  };
  TraceReport r = AnalyzeTrace(TxId{1, 2}, nodes, kT0 + 1000 * kMs);
  EXPECT_EQ("complete", r.state);
  EXPECT_FALSE(r.waiting.has_value());
}

TEST(AnalyzeTrace, NoEventsAnywhereIsNotFound) {
  TraceReport r = AnalyzeTrace(
      TxId{1, 2}, {Node("coordinator-0", {}), Silent("participant-0", "timed out")}, kT0);
  EXPECT_EQ("not_found", r.state);
  EXPECT_TRUE(r.timeline.empty());
  EXPECT_NE(std::string::npos, RenderTraceText(r).find("no node that answered knows this txid"));
}

TEST(RenderTraceJson, DetailsWithQuotesControlBytesAndNonUtf8StayOneValidObject) {
  const std::string odd = "key \"a\\b\"\nnext\x01";
  std::vector<NodeAnswer> nodes = {
      Node("coordinator-0", {Ev("received", 0, odd), Ev("prepare", 1, "bad \xff\xfe utf-8")}),
      Silent("participant-0", "refused \"x\""),
  };
  TraceReport r = AnalyzeTrace(TxId{1, 2}, nodes, kT0 + 5 * kMs);
  const std::string text = RenderTraceJson(r);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1) << "one line: " << text;
  const Json json = Parsed(r);
  ASSERT_EQ(json.value("events", Json::array()).size(), 2u) << text;
  EXPECT_EQ(json["events"][0].value("detail", ""), odd);
  // Not UTF-8: each bad byte is U+FFFD, the rest is kept.
  EXPECT_EQ(json["events"][1].value("detail", ""), "bad \uFFFD\uFFFD utf-8");
  EXPECT_EQ(json["unanswered"][0].value("error", ""), "refused \"x\"");
}

}  // namespace
}  // namespace dtx::tools
