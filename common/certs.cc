#include "common/certs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <memory>

namespace dtx {
namespace {

// Owners for OpenSSL objects.
struct FreeBio {
  void operator()(BIO* p) const { BIO_free_all(p); }
};
struct FreeX509 {
  void operator()(X509* p) const { X509_free(p); }
};
struct FreePkey {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct FreeBn {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct FreeExt {
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
struct FreeGeneralNames {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
struct FreeStore {
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
};
struct FreeStoreCtx {
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
};
using BioPtr = std::unique_ptr<BIO, FreeBio>;
using X509Ptr = std::unique_ptr<X509, FreeX509>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, FreePkey>;
using BnPtr = std::unique_ptr<BIGNUM, FreeBn>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, FreeExt>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, FreeGeneralNames>;
using StorePtr = std::unique_ptr<X509_STORE, FreeStore>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, FreeStoreCtx>;

constexpr size_t kDnsNameBytesMax = 253;
constexpr size_t kPemFileBytesMax = 64 * 1024;

// "<what>: <OpenSSL's queued errors>", draining the thread's error queue.
Status OpenSslError(std::string_view what) {
  std::string m(what);
  bool first = true;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    m += first ? ": " : "; ";
    m += buf;
    first = false;
  }
  return Status::Internal(m);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status WriteAll(int fd, const std::string& path, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("write " + path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  if (::fsync(fd) != 0) return Status::FromErrno("fsync " + path, errno);
  return Status::OK();
}

// Writes `data` to `path` through a temporary file created with `mode` (so a
// key file is 0600 from its first byte). Without `overwrite` the final name is
// taken with link(), which fails atomically if the file already exists.
Status WriteFileAtomically(const std::string& path, std::string_view data, mode_t mode,
                           bool overwrite) {
  const std::string tmp = path + ".tmp";
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno("unlink " + tmp, errno);
  }
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno("create " + tmp, errno);
  Status s = WriteAll(fd, tmp, data);
  if (::close(fd) != 0 && s.ok()) s = Status::FromErrno("close " + tmp, errno);
  if (s.ok()) {
    if (overwrite) {
      if (::rename(tmp.c_str(), path.c_str()) != 0) s = Status::FromErrno("rename " + tmp, errno);
    } else if (::link(tmp.c_str(), path.c_str()) != 0) {
      s = errno == EEXIST ? Status::InvalidArgument(path + " already exists; not overwriting it")
                          : Status::FromErrno("link " + path, errno);
    }
  }
  ::unlink(tmp.c_str());  // after rename it is gone already; ENOENT is fine
  return s;
}

Status MakeDirectory(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return Status::OK();
  return Status::FromErrno("create directory " + dir, errno);
}

Result<std::string> ReadSmallFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Status::FromErrno("open " + path, errno);
  std::string data;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    data.append(buf, n);
    if (data.size() > kPemFileBytesMax) {
      std::fclose(f);
      return Status::InvalidArgument(path + " is larger than a certificate or key can be");
    }
  }
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status::IOError("read " + path);
  return data;
}

Result<X509Ptr> ReadCertificate(const std::string& path) {
  Result<std::string> pem = ReadSmallFile(path);
  if (!pem.ok()) return pem.status();
  BioPtr bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ERR_clear_error();
    return Status::InvalidArgument(path + " holds no PEM certificate");
  }
  return cert;
}

Result<PkeyPtr> ReadPrivateKey(const std::string& path) {
  Result<std::string> pem = ReadSmallFile(path);
  if (!pem.ok()) return pem.status();
  BioPtr bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    return Status::InvalidArgument(path + " holds no unencrypted PEM private key");
  }
  return key;
}

Result<PkeyPtr> GenerateKey(KeyType type) {
  EVP_PKEY* key = nullptr;
  switch (type) {
    case KeyType::kEcdsaP256: key = EVP_EC_gen("P-256"); break;
    case KeyType::kRsa2048: key = EVP_RSA_gen(2048); break;
  }
  if (key == nullptr) return OpenSslError("generating a key");
  return PkeyPtr(key);
}

// A positive serial of 128 random bits (RFC 5280: at most 20 octets, and
// unpredictable so that certificates cannot be forged by collision).
Status SetRandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return OpenSslError("RAND_bytes");
  bytes[0] &= 0x7f;  // positive even in a DER INTEGER's sign bit
  bytes[0] |= 0x40;  // never zero, always 16 octets
  BnPtr bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
  if (!bn || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return OpenSslError("setting the serial number");
  }
  return Status::OK();
}

Status SetValidity(X509* cert, const CertOptions& options, int default_days) {
  int64_t not_before;
  int64_t not_after;
  if (options.not_before_unix.has_value() != options.not_after_unix.has_value()) {
    return Status::InvalidArgument("give both not_before and not_after, or neither");
  }
  if (options.not_before_unix) {
    not_before = *options.not_before_unix;
    not_after = *options.not_after_unix;
    if (not_after <= not_before) {
      return Status::InvalidArgument("not_after must be later than not_before");
    }
  } else {
    const int days = options.validity_days == 0 ? default_days : options.validity_days;
    if (days < 1 || days > kValidityDaysMax) {
      return Status::InvalidArgument("validity must be 1.." + std::to_string(kValidityDaysMax) +
                                     " days, not " + std::to_string(days));
    }
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    not_before = now - kNotBeforeBackdateSeconds;
    not_after = now + int64_t{days} * 86400;
  }
  if (ASN1_TIME_set(X509_getm_notBefore(cert), static_cast<time_t>(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), static_cast<time_t>(not_after)) == nullptr) {
    return OpenSslError("setting the validity period");
  }
  return Status::OK();
}

Status AddNameEntry(X509_NAME* name, const char* field, const std::string& value) {
  if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                 0) != 1) {
    return OpenSslError(std::string("setting subject ") + field);
  }
  return Status::OK();
}

