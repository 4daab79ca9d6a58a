// Vocabulary types shared by the protocol cores, the runtimes and the C++
// client. Plain C++: no Thrift, libuv or LevelDB (the cores include this).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace dtx {

// Transaction id, chosen by the client: random `hi` per client, counter `lo`.
// It is also the trace id.
struct TxId {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend bool operator==(const TxId&, const TxId&) = default;
  friend auto operator<=>(const TxId&, const TxId&) = default;
  // 32 hex digits: hi then lo.
  std::string ToString() const {
    char buf[33];
    std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(hi),
                  static_cast<unsigned long long>(lo));
    return buf;
  }
};

struct TxIdHash {
  size_t operator()(const TxId& t) const noexcept {
    uint64_t x = t.hi * 0x9E3779B97F4A7C15ull ^ (t.lo + 0x632BE59BD9B4E019ull + (t.hi << 6));
    x ^= x >> 29;
    return static_cast<size_t>(x);
  }
};

using Epoch = int64_t;
using Version = int64_t;  // per-key version at a participant; 0: absent

// The wire vocabulary's enums. Each mirrors the idl/dtx.thrift enum of the
// same name with the same numbers; common/wire.cc static_asserts every
// enumerator against the generated value and holds the conversions.

// Mirrors idl/dtx.thrift ErrorCode. kOk (0) is not on the wire: it stands for
// "no error" in a core's reply (a reply without DtxError).
enum class ErrorCode : int {
  kOk = 0,
  kBadArgument = 1,
  kUnknownTx = 2,
  kNotPrimary = 3,
  kStaleEpoch = 4,
  kUnavailable = 5,
  kTimeout = 6,
  kInternal = 7,
  kWrongShard = 8,
  kPermissionDenied = 9,
};

inline const char* ErrorCodeName(ErrorCode c) {
  switch (c) {
    case ErrorCode::kOk: return "OK";
    case ErrorCode::kBadArgument: return "BAD_ARGUMENT";
    case ErrorCode::kUnknownTx: return "UNKNOWN_TX";
    case ErrorCode::kNotPrimary: return "NOT_PRIMARY";
    case ErrorCode::kStaleEpoch: return "STALE_EPOCH";
    case ErrorCode::kUnavailable: return "UNAVAILABLE";
    case ErrorCode::kTimeout: return "TIMEOUT";
    case ErrorCode::kInternal: return "INTERNAL";
    case ErrorCode::kWrongShard: return "WRONG_SHARD";
    case ErrorCode::kPermissionDenied: return "PERMISSION_DENIED";
  }
  return "UNKNOWN";
}

// Mirrors idl/dtx.thrift Vote.
enum class Vote : int { kYes = 1, kNo = 2, kReadOnly = 3 };
// Mirrors idl/dtx.thrift Decision.
enum class Decision : int { kCommit = 1, kAbort = 2, kUnknown = 3 };
// Mirrors idl/dtx.thrift Outcome.
enum class Outcome : int { kCommitted = 1, kAborted = 2, kUnknown = 3 };

// Mirrors idl/dtx.thrift AbortReason (same numbers).
enum class AbortReason : int {
  kConflict = 1,
  kParticipantUnavailable = 2,
  kTimeout = 3,
  kClientAbort = 4,
  kCoordinatorFailover = 5,
};

inline const char* AbortReasonName(AbortReason r) {
  switch (r) {
    case AbortReason::kConflict: return "conflict";
    case AbortReason::kParticipantUnavailable: return "participant_unavailable";
    case AbortReason::kTimeout: return "timeout";
    case AbortReason::kClientAbort: return "client_abort";
    case AbortReason::kCoordinatorFailover: return "coordinator_failover";
  }
  return "unknown";
}

// Mirrors idl/dtx.thrift NodeRole (same numbers).
enum class NodeRole : int {
  kParticipant = 1,
  kPrimary = 2,   // a coordinator established at its epoch: it decides
  kStarting = 3,  // a primary not yet established: decides nothing yet
  kBackup = 4,
};

inline const char* NodeRoleName(NodeRole r) {
  switch (r) {
    case NodeRole::kParticipant: return "participant";
    case NodeRole::kPrimary: return "primary";
    case NodeRole::kStarting: return "starting";
    case NodeRole::kBackup: return "backup";
  }
  return "unknown";
}

// The inverse of NodeRoleName; nullopt for any other name (a role string
// from the wire is never trusted).
inline std::optional<NodeRole> NodeRoleFromName(std::string_view name) {
  for (NodeRole r :
       {NodeRole::kParticipant, NodeRole::kPrimary, NodeRole::kStarting, NodeRole::kBackup}) {
    if (name == NodeRoleName(r)) return r;
  }
  return std::nullopt;
}

// Limits every part enforces (one place; "put a limit on everything").
inline constexpr size_t kKeyBytesMax = 1024;
inline constexpr size_t kValueBytesMax = 1u << 20;  // 1 MiB
inline constexpr size_t kTxKeysMax = 1024;          // reads + writes in one transaction
inline constexpr size_t kTxBytesMax = 4u << 20;     // keys + values in one transaction

// FNV-1a 64 over the key: the "hash" shard scheme (participant = hash % n).
inline uint64_t ShardHash(std::string_view key) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace dtx
