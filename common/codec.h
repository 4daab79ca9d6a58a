// Little-endian binary codec for WAL record payloads and checkpoints: a
// Writer that appends fixed-width integers and length-prefixed bytes, and a
// bounds-checked Reader that never trusts a length it read (a length past its
// named maximum, or past the end of the input, is Corruption, never an
// allocation). Grammars that use it: participant/records.md,
// coordinator/log_format.md.
//
// Thread-safety: none; each object belongs to one thread. A Reader borrows
// its input: the bytes must outlive it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/check.h"
#include "common/status.h"
#include "common/types.h"

namespace dtx::codec {

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  // u32 length, then the bytes.
  void Bytes(std::string_view s) {
    DTX_CHECK(s.size() <= UINT32_MAX);
    U32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void Tx(const TxId& t) {
    U64(t.hi);
    U64(t.lo);
  }
  // kFingerprintBytes: hi then lo.
  void Fp(const Fingerprint& f) {
    U64(f.hi);
    U64(f.lo);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  // `what` names the record in error messages: "<what> record: <why>".
  Reader(std::string_view in, const char* what) : in_(in), what_(what) {}

  Status U8(uint8_t* v) {
    DTX_RETURN_IF_ERROR(Need(1, "u8"));
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return Status::OK();
  }
  Status U32(uint32_t* v) {
    DTX_RETURN_IF_ERROR(Need(4, "u32"));
    uint32_t x = 0;
    for (int i = 0; i < 4; ++i) x |= static_cast<uint32_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    *v = x;
    in_.remove_prefix(4);
    return Status::OK();
  }
  Status U64(uint64_t* v) {
    DTX_RETURN_IF_ERROR(Need(8, "u64"));
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
  // A u32 length (at most `bytes_max`) and that many bytes.
  Status Bytes(std::string* s, size_t bytes_max, const char* field) {
    uint32_t n = 0;
    DTX_RETURN_IF_ERROR(U32(&n));
    if (n > bytes_max) {
      return Bad(std::string(field) + " length " + std::to_string(n) + " exceeds " +
                 std::to_string(bytes_max));
    }
    DTX_RETURN_IF_ERROR(Need(n, field));
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return Status::OK();
  }
  Status Tx(TxId* t) {
    DTX_RETURN_IF_ERROR(U64(&t->hi));
    return U64(&t->lo);
  }
  // A fingerprint as written (Corruption for {0, 0}: "not known" is never written).
  Status Fp(Fingerprint* f) {
    DTX_RETURN_IF_ERROR(U64(&f->hi));
    DTX_RETURN_IF_ERROR(U64(&f->lo));
    if (!f->known()) return Bad("zero fingerprint");
    return Status::OK();
  }
  size_t left() const { return in_.size(); }
  // Corruption unless every byte was consumed.
  Status End() const {
    if (!in_.empty()) return Bad(std::to_string(in_.size()) + " trailing bytes");
    return Status::OK();
  }
  Status Bad(const std::string& why) const {
    return Status::Corruption(std::string(what_) + " record: " + why);
  }

 private:
  Status Need(size_t n, const char* field) const {
    if (in_.size() < n) {
      return Bad(std::string("truncated at ") + field + " (need " + std::to_string(n) + ", have " +
                 std::to_string(in_.size()) + ")");
    }
    return Status::OK();
  }
  std::string_view in_;
  const char* what_;
};

}  // namespace dtx::codec
