#include "common/failpoint.h"

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "common/thread_annotations.h"

namespace dtx::fp {
namespace internal {
std::atomic<bool> g_armed[kPointCount];
}  // namespace internal

namespace {

constexpr const char* kNames[kPointCount] = {
#define DTX_FP_NAME(e, name) name,
    DTX_FAILPOINT_LIST(DTX_FP_NAME)
#undef DTX_FP_NAME
};

enum class Kind { kOff, kCrash, kCrashAfter, kSleep, kError, kErrorAfter };

struct Action {
  Kind kind = Kind::kOff;
  int64_t arg = 0;     // n or ms
  int64_t passes = 0;  // evaluations so far (for the -after(n) kinds)
  std::string text;    // as armed, for Armed()
};

Mutex g_mu;
Action g_actions[kPointCount] GUARDED_BY(g_mu);

int Find(std::string_view name) {
  for (int i = 0; i < kPointCount; ++i) {
    if (name == kNames[i]) return i;
  }
  return -1;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// "word(123)" -> 123 ; anything else -> error.
Result<int64_t> ParseArg(std::string_view action, std::string_view word) {
  std::string_view rest = action.substr(word.size());
  if (rest.size() < 3 || rest.front() != '(' || rest.back() != ')') {
    return Status::InvalidArgument("failpoint action '" + std::string(action) + "': expected " +
                                   std::string(word) + "(N)");
  }
  rest = rest.substr(1, rest.size() - 2);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), v);
  if (ec != std::errc() || p != rest.data() + rest.size() || v < 0 || v > 86'400'000) {
    return Status::InvalidArgument("failpoint action '" + std::string(action) +
                                   "': N must be an integer in [0, 86400000]");
  }
  return v;
}

Result<Action> ParseAction(std::string_view text) {
  text = Trim(text);
  Action a;
  a.text = std::string(text);
  auto with_arg = [&](std::string_view word, Kind kind) -> Result<Action> {
    auto v = ParseArg(text, word);
    if (!v.ok()) return v.status();
    a.kind = kind;
    a.arg = *v;
    return a;
  };
  if (text == "off") {
    a.kind = Kind::kOff;
    return a;
  }
  if (text == "crash") {
    a.kind = Kind::kCrash;
    return a;
  }
  if (text == "error") {
    a.kind = Kind::kError;
    return a;
  }
  if (text.starts_with("crash-after")) return with_arg("crash-after", Kind::kCrashAfter);
  if (text.starts_with("error-after")) return with_arg("error-after", Kind::kErrorAfter);
  if (text.starts_with("sleep")) return with_arg("sleep", Kind::kSleep);
  return Status::InvalidArgument(
      "unknown failpoint action '" + std::string(text) +
      "' (off, crash, crash-after(n), sleep(ms), error, error-after(n))");
}

[[noreturn]] void Crash() { ::_exit(kCrashExitCode); }

}  // namespace

const char* Name(Point p) { return kNames[static_cast<int>(p)]; }

std::vector<std::string> AllNames() { return {std::begin(kNames), std::end(kNames)}; }

Status Check(std::string_view name, std::string_view action) {
  if (Find(Trim(name)) < 0) {
    return Status::InvalidArgument("unknown failpoint '" + std::string(name) + "'");
  }
  return ParseAction(action).status();
}

Status Arm(std::string_view name, std::string_view action) {
  int i = Find(Trim(name));
  if (i < 0) return Status::InvalidArgument("unknown failpoint '" + std::string(name) + "'");
  auto a = ParseAction(action);
  if (!a.ok()) return a.status();
  MutexLock lock(&g_mu);
  g_actions[i] = std::move(a.value());
  internal::g_armed[i].store(g_actions[i].kind != Kind::kOff, std::memory_order_relaxed);
  return Status::OK();
}

Status ArmFromSpec(std::string_view spec) {
  std::vector<std::pair<std::string_view, std::string_view>> items;
  while (!spec.empty()) {
    size_t semi = spec.find(';');
    std::string_view item = Trim(spec.substr(0, semi));
    spec = semi == std::string_view::npos ? std::string_view() : spec.substr(semi + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument("failpoint spec item '" + std::string(item) +
                                     "': expected name=action");
    }
    std::string_view name = Trim(item.substr(0, eq)), action = Trim(item.substr(eq + 1));
    if (Find(name) < 0)
      return Status::InvalidArgument("unknown failpoint '" + std::string(name) + "'");
    auto a = ParseAction(action);
    if (!a.ok()) return a.status();
    items.emplace_back(name, action);
  }
  for (auto& [name, action] : items) DTX_CHECK(Arm(name, action).ok());
  return Status::OK();
}

Status InitFromEnv() {
  const char* spec = std::getenv("DTX_FAILPOINTS");
  if (spec == nullptr) return Status::OK();
  Status s = ArmFromSpec(spec);
  if (!s.ok()) return Status::InvalidArgument("DTX_FAILPOINTS: " + s.message());
  return s;
}

Status InitFromEnvForNode(bool enabled) {
  if (enabled) return InitFromEnv();
  const char* spec = std::getenv("DTX_FAILPOINTS");
  if (spec == nullptr || Trim(spec).empty()) return Status::OK();
  return Status::PermissionDenied(
      "DTX_FAILPOINTS is set but failpoints are off: start the node with --enable-failpoints");
}

void DisarmAll() {
  MutexLock lock(&g_mu);
  for (int i = 0; i < kPointCount; ++i) {
    g_actions[i] = Action();
    internal::g_armed[i].store(false, std::memory_order_relaxed);
  }
}

std::vector<std::string> Armed() {
  MutexLock lock(&g_mu);
  std::vector<std::string> out;
  for (int i = 0; i < kPointCount; ++i) {
    if (g_actions[i].kind != Kind::kOff)
      out.push_back(std::string(kNames[i]) + "=" + g_actions[i].text);
  }
  return out;
}

namespace internal {

Status EvalSlow(Point p) {
  int i = static_cast<int>(p);
  int64_t sleep_ms = 0;
  {
    MutexLock lock(&g_mu);
    Action& a = g_actions[i];
    switch (a.kind) {
      case Kind::kOff: return Status::OK();
      case Kind::kCrash: Crash();
      case Kind::kCrashAfter:
        if (a.passes++ >= a.arg) Crash();
        return Status::OK();
      case Kind::kError: return Status::IOError(std::string("failpoint ") + kNames[i]);
      case Kind::kErrorAfter:
        if (a.passes++ >= a.arg) return Status::IOError(std::string("failpoint ") + kNames[i]);
        return Status::OK();
      case Kind::kSleep: sleep_ms = a.arg; break;
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
  return Status::OK();
}

}  // namespace internal
}  // namespace dtx::fp
