// The one place where the wire's rpc::DtxError and dtx::Status meet.
//
// Reply -> Status (clients, stubs: StatusFromDtxError):
//   BAD_ARGUMENT -> InvalidArgument     UNKNOWN_TX  -> NotFound
//   NOT_PRIMARY  -> Unavailable ("not primary; primary=<host:port>" when the
//                   reply named one; RpcStatus::primary() has it too)
//   STALE_EPOCH  -> Aborted("stale epoch: ...")
//   UNAVAILABLE  -> Unavailable          TIMEOUT     -> Timeout
//   INTERNAL     -> Internal             WRONG_SHARD -> InvalidArgument
//   PERMISSION_DENIED -> PermissionDenied
//   unknown code -> Internal
// The raw code stays available: RpcStatus::error_code().
// Transport failures (no connection, connection lost, reply undecodable) are
// Unavailable (undecodable: Internal) and a per-request timeout is Timeout;
// those carry no error_code().
//
// Status -> DtxError (handlers, the Thrift edge: DtxErrorFromStatus):
//   InvalidArgument -> BAD_ARGUMENT     NotFound -> UNKNOWN_TX
//   Unavailable, Busy, Failed -> UNAVAILABLE   Timeout -> TIMEOUT
//   PermissionDenied -> PERMISSION_DENIED
//   anything else -> INTERNAL. Handlers needing NOT_PRIMARY, STALE_EPOCH or
//   WRONG_SHARD build the error with MakeDtxError.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "dtx_types.h"

namespace dtx {

// A Status plus, when the peer answered with a DtxError, its raw code and the
// primary it named. Callbacks typed `const RpcStatus&` accept lambdas taking
// `const Status&`.
class [[nodiscard]] RpcStatus : public Status {
 public:
  RpcStatus() = default;
  RpcStatus(Status s) : Status(std::move(s)) {}  // NOLINT: implicit by design
  RpcStatus(Status s, rpc::ErrorCode::type code, std::optional<std::string> primary,
            std::optional<int64_t> current_epoch = std::nullopt,
            std::optional<std::string> epoch_owner = std::nullopt)
      : Status(std::move(s)),
        error_code_(code),
        primary_(std::move(primary)),
        current_epoch_(current_epoch),
        epoch_owner_(std::move(epoch_owner)) {}

  // Set iff the peer replied with a DtxError.
  const std::optional<rpc::ErrorCode::type>& error_code() const { return error_code_; }
  // With NOT_PRIMARY, the primary's host:port if the peer knew it.
  const std::optional<std::string>& primary() const { return primary_; }
  // With STALE_EPOCH from a participant: its current epoch and the
  // coordinator that made it current, when it sent them (DtxError fields 4, 5).
  const std::optional<int64_t>& current_epoch() const { return current_epoch_; }
  const std::optional<std::string>& epoch_owner() const { return epoch_owner_; }
  // With UNAVAILABLE from a node shedding load (DtxError field 6): how long
  // to wait before asking again; the request was not acted on.
  const std::optional<int32_t>& retry_after_ms() const { return retry_after_ms_; }
  void set_retry_after_ms(int32_t ms) { retry_after_ms_ = ms; }
  // True when a transport failure (Unavailable, Timeout, Busy) struck before
  // any byte of the call was written to a socket: the peer certainly never
  // saw it. False for every other status.
  bool not_sent() const { return not_sent_; }
  static RpcStatus NotSent(Status s) {
    RpcStatus r(std::move(s));
    r.not_sent_ = true;
    return r;
  }

 private:
  bool not_sent_ = false;
  std::optional<rpc::ErrorCode::type> error_code_;
  std::optional<std::string> primary_;
  std::optional<int64_t> current_epoch_;
  std::optional<std::string> epoch_owner_;
  std::optional<int32_t> retry_after_ms_;
};

RpcStatus StatusFromDtxError(const rpc::DtxError& err);

rpc::DtxError MakeDtxError(rpc::ErrorCode::type code, std::string message,
                           std::optional<std::string> primary = std::nullopt);
// UNAVAILABLE from a node that sheds load: `message` says why, and
// retry_after_ms when to ask again (idl/dtx.thrift DtxError).
rpc::DtxError SheddingError(std::string message, int32_t retry_after_ms);
// Requires !s.ok().
rpc::DtxError DtxErrorFromStatus(const Status& s);

// Name of an rpc::ErrorCode ("NOT_PRIMARY"), "UNKNOWN(<n>)" for others.
std::string ErrorCodeName(rpc::ErrorCode::type code);

}  // namespace dtx
