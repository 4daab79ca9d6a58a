#include "coordinator/records.h"

#include <cstring>

#include "common/check.h"

namespace dtx::coordinator {
namespace {

void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutBytes(std::string* out, std::string_view b) {
  DTX_CHECK(b.size() <= UINT32_MAX);
  PutU32(out, static_cast<uint32_t>(b.size()));
  out->append(b);
}

void PutTxId(std::string* out, const TxId& t) {
  PutU64(out, t.hi);
  PutU64(out, t.lo);
}

// Bounds-checked little-endian reader over a payload.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  Status U8(uint8_t* v) {
    if (in_.size() < 1) return Short("u8");
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return Status::OK();
  }
  Status U32(uint32_t* v) {
    if (in_.size() < 4) return Short("u32");
    uint32_t x = 0;
    for (int i = 0; i < 4; ++i) x |= static_cast<uint32_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    *v = x;
    in_.remove_prefix(4);
    return Status::OK();
  }
  Status U64(uint64_t* v) {
    if (in_.size() < 8) return Short("u64");
    uint64_t x = 0;
    for (int i = 0; i < 8; ++i) x |= static_cast<uint64_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    *v = x;
    in_.remove_prefix(8);
    return Status::OK();
  }
  Status I64(int64_t* v) {
    uint64_t x = 0;
    DTX_RETURN_IF_ERROR(U64(&x));
    *v = static_cast<int64_t>(x);
    return Status::OK();
  }
  Status Bytes(std::string* v, uint32_t max_bytes) {
    uint32_t n = 0;
    DTX_RETURN_IF_ERROR(U32(&n));
    if (n > max_bytes) {
      return Status::Corruption("coordinator record: string of " + std::to_string(n) +
                                " bytes exceeds " + std::to_string(max_bytes));
    }
    if (in_.size() < n) return Short("bytes");
    v->assign(in_.data(), n);
    in_.remove_prefix(n);
    return Status::OK();
  }
  Status TxIdField(TxId* t) {
    DTX_RETURN_IF_ERROR(U64(&t->hi));
    return U64(&t->lo);
  }
  Status Done() const {
    if (!in_.empty()) {
      return Status::Corruption("coordinator record: " + std::to_string(in_.size()) +
                                " trailing bytes");
    }
    return Status::OK();
  }

 private:
  static Status Short(const char* what) {
    return Status::Corruption(std::string("coordinator record: truncated at ") + what);
  }
  std::string_view in_;
};

}  // namespace

RecordType TypeOf(const Record& r) {
  if (std::holds_alternative<EpochRecord>(r)) return RecordType::kEpoch;
  if (std::holds_alternative<DecisionRecord>(r)) return RecordType::kDecision;
  if (std::holds_alternative<SyncRecord>(r)) return RecordType::kSync;
  return RecordType::kEnd;
}

std::string EncodePayload(const Record& r) {
  std::string out;
  if (const auto* e = std::get_if<EpochRecord>(&r)) {
    PutU64(&out, static_cast<uint64_t>(e->epoch));
  } else if (const auto* d = std::get_if<DecisionRecord>(&r)) {
    DTX_CHECK(d->commit);
    DTX_CHECK(d->participants.size() <= kDecisionParticipantsMax);
    PutTxId(&out, d->txid);
    PutU64(&out, static_cast<uint64_t>(d->epoch));
    PutU8(&out, d->commit ? 1 : 0);
    PutU32(&out, static_cast<uint32_t>(d->participants.size()));
    for (const std::string& p : d->participants) {
      DTX_CHECK(p.size() <= kParticipantAddressBytesMax);
      PutBytes(&out, p);
    }
  } else if (const auto* sync = std::get_if<SyncRecord>(&r)) {
    PutU64(&out, static_cast<uint64_t>(sync->generation));
  } else {
    PutTxId(&out, std::get<EndRecord>(r).txid);
  }
  return out;
}

Result<Record> DecodeRecord(uint8_t type, std::string_view payload) {
  Reader in(payload);
  switch (type) {
    case static_cast<uint8_t>(RecordType::kEpoch): {
      EpochRecord e;
      DTX_RETURN_IF_ERROR(in.I64(&e.epoch));
      DTX_RETURN_IF_ERROR(in.Done());
      if (e.epoch < 1) {
        return Status::Corruption("coordinator EPOCH record: epoch " + std::to_string(e.epoch) +
                                  " < 1");
      }
      return Record(e);
    }
    case static_cast<uint8_t>(RecordType::kDecision): {
      DecisionRecord d;
      DTX_RETURN_IF_ERROR(in.TxIdField(&d.txid));
      DTX_RETURN_IF_ERROR(in.I64(&d.epoch));
      uint8_t decision = 0;
      DTX_RETURN_IF_ERROR(in.U8(&decision));
      if (decision != 1) {
        return Status::Corruption("coordinator DECISION record: unknown decision " +
                                  std::to_string(decision));
      }
      d.commit = true;
      uint32_t count = 0;
      DTX_RETURN_IF_ERROR(in.U32(&count));
      if (count > kDecisionParticipantsMax) {
        return Status::Corruption("coordinator DECISION record: " + std::to_string(count) +
                                  " participants exceeds " +
                                  std::to_string(kDecisionParticipantsMax));
      }
      d.participants.resize(count);
      for (std::string& p : d.participants) {
        DTX_RETURN_IF_ERROR(in.Bytes(&p, kParticipantAddressBytesMax));
      }
      DTX_RETURN_IF_ERROR(in.Done());
      return Record(std::move(d));
    }
    case static_cast<uint8_t>(RecordType::kEnd): {
      EndRecord e;
      DTX_RETURN_IF_ERROR(in.TxIdField(&e.txid));
      DTX_RETURN_IF_ERROR(in.Done());
      return Record(e);
    }
    case static_cast<uint8_t>(RecordType::kSync): {
      SyncRecord sync;
      DTX_RETURN_IF_ERROR(in.I64(&sync.generation));
      DTX_RETURN_IF_ERROR(in.Done());
      return Record(sync);
    }
    default:
      return Status::Corruption("coordinator log: unknown record type " + std::to_string(type));
  }
}

}  // namespace dtx::coordinator
