// The wire (idl/dtx.thrift, generated as dtx::rpc) and the plain C++
// vocabulary (common/types.h) meet here, and only here: common/wire.cc
// static_asserts that every enumerator of types.h has the generated value,
// and these functions convert between the two. Runtimes, the client, the
// tools and the tests convert with them instead of writing their own.
//
// Values from the wire are not trusted: an enum value outside its IDL enum (a
// newer peer, a bad reply) converts to std::nullopt. Stateless; thread-safe.
#pragma once

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/rpc_error.h"
#include "common/types.h"
#include "dtx_types.h"

namespace dtx {

// TxId: bit-preserving (the wire has signed i64 halves).
rpc::TxId ToRpc(const TxId& t);
TxId FromRpc(const rpc::TxId& t);

// Fingerprint <-> PrepareRequest.fingerprint (kFingerprintBytes: hi then lo,
// each big-endian). FingerprintFromRpc: nullopt unless exactly
// kFingerprintBytes long and not all zero.
std::string FingerprintToRpc(const Fingerprint& f);
std::optional<Fingerprint> FingerprintFromRpc(const std::string& bytes);

// Attempt <-> rpc::Attempt (idl/dtx.thrift). AttemptFromRpc: nullopt for a
// negative epoch or sequence number (never sent by a coordinator).
rpc::Attempt ToRpc(const Attempt& a);
std::optional<Attempt> AttemptFromRpc(const rpc::Attempt& a);

// Enums: same numbers both ways. ToRpc(ErrorCode::kOk) is a programmer
// error (kOk is not on the wire).
rpc::ErrorCode::type ToRpc(ErrorCode c);
rpc::Vote::type ToRpc(Vote v);
rpc::Decision::type ToRpc(Decision d);
rpc::Outcome::type ToRpc(Outcome o);
rpc::AbortReason::type ToRpc(AbortReason r);
rpc::NodeRole::type ToRpc(NodeRole r);

// Reading a wire enum: Thrift's reader stores whatever i32 the peer sent in
// the enum field, and loading a number outside the enum's range as the enum
// type is undefined behaviour (UBSan: "load of value 99"). So FromRpc takes
// the field by reference and reads its bits (RawEnumValue); nullopt for a
// number outside our enum.
template <typename E>
int32_t RawEnumValue(const E& field) {
  static_assert(sizeof(E) == sizeof(int32_t), "Thrift enums are i32 on the wire");
  int32_t n;
  std::memcpy(&n, &field, sizeof n);
  return n;
}

std::optional<ErrorCode> FromRpc(const rpc::ErrorCode::type& c);
std::optional<Vote> FromRpc(const rpc::Vote::type& v);
std::optional<Decision> FromRpc(const rpc::Decision::type& d);
std::optional<Outcome> FromRpc(const rpc::Outcome::type& o);
std::optional<AbortReason> FromRpc(const rpc::AbortReason::type& r);
std::optional<NodeRole> FromRpc(const rpc::NodeRole::type& r);

// The name of a role read from the wire ("primary"; "unknown" for a value
// outside NodeRole).
const char* NodeRoleName(const rpc::NodeRole::type& r);

// Errors. A core's error (code, message) as the wire's DtxError; the other
// direction is StatusFromDtxError (rpc_error.h), whose raw code ErrorCodeOf
// gives in the core's terms (nullopt: no DtxError, or a code outside ErrorCode).
rpc::DtxError MakeDtxError(ErrorCode code, std::string message,
                           std::optional<std::string> primary = std::nullopt);
std::optional<ErrorCode> ErrorCodeOf(const RpcStatus& st);

// Read and write sets. ReadItemToRpc/WriteItemToRpc take the fields;
// the set templates take any item type with `key` and `version` (reads:
// coordinator::ReadItem, participant::ReadOp) or `key` and
// `std::optional<std::string> value` (writes: coordinator::WriteItem,
// participant::WriteOp; unset value: delete).
rpc::ReadItem ReadItemToRpc(const std::string& key, Version version);
rpc::WriteItem WriteItemToRpc(const std::string& key, const std::optional<std::string>& value);

template <typename Read>
std::vector<rpc::ReadItem> ReadsToRpc(const std::vector<Read>& reads) {
  std::vector<rpc::ReadItem> out;
  out.reserve(reads.size());
  for (const Read& r : reads) out.push_back(ReadItemToRpc(r.key, r.version));
  return out;
}

template <typename Write>
std::vector<rpc::WriteItem> WritesToRpc(const std::vector<Write>& writes) {
  std::vector<rpc::WriteItem> out;
  out.reserve(writes.size());
  for (const Write& w : writes) out.push_back(WriteItemToRpc(w.key, w.value));
  return out;
}

template <typename Read>
std::vector<Read> ReadsFromRpc(const std::vector<rpc::ReadItem>& reads) {
  std::vector<Read> out;
  out.reserve(reads.size());
  for (const rpc::ReadItem& r : reads) {
    Read item;
    item.key = r.key;
    item.version = r.version;
    out.push_back(std::move(item));
  }
  return out;
}

template <typename Write>
std::vector<Write> WritesFromRpc(const std::vector<rpc::WriteItem>& writes) {
  std::vector<Write> out;
  out.reserve(writes.size());
  for (const rpc::WriteItem& w : writes) {
    Write item;
    item.key = w.key;
    if (w.__isset.value) item.value = w.value;
    out.push_back(std::move(item));
  }
  return out;
}

}  // namespace dtx
