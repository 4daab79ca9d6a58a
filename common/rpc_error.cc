#include "common/rpc_error.h"

#include "common/check.h"

namespace dtx {

std::string ErrorCodeName(rpc::ErrorCode::type code) {
  switch (code) {
    case rpc::ErrorCode::BAD_ARGUMENT: return "BAD_ARGUMENT";
    case rpc::ErrorCode::UNKNOWN_TX: return "UNKNOWN_TX";
    case rpc::ErrorCode::NOT_PRIMARY: return "NOT_PRIMARY";
    case rpc::ErrorCode::STALE_EPOCH: return "STALE_EPOCH";
    case rpc::ErrorCode::UNAVAILABLE: return "UNAVAILABLE";
    case rpc::ErrorCode::TIMEOUT: return "TIMEOUT";
    case rpc::ErrorCode::INTERNAL: return "INTERNAL";
    case rpc::ErrorCode::WRONG_SHARD: return "WRONG_SHARD";
    case rpc::ErrorCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
  }
  return "UNKNOWN(" + std::to_string(static_cast<int>(code)) + ")";
}

RpcStatus StatusFromDtxError(const rpc::DtxError& err) {
  std::optional<std::string> primary;
  if (err.__isset.primary && !err.primary.empty()) primary = err.primary;
  const std::string& m = err.message;
  Status s;
  switch (err.code) {
    case rpc::ErrorCode::BAD_ARGUMENT: s = Status::InvalidArgument(m); break;
    case rpc::ErrorCode::UNKNOWN_TX: s = Status::NotFound(m); break;
    case rpc::ErrorCode::NOT_PRIMARY:
      s = Status::Unavailable("not primary: " + m +
                              (primary ? "; primary=" + *primary : std::string()));
      break;
    case rpc::ErrorCode::STALE_EPOCH: s = Status::Aborted("stale epoch: " + m); break;
    case rpc::ErrorCode::UNAVAILABLE: s = Status::Unavailable(m); break;
    case rpc::ErrorCode::TIMEOUT: s = Status::Timeout(m); break;
    case rpc::ErrorCode::INTERNAL: s = Status::Internal(m); break;
    case rpc::ErrorCode::WRONG_SHARD: s = Status::InvalidArgument("wrong shard: " + m); break;
    case rpc::ErrorCode::PERMISSION_DENIED: s = Status::PermissionDenied(m); break;
    default: s = Status::Internal("error code " + ErrorCodeName(err.code) + ": " + m); break;
  }
  std::optional<int64_t> current_epoch;
  if (err.__isset.current_epoch) current_epoch = err.current_epoch;
  std::optional<std::string> epoch_owner;
  if (err.__isset.epoch_owner) epoch_owner = err.epoch_owner;
  RpcStatus out(std::move(s), err.code, std::move(primary), current_epoch,
                std::move(epoch_owner));
  if (err.__isset.retry_after_ms) out.set_retry_after_ms(err.retry_after_ms);
  return out;
}

rpc::DtxError SheddingError(std::string message, int32_t retry_after_ms) {
  rpc::DtxError e = MakeDtxError(rpc::ErrorCode::UNAVAILABLE, std::move(message));
  e.__set_retry_after_ms(retry_after_ms);
  return e;
}

rpc::DtxError MakeDtxError(rpc::ErrorCode::type code, std::string message,
                           std::optional<std::string> primary) {
  rpc::DtxError e;
  e.code = code;
  e.message = std::move(message);
  if (primary) {
    e.primary = std::move(*primary);
    e.__isset.primary = true;
  }
  return e;
}

rpc::DtxError DtxErrorFromStatus(const Status& s) {
  DTX_CHECK(!s.ok());
  rpc::ErrorCode::type code = rpc::ErrorCode::INTERNAL;
  switch (s.code()) {
    case Status::Code::kInvalidArgument: code = rpc::ErrorCode::BAD_ARGUMENT; break;
    case Status::Code::kNotFound: code = rpc::ErrorCode::UNKNOWN_TX; break;
    case Status::Code::kUnavailable:
    case Status::Code::kBusy:
    case Status::Code::kFailed: code = rpc::ErrorCode::UNAVAILABLE; break;
    case Status::Code::kTimeout: code = rpc::ErrorCode::TIMEOUT; break;
    case Status::Code::kPermissionDenied: code = rpc::ErrorCode::PERMISSION_DENIED; break;
    default: break;
  }
  return MakeDtxError(code, s.message());
}

}  // namespace dtx