// Adds an extension written in OpenSSL's configuration syntax. Only constant
// strings go through here; names from users go through AddSubjectAltNames.
Status AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslError(std::string("adding extension ") + OBJ_nid2sn(nid) + " = " + value);
  }
  return Status::OK();
}

Status CheckDnsName(const std::string& name) {
  if (name.empty() || name.size() > kDnsNameBytesMax) {
    return Status::InvalidArgument("DNS name '" + name + "' must be 1.." +
                                   std::to_string(kDnsNameBytesMax) + " bytes");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.';
    if (!ok) {
      return Status::InvalidArgument("DNS name '" + name +
                                     "' may hold only letters, digits, '-' and '.'");
    }
  }
  return Status::OK();
}

// subjectAltName = DNS:name, the extra DNS names and IP addresses; built from
// GENERAL_NAME values so that no user string is parsed as configuration.
Status AddSubjectAltNames(X509* cert, const std::string& name, const CertOptions& options) {
  if (options.extra_dns_names.size() + options.extra_ip_addresses.size() >
      kExtraSubjectAltNamesMax) {
    return Status::InvalidArgument("at most " + std::to_string(kExtraSubjectAltNamesMax) +
                                   " extra subject alternative names");
  }
  GeneralNamesPtr names(GENERAL_NAMES_new());
  if (!names) return OpenSslError("GENERAL_NAMES_new");
  auto add_dns = [&](const std::string& dns) -> Status {
    DTX_RETURN_IF_ERROR(CheckDnsName(dns));
    ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
    if (ia5 == nullptr || ASN1_STRING_set(ia5, dns.data(), static_cast<int>(dns.size())) != 1) {
      ASN1_IA5STRING_free(ia5);
      return OpenSslError("ASN1_STRING_set");
    }
    GENERAL_NAME* gn = GENERAL_NAME_new();
    if (gn == nullptr) {
      ASN1_IA5STRING_free(ia5);
      return OpenSslError("GENERAL_NAME_new");
    }
    GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
    if (sk_GENERAL_NAME_push(names.get(), gn) == 0) {
      GENERAL_NAME_free(gn);
      return OpenSslError("sk_GENERAL_NAME_push");
    }
    return Status::OK();
  };
  DTX_RETURN_IF_ERROR(add_dns(name));
  for (const std::string& dns : options.extra_dns_names) DTX_RETURN_IF_ERROR(add_dns(dns));
  for (const std::string& ip : options.extra_ip_addresses) {
    ASN1_OCTET_STRING* octets = a2i_IPADDRESS(ip.c_str());
    if (octets == nullptr) {
      ERR_clear_error();
      return Status::InvalidArgument("'" + ip + "' is not an IPv4 or IPv6 address");
    }
    GENERAL_NAME* gn = GENERAL_NAME_new();
    if (gn == nullptr) {
      ASN1_OCTET_STRING_free(octets);
      return OpenSslError("GENERAL_NAME_new");
    }
    GENERAL_NAME_set0_value(gn, GEN_IPADD, octets);
    if (sk_GENERAL_NAME_push(names.get(), gn) == 0) {
      GENERAL_NAME_free(gn);
      return OpenSslError("sk_GENERAL_NAME_push");
    }
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return OpenSslError("adding subjectAltName");
  }
  return Status::OK();
}

