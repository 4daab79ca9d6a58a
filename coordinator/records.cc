#include "coordinator/records.h"

#include <cstring>

#include "common/check.h"
#include "common/codec.h"

namespace dtx::coordinator {

RecordType TypeOf(const Record& r) {
  if (std::holds_alternative<EpochRecord>(r)) return RecordType::kEpoch;
  if (std::holds_alternative<DecisionRecord>(r)) return RecordType::kDecision;
  if (std::holds_alternative<SyncRecord>(r)) return RecordType::kSync;
  return RecordType::kEnd;
}

std::string EncodePayload(const Record& r) {
  codec::Writer out;
  if (const auto* e = std::get_if<EpochRecord>(&r)) {
    out.I64(e->epoch);
  } else if (const auto* d = std::get_if<DecisionRecord>(&r)) {
    DTX_CHECK(d->participants.size() <= kDecisionParticipantsMax);
    DTX_CHECK(d->commit || d->participants.empty());
    out.Tx(d->txid);
    out.I64(d->epoch);
    out.U8(d->commit ? 1 : 0);
    out.U32(static_cast<uint32_t>(d->participants.size()));
    for (const std::string& p : d->participants) {
      DTX_CHECK(p.size() <= kParticipantAddressBytesMax);
      out.Bytes(p);
    }
    if (!d->commit) out.U8(static_cast<uint8_t>(d->reason));
    if (d->fingerprint.known()) out.Fp(d->fingerprint);
  } else if (const auto* sync = std::get_if<SyncRecord>(&r)) {
    out.I64(sync->generation);
  } else {
    out.Tx(std::get<EndRecord>(r).txid);
  }
  return out.Take();
}

Result<Record> DecodeRecord(uint8_t type, std::string_view payload) {
  codec::Reader in(payload, "coordinator");
  switch (type) {
    case static_cast<uint8_t>(RecordType::kEpoch): {
      EpochRecord e;
      DTX_RETURN_IF_ERROR(in.I64(&e.epoch));
      DTX_RETURN_IF_ERROR(in.End());
      if (e.epoch < 1) {
        return Status::Corruption("coordinator EPOCH record: epoch " + std::to_string(e.epoch) +
                                  " < 1");
      }
      return Record(e);
    }
    case static_cast<uint8_t>(RecordType::kDecision): {
      DecisionRecord d;
      DTX_RETURN_IF_ERROR(in.Tx(&d.txid));
      DTX_RETURN_IF_ERROR(in.I64(&d.epoch));
      uint8_t decision = 0;
      DTX_RETURN_IF_ERROR(in.U8(&decision));
      if (decision > 1) {
        return Status::Corruption("coordinator DECISION record: unknown decision " +
                                  std::to_string(decision));
      }
      d.commit = decision == 1;
      uint32_t count = 0;
      DTX_RETURN_IF_ERROR(in.U32(&count));
      if (count > kDecisionParticipantsMax) {
        return Status::Corruption("coordinator DECISION record: " + std::to_string(count) +
                                  " participants exceeds " +
                                  std::to_string(kDecisionParticipantsMax));
      }
      d.participants.resize(count);
      for (std::string& p : d.participants) {
        DTX_RETURN_IF_ERROR(in.Bytes(&p, kParticipantAddressBytesMax, "participant address"));
      }
      if (!d.commit) {
        if (count != 0) {
          return Status::Corruption("coordinator DECISION record: an abort names " +
                                    std::to_string(count) + " participants");
        }
        uint8_t reason = 0;
        DTX_RETURN_IF_ERROR(in.U8(&reason));
        if (reason < static_cast<uint8_t>(AbortReason::kConflict) ||
            reason > static_cast<uint8_t>(AbortReason::kCoordinatorFailover)) {
          return Status::Corruption("coordinator DECISION record: unknown abort reason " +
                                    std::to_string(reason));
        }
        d.reason = static_cast<AbortReason>(reason);
      }
      if (in.left() > 0) DTX_RETURN_IF_ERROR(in.Fp(&d.fingerprint));
      DTX_RETURN_IF_ERROR(in.End());
      return Record(std::move(d));
    }
    case static_cast<uint8_t>(RecordType::kEnd): {
      EndRecord e;
      DTX_RETURN_IF_ERROR(in.Tx(&e.txid));
      DTX_RETURN_IF_ERROR(in.End());
      return Record(e);
    }
    case static_cast<uint8_t>(RecordType::kSync): {
      SyncRecord sync;
      DTX_RETURN_IF_ERROR(in.I64(&sync.generation));
      DTX_RETURN_IF_ERROR(in.End());
      return Record(sync);
    }
    default:
      return Status::Corruption("coordinator log: unknown record type " + std::to_string(type));
  }
}

std::string EncodeSkip(const SkipRecord& r) {
  DTX_CHECK(r.lo >= 0 && r.hi > r.lo);
  codec::Writer w;
  w.I64(r.lo);
  w.I64(r.hi);
  return w.Take();
}

Result<SkipRecord> DecodeSkip(std::string_view payload) {
  codec::Reader in(payload, "coordinator SKIP");
  SkipRecord r;
  DTX_RETURN_IF_ERROR(in.I64(&r.lo));
  DTX_RETURN_IF_ERROR(in.I64(&r.hi));
  DTX_RETURN_IF_ERROR(in.End());
  if (r.lo < 0 || r.hi <= r.lo) {
    return Status::Corruption("coordinator SKIP record: epochs (" + std::to_string(r.lo) + ", " +
                              std::to_string(r.hi) + "] are not a range");
  }
  return r;
}

}  // namespace dtx::coordinator
