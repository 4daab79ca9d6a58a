// Cluster certificates: a CA and the certificates it signs for nodes, the
// operator and clients, made with the OpenSSL 3 library (no `openssl` binary).
// `dtxctl certs ...` and `dtxctl cluster up` use it; the TLS transport
// (common/tls.h) and the handlers read the identity it writes.
//
// Layout of a certificate directory DIR:
//   DIR/ca.crt, DIR/ca.key        the cluster CA (self-signed)
//   DIR/NAME.crt, DIR/NAME.key    one principal, signed by the CA
// Certificates are PEM X.509 v3, keys unencrypted PKCS#8 PEM. Key files are
// created with mode 0600 (never wider, not even for an instant) and an
// existing key is never replaced unless CertOptions::overwrite says so.
//
// A principal's certificate carries its identity (common/identity.h):
//   subject CN = NAME ("participant-2", "coordinator-0", "admin", "bench"),
//   subject OU = PrincipalKindName(kind) ("participant", "coordinator", ...),
//   subjectAltName DNS:NAME plus CertOptions' extra DNS names and IPs,
//   basicConstraints CA:FALSE, extendedKeyUsage serverAuth+clientAuth for
//   nodes (they serve and dial), clientAuth only for clients and the admin,
//   a random 128-bit serial.
//
// Stateless functions; thread-safe (OpenSSL 3 initializes itself once).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/identity.h"
#include "common/status.h"

namespace dtx {

// Default lifetimes. 825 days is the longest leaf lifetime that common TLS
// stacks accept without complaint; the CA outlives the certificates it signs.
inline constexpr int kCaValidityDays = 3650;
inline constexpr int kLeafValidityDays = 825;
inline constexpr int kValidityDaysMax = 36500;
// Certificates start one hour in the past so that a host whose clock is a
// little behind the one that issued them still accepts them.
inline constexpr int64_t kNotBeforeBackdateSeconds = 3600;
// A principal name: [a-z0-9-]{1,64}. 64 is X.509's limit for a common name;
// the restricted alphabet keeps names safe in file names, DNS names and logs.
inline constexpr size_t kPrincipalNameBytesMax = 64;
inline constexpr size_t kExtraSubjectAltNamesMax = 32;

enum class KeyType {
  // The default. Every TLS 1.3 stack dtx talks to (OpenSSL, Python's ssl)
  // supports it; signing (what a handshake costs the server) is about ten
  // times faster than RSA-2048, and keys and certificates are small. Ed25519
  // is not chosen because some TLS clients still lack Ed25519 certificates.
  kEcdsaP256,
  // For tools that cannot handle EC keys.
  kRsa2048,
};

struct CertOptions {
  // Lifetime from now; 0 means kCaValidityDays for a CA, kLeafValidityDays
  // otherwise. Ignored when not_before/not_after are given.
  int validity_days = 0;
  // Explicit validity window in Unix seconds, both or neither: tests use it to
  // make an expired or a not-yet-valid certificate.
  std::optional<int64_t> not_before_unix;
  std::optional<int64_t> not_after_unix;
  // Extra subjectAltNames beyond DNS:NAME (e.g. the host a node listens on).
  std::vector<std::string> extra_dns_names;
  std::vector<std::string> extra_ip_addresses;  // "127.0.0.1", "::1"
  KeyType key_type = KeyType::kEcdsaP256;
  // Replace an existing key file (and its certificate). Off by default: a key
  // already in use is not thrown away by a repeated command.
  bool overwrite = false;
};

// What a certificate says about its holder; read back by ReadCertInfo.
struct CertInfo {
  std::string common_name;                    // subject CN
  std::string organizational_unit;            // subject OU ("" if none)
  PrincipalKind kind = PrincipalKind::kNone;  // ParsePrincipalKind(OU)
  std::string issuer_common_name;
  bool is_ca = false;
  int64_t not_before_unix = 0;
  int64_t not_after_unix = 0;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  std::vector<std::string> extended_key_usages;  // "serverAuth", "clientAuth"
  std::string serial_hex;                        // upper-case hex, no separators
  std::string key_type;                          // "EC P-256", "RSA 2048", ...

  bool ExpiredAt(int64_t unix_seconds) const { return unix_seconds > not_after_unix; }
  bool NotYetValidAt(int64_t unix_seconds) const { return unix_seconds < not_before_unix; }
};

// OK if `name` matches [a-z0-9-]{1,64}; InvalidArgument saying why otherwise.
Status ValidatePrincipalName(std::string_view name);

// File names inside a certificate directory.
std::string CaCertPath(const std::string& dir);
std::string CaKeyPath(const std::string& dir);
std::string CertPath(const std::string& dir, std::string_view name);
std::string KeyPath(const std::string& dir, std::string_view name);

// Writes dir/ca.crt and dir/ca.key, creating `dir` (mode 0700) if needed.
// InvalidArgument if dir/ca.key exists and !options.overwrite.
Status CreateCa(const std::string& dir, const CertOptions& options);

// Writes dir/NAME.crt and dir/NAME.key, signed by dir/ca.{crt,key}.
// NotFound if the directory has no CA; InvalidArgument for a bad name, kind
// kNone, a bad extra SAN, or an existing dir/NAME.key without overwrite.
Status CreateCert(const std::string& dir, PrincipalKind kind, const std::string& name,
                  const CertOptions& options);

// Reads a PEM certificate. IOError if unreadable, InvalidArgument if the file
// holds no PEM certificate.
Result<CertInfo> ReadCertInfo(const std::string& path);

// Checks `cert_path` against the CA certificate `ca_path` as a TLS peer would
// (chain, signature, validity period at the current time, not a CA itself).
// PermissionDenied with OpenSSL's reason ("certificate has expired", "unable
// to get local issuer certificate", ...) when it does not verify.
Status VerifyCert(const std::string& ca_path, const std::string& cert_path);

}  // namespace dtx