Result<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return OpenSslError("PEM_write_bio_X509");
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("PEM_write_bio_PrivateKey");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// Writes the key (0600, refused if present without overwrite) and then the
// certificate (0644). The key goes first so that a refused key leaves the
// existing pair untouched.
Status WritePair(const std::string& crt_path, const std::string& key_path, X509* cert,
                 EVP_PKEY* key, bool overwrite) {
  Result<std::string> key_pem = KeyToPem(key);
  if (!key_pem.ok()) return key_pem.status();
  Result<std::string> crt_pem = CertToPem(cert);
  if (!crt_pem.ok()) return crt_pem.status();
  DTX_RETURN_IF_ERROR(WriteFileAtomically(key_path, *key_pem, 0600, overwrite));
  return WriteFileAtomically(crt_path, *crt_pem, 0644, /*overwrite=*/true);
}

Status RefuseExistingKey(const std::string& key_path, const CertOptions& options) {
  if (!options.overwrite && FileExists(key_path)) {
    return Status::InvalidArgument(key_path + " already exists; not overwriting a key in use");
  }
  return Status::OK();
}

std::string Hex(const unsigned char* p, size_t n) {
  static const char kDigits[] = "0123456789ABCDEF";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

std::string NameEntry(const X509_NAME* name, int nid) {
  int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0) return "";
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, s);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

Result<int64_t> TimeToUnix(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return Status::InvalidArgument("unreadable certificate time");
  return static_cast<int64_t>(timegm(&tm));
}

std::string DescribeKey(EVP_PKEY* key) {
  if (key == nullptr) return "unknown";
  const int bits = EVP_PKEY_get_bits(key);
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {0};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof group, &len) == 1) {
      if (std::string_view(group) == "prime256v1") return "EC P-256";
      return std::string("EC ") + group;
    }
    return "EC";
  }
  if (EVP_PKEY_is_a(key, "RSA")) return "RSA " + std::to_string(bits);
  return EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "unknown";
}

// "127.0.0.1" or "::1" from a subjectAltName iPAddress (4 or 16 octets).
std::string FormatIpAddress(const ASN1_OCTET_STRING* octets) {
  const int len = ASN1_STRING_length(octets);
  const int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
  char text[INET6_ADDRSTRLEN] = {0};
  if (family < 0 ||
      ::inet_ntop(family, ASN1_STRING_get0_data(octets), text, sizeof text) == nullptr) {
    return "(malformed address)";
  }
  return text;
}

}  // namespace

Status ValidatePrincipalName(std::string_view name) {
  if (name.empty() || name.size() > kPrincipalNameBytesMax) {
    return Status::InvalidArgument("name '" + std::string(name) + "' must be 1.." +
                                   std::to_string(kPrincipalNameBytesMax) + " characters");
  }
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return Status::InvalidArgument("name '" + std::string(name) +
                                     "' may hold only lower-case letters, digits and '-'");
    }
  }
  return Status::OK();
}

