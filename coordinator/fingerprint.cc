#include "coordinator/fingerprint.h"

#include <openssl/evp.h>

#include <algorithm>
#include <string_view>

#include "common/check.h"
#include "common/codec.h"

namespace dtx::coordinator {
namespace {

// Changes whenever the canonical form does: fingerprints of two forms never
// compare equal by accident.
constexpr std::string_view kDomain = "dtx transaction fingerprint v1";

}  // namespace

Fingerprint TxFingerprint(const std::vector<ReadItem>& reads,
                          const std::vector<WriteItem>& writes) {
  std::vector<const ReadItem*> r;
  r.reserve(reads.size());
  for (const ReadItem& x : reads) r.push_back(&x);
  // Ties (a key listed twice, which Validate refuses later) still sort one way.
  std::sort(r.begin(), r.end(), [](const ReadItem* a, const ReadItem* b) {
    return a->key != b->key ? a->key < b->key : a->version < b->version;
  });
  std::vector<const WriteItem*> w;
  w.reserve(writes.size());
  for (const WriteItem& x : writes) w.push_back(&x);
  std::sort(w.begin(), w.end(), [](const WriteItem* a, const WriteItem* b) {
    return a->key != b->key ? a->key < b->key : a->value < b->value;
  });

  codec::Writer out;
  out.Bytes(kDomain);
  out.U64(r.size());
  for (const ReadItem* x : r) {
    out.Bytes(x->key);
    out.I64(x->version);
  }
  out.U64(w.size());
  for (const WriteItem* x : w) {
    out.Bytes(x->key);
    out.U8(x->value.has_value() ? 1 : 0);
    if (x->value.has_value()) out.Bytes(*x->value);
  }
  const std::string canonical = out.Take();

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  // A failure here is a broken libcrypto, not an operating error.
  DTX_CHECK(EVP_Digest(canonical.data(), canonical.size(), digest, &digest_len, EVP_sha256(),
                       nullptr) == 1);
  DTX_CHECK(digest_len >= kFingerprintBytes);
  Fingerprint f;
  for (size_t i = 0; i < 8; ++i) {
    f.hi = (f.hi << 8) | digest[i];
    f.lo = (f.lo << 8) | digest[8 + i];
  }
  if (!f.known()) f.lo = 1;  // {0, 0} means "not known" (common/types.h)
  return f;
}

}  // namespace dtx::coordinator
