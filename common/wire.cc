#include "common/wire.h"

#include "common/check.h"

namespace dtx {
namespace {

// Every enumerator of common/types.h has the number idl/dtx.thrift gives it,
// so a conversion is a cast once the value is known to be in range.
template <typename Ours, typename Theirs>
constexpr bool Same(Ours ours, Theirs theirs) {
  return static_cast<int>(ours) == static_cast<int>(theirs);
}

static_assert(Same(ErrorCode::kBadArgument, rpc::ErrorCode::BAD_ARGUMENT));
static_assert(Same(ErrorCode::kUnknownTx, rpc::ErrorCode::UNKNOWN_TX));
static_assert(Same(ErrorCode::kNotPrimary, rpc::ErrorCode::NOT_PRIMARY));
static_assert(Same(ErrorCode::kStaleEpoch, rpc::ErrorCode::STALE_EPOCH));
static_assert(Same(ErrorCode::kUnavailable, rpc::ErrorCode::UNAVAILABLE));
static_assert(Same(ErrorCode::kTimeout, rpc::ErrorCode::TIMEOUT));
static_assert(Same(ErrorCode::kInternal, rpc::ErrorCode::INTERNAL));
static_assert(Same(ErrorCode::kWrongShard, rpc::ErrorCode::WRONG_SHARD));
static_assert(Same(ErrorCode::kPermissionDenied, rpc::ErrorCode::PERMISSION_DENIED));
constexpr ErrorCode kErrorCodeFirst = ErrorCode::kBadArgument;
constexpr ErrorCode kErrorCodeLast = ErrorCode::kPermissionDenied;

static_assert(Same(Vote::kYes, rpc::Vote::YES));
static_assert(Same(Vote::kNo, rpc::Vote::NO));
static_assert(Same(Vote::kReadOnly, rpc::Vote::READ_ONLY));

static_assert(Same(Decision::kCommit, rpc::Decision::COMMIT));
static_assert(Same(Decision::kAbort, rpc::Decision::ABORT));
static_assert(Same(Decision::kUnknown, rpc::Decision::UNKNOWN));

static_assert(Same(Outcome::kCommitted, rpc::Outcome::COMMITTED));
static_assert(Same(Outcome::kAborted, rpc::Outcome::ABORTED));
static_assert(Same(Outcome::kUnknown, rpc::Outcome::UNKNOWN));

static_assert(Same(AbortReason::kConflict, rpc::AbortReason::CONFLICT));
static_assert(Same(AbortReason::kParticipantUnavailable,
                   rpc::AbortReason::PARTICIPANT_UNAVAILABLE));
static_assert(Same(AbortReason::kTimeout, rpc::AbortReason::TIMEOUT));
static_assert(Same(AbortReason::kClientAbort, rpc::AbortReason::CLIENT_ABORT));
static_assert(Same(AbortReason::kCoordinatorFailover, rpc::AbortReason::COORDINATOR_FAILOVER));

static_assert(Same(NodeRole::kParticipant, rpc::NodeRole::PARTICIPANT));
static_assert(Same(NodeRole::kPrimary, rpc::NodeRole::PRIMARY));
static_assert(Same(NodeRole::kStarting, rpc::NodeRole::STARTING));
static_assert(Same(NodeRole::kBackup, rpc::NodeRole::BACKUP));

// Each enum's values are contiguous from `first` to `last`: a wire value is
// ours iff it lies in that range. (common/wire_test.cc checks that every
// value of the generated _VALUES_TO_NAMES maps converts and nothing else
// does, so an enumerator added to the IDL alone fails there.)
template <typename Ours, typename Theirs>
std::optional<Ours> InRange(const Theirs& v, Ours first, Ours last) {
  const int32_t n = RawEnumValue(v);
  if (n < static_cast<int>(first) || n > static_cast<int>(last)) return std::nullopt;
  return static_cast<Ours>(n);
}

}  // namespace

rpc::TxId ToRpc(const TxId& t) {
  rpc::TxId r;
  r.hi = static_cast<int64_t>(t.hi);
  r.lo = static_cast<int64_t>(t.lo);
  return r;
}

TxId FromRpc(const rpc::TxId& t) {
  return TxId{static_cast<uint64_t>(t.hi), static_cast<uint64_t>(t.lo)};
}

rpc::Attempt ToRpc(const Attempt& a) {
  rpc::Attempt r;
  r.epoch = a.epoch;
  r.seq = static_cast<int64_t>(a.seq);
  return r;
}

std::optional<Attempt> AttemptFromRpc(const rpc::Attempt& a) {
  if (a.epoch < 0 || a.seq < 0) return std::nullopt;
  return Attempt{a.epoch, static_cast<uint64_t>(a.seq)};
}

std::string FingerprintToRpc(const Fingerprint& f) {
  DTX_CHECK(f.known());
  std::string out(kFingerprintBytes, '\0');
  for (size_t i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((f.hi >> (56 - 8 * i)) & 0xff);
    out[8 + i] = static_cast<char>((f.lo >> (56 - 8 * i)) & 0xff);
  }
  return out;
}

std::optional<Fingerprint> FingerprintFromRpc(const std::string& bytes) {
  if (bytes.size() != kFingerprintBytes) return std::nullopt;
  Fingerprint f;
  for (size_t i = 0; i < 8; ++i) {
    f.hi = (f.hi << 8) | static_cast<uint8_t>(bytes[i]);
    f.lo = (f.lo << 8) | static_cast<uint8_t>(bytes[8 + i]);
  }
  if (!f.known()) return std::nullopt;
  return f;
}

rpc::ErrorCode::type ToRpc(ErrorCode c) {
  DTX_CHECK_MSG(c != ErrorCode::kOk, "ErrorCode::kOk is not on the wire");
  return static_cast<rpc::ErrorCode::type>(c);
}
rpc::Vote::type ToRpc(Vote v) { return static_cast<rpc::Vote::type>(v); }
rpc::Decision::type ToRpc(Decision d) { return static_cast<rpc::Decision::type>(d); }
rpc::Outcome::type ToRpc(Outcome o) { return static_cast<rpc::Outcome::type>(o); }
rpc::AbortReason::type ToRpc(AbortReason r) { return static_cast<rpc::AbortReason::type>(r); }
rpc::NodeRole::type ToRpc(NodeRole r) { return static_cast<rpc::NodeRole::type>(r); }

std::optional<ErrorCode> FromRpc(const rpc::ErrorCode::type& c) {
  return InRange(c, kErrorCodeFirst, kErrorCodeLast);
}
std::optional<Vote> FromRpc(const rpc::Vote::type& v) {
  return InRange(v, Vote::kYes, Vote::kReadOnly);
}
std::optional<Decision> FromRpc(const rpc::Decision::type& d) {
  return InRange(d, Decision::kCommit, Decision::kUnknown);
}
std::optional<Outcome> FromRpc(const rpc::Outcome::type& o) {
  return InRange(o, Outcome::kCommitted, Outcome::kUnknown);
}
std::optional<AbortReason> FromRpc(const rpc::AbortReason::type& r) {
  return InRange(r, AbortReason::kConflict, AbortReason::kCoordinatorFailover);
}
std::optional<NodeRole> FromRpc(const rpc::NodeRole::type& r) {
  return InRange(r, NodeRole::kParticipant, NodeRole::kBackup);
}

const char* NodeRoleName(const rpc::NodeRole::type& r) {
  std::optional<NodeRole> role = FromRpc(r);
  return role ? NodeRoleName(*role) : "unknown";
}

rpc::DtxError MakeDtxError(ErrorCode code, std::string message,
                           std::optional<std::string> primary) {
  return MakeDtxError(ToRpc(code), std::move(message), std::move(primary));
}

std::optional<ErrorCode> ErrorCodeOf(const RpcStatus& st) {
  if (!st.error_code()) return std::nullopt;
  return FromRpc(*st.error_code());
}

rpc::ReadItem ReadItemToRpc(const std::string& key, Version version) {
  rpc::ReadItem item;
  item.key = key;
  item.version = version;
  return item;
}

rpc::WriteItem WriteItemToRpc(const std::string& key, const std::optional<std::string>& value) {
  rpc::WriteItem item;
  item.key = key;
  if (value) item.__set_value(*value);
  return item;
}

}  // namespace dtx