std::string CaCertPath(const std::string& dir) { return dir + "/ca.crt"; }
std::string CaKeyPath(const std::string& dir) { return dir + "/ca.key"; }
std::string CertPath(const std::string& dir, std::string_view name) {
  return dir + "/" + std::string(name) + ".crt";
}
std::string KeyPath(const std::string& dir, std::string_view name) {
  return dir + "/" + std::string(name) + ".key";
}

Status CreateCa(const std::string& dir, const CertOptions& options) {
  DTX_RETURN_IF_ERROR(MakeDirectory(dir));
  DTX_RETURN_IF_ERROR(RefuseExistingKey(CaKeyPath(dir), options));
  Result<PkeyPtr> key = GenerateKey(options.key_type);
  if (!key.ok()) return key.status();
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return OpenSslError("X509_new");
  DTX_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  DTX_RETURN_IF_ERROR(SetValidity(cert.get(), options, kCaValidityDays));
  // A random suffix tells two clusters' CAs apart in error messages ("unable
  // to get local issuer certificate" rather than a signature failure).
  unsigned char tag[4];
  if (RAND_bytes(tag, sizeof tag) != 1) return OpenSslError("RAND_bytes");
  X509_NAME* subject = X509_get_subject_name(cert.get());
  DTX_RETURN_IF_ERROR(AddNameEntry(subject, "O", "dtx"));
  DTX_RETURN_IF_ERROR(AddNameEntry(subject, "CN", "dtx cluster CA " + Hex(tag, sizeof tag)));
  if (X509_set_issuer_name(cert.get(), subject) != 1 ||
      X509_set_pubkey(cert.get(), key->get()) != 1) {
    return OpenSslError("setting issuer and key");
  }
  DTX_RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  DTX_RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  DTX_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key->get(), EVP_sha256()) == 0) return OpenSslError("signing the CA");
  return WritePair(CaCertPath(dir), CaKeyPath(dir), cert.get(), key->get(), options.overwrite);
}

Status CreateCert(const std::string& dir, PrincipalKind kind, const std::string& name,
                  const CertOptions& options) {
  DTX_RETURN_IF_ERROR(ValidatePrincipalName(name));
  if (kind == PrincipalKind::kNone) {
    return Status::InvalidArgument("a certificate needs a principal kind");
  }
  if (!FileExists(CaCertPath(dir)) || !FileExists(CaKeyPath(dir))) {
    return Status::NotFound("no CA in " + dir + " (" + CaCertPath(dir) + " and " + CaKeyPath(dir) +
                            " are needed)");
  }
  DTX_RETURN_IF_ERROR(RefuseExistingKey(KeyPath(dir, name), options));
  Result<X509Ptr> ca_cert = ReadCertificate(CaCertPath(dir));
  if (!ca_cert.ok()) return ca_cert.status();
  Result<PkeyPtr> ca_key = ReadPrivateKey(CaKeyPath(dir));
  if (!ca_key.ok()) return ca_key.status();
  if (X509_check_private_key(ca_cert->get(), ca_key->get()) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument(CaKeyPath(dir) + " is not the key of " + CaCertPath(dir));
  }

  Result<PkeyPtr> key = GenerateKey(options.key_type);
  if (!key.ok()) return key.status();
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return OpenSslError("X509_new");
  DTX_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  DTX_RETURN_IF_ERROR(SetValidity(cert.get(), options, kLeafValidityDays));
  X509_NAME* subject = X509_get_subject_name(cert.get());
  DTX_RETURN_IF_ERROR(AddNameEntry(subject, "O", "dtx"));
  DTX_RETURN_IF_ERROR(AddNameEntry(subject, "OU", std::string(PrincipalKindName(kind))));
  DTX_RETURN_IF_ERROR(AddNameEntry(subject, "CN", name));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert->get())) != 1 ||
      X509_set_pubkey(cert.get(), key->get()) != 1) {
    return OpenSslError("setting issuer and key");
  }
  const bool node = kind == PrincipalKind::kCoordinator || kind == PrincipalKind::kParticipant;
  X509* ca = ca_cert->get();
  DTX_RETURN_IF_ERROR(AddExtension(cert.get(), ca, NID_basic_constraints, "critical,CA:FALSE"));
  // TLS 1.3 uses the key only to sign; RSA key exchange is gone.
  DTX_RETURN_IF_ERROR(AddExtension(cert.get(), ca, NID_key_usage, "critical,digitalSignature"));
  DTX_RETURN_IF_ERROR(AddExtension(cert.get(), ca, NID_ext_key_usage,
                                   node ? "serverAuth,clientAuth" : "clientAuth"));
  DTX_RETURN_IF_ERROR(AddExtension(cert.get(), ca, NID_subject_key_identifier, "hash"));
  DTX_RETURN_IF_ERROR(AddExtension(cert.get(), ca, NID_authority_key_identifier, "keyid:always"));
  DTX_RETURN_IF_ERROR(AddSubjectAltNames(cert.get(), name, options));
  if (X509_sign(cert.get(), ca_key->get(), EVP_sha256()) == 0) {
    return OpenSslError("signing the certificate");
  }
  return WritePair(CertPath(dir, name), KeyPath(dir, name), cert.get(), key->get(),
                   options.overwrite);
}

