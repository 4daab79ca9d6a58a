#include "coordinator/fingerprint.h"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>
#include <string_view>

#include "common/check.h"
#include "common/codec.h"

namespace dtx::coordinator {
namespace {

// Changes whenever the canonical form does: fingerprints of two forms never
// compare equal by accident.
constexpr std::string_view kDomain = "dtx transaction fingerprint v1";

// SHA-256, fetched once: EVP_sha256() in EVP_Digest makes OpenSSL 3 look the
// algorithm up by name on every call, which cost as much as the hash itself
// (the coordinator hashes every Commit on its loop thread). Never freed.
const EVP_MD* Sha256() {
  static EVP_MD* const md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA2-256", nullptr);
    DTX_CHECK_MSG(m != nullptr, "libcrypto has no SHA2-256");
    return m;
  }();
  return md;
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

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
  // One context per thread, reset by each init. A failure here is a broken
  // libcrypto, not an operating error.
  thread_local const std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  DTX_CHECK(ctx != nullptr);
  DTX_CHECK(EVP_DigestInit_ex2(ctx.get(), Sha256(), nullptr) == 1);
  DTX_CHECK(EVP_DigestUpdate(ctx.get(), canonical.data(), canonical.size()) == 1);
  DTX_CHECK(EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) == 1);
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