Result<CertInfo> ReadCertInfo(const std::string& path) {
  Result<X509Ptr> cert = ReadCertificate(path);
  if (!cert.ok()) return cert.status();
  X509* x = cert->get();
  CertInfo info;
  info.common_name = NameEntry(X509_get_subject_name(x), NID_commonName);
  info.organizational_unit = NameEntry(X509_get_subject_name(x), NID_organizationalUnitName);
  info.kind = ParsePrincipalKind(info.organizational_unit);
  info.issuer_common_name = NameEntry(X509_get_issuer_name(x), NID_commonName);
  info.is_ca = X509_check_ca(x) != 0;
  Result<int64_t> nb = TimeToUnix(X509_get0_notBefore(x));
  if (!nb.ok()) return nb.status();
  Result<int64_t> na = TimeToUnix(X509_get0_notAfter(x));
  if (!na.ok()) return na.status();
  info.not_before_unix = *nb;
  info.not_after_unix = *na;

  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
      if (gn->type == GEN_DNS) {
        const ASN1_IA5STRING* s = gn->d.dNSName;
        info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                    static_cast<size_t>(ASN1_STRING_length(s)));
      } else if (gn->type == GEN_IPADD) {
        info.ip_addresses.push_back(FormatIpAddress(gn->d.iPAddress));
      }
    }
    GENERAL_NAMES_free(sans);
  }
  const uint32_t xku = X509_get_extended_key_usage(x);
  if (xku != UINT32_MAX) {  // UINT32_MAX: no extendedKeyUsage extension (any use)
    if (xku & XKU_SSL_SERVER) info.extended_key_usages.push_back("serverAuth");
    if (xku & XKU_SSL_CLIENT) info.extended_key_usages.push_back("clientAuth");
  }
  BnPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr));
  if (serial) {
    std::vector<unsigned char> bytes(static_cast<size_t>(BN_num_bytes(serial.get())));
    BN_bn2bin(serial.get(), bytes.data());
    info.serial_hex = Hex(bytes.data(), bytes.size());
  }
  info.key_type = DescribeKey(X509_get0_pubkey(x));
  ERR_clear_error();
  return info;
}

Status VerifyCert(const std::string& ca_path, const std::string& cert_path) {
  Result<X509Ptr> ca = ReadCertificate(ca_path);
  if (!ca.ok()) return ca.status();
  Result<X509Ptr> cert = ReadCertificate(cert_path);
  if (!cert.ok()) return cert.status();
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca->get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr) != 1) {
    return OpenSslError("setting up verification");
  }
  // As a TLS server checks a client: the purpose needs the clientAuth usage
  // that every dtx certificate has.
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return Status::PermissionDenied(cert_path + " does not verify against " + ca_path + ": " +
                                    X509_verify_cert_error_string(err));
  }
  if (X509_check_ca(cert->get()) != 0) {
    return Status::PermissionDenied(cert_path + " is a CA certificate, not a principal's");
  }
  return Status::OK();
}

}  // namespace dtx
