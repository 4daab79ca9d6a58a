// common/certs.h: the files and their modes, what the certificates say, and
// that they verify against their CA (and only against it) as TLS would check
// them, with OpenSSL's X509_verify_cert.
#include "common/certs.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace dtx {
namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "dtx-certs-XXXXXX";
    DTX_CHECK(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

mode_t FileMode(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

X509* LoadCert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return x;
}

// X509_verify_cert against a store that trusts only `ca_path`; returns the
// X509_V_ERR_* code (X509_V_OK when it verifies). Independent of VerifyCert so
// that both are checked.
int VerifyWithStore(const std::string& ca_path, const std::string& cert_path) {
  X509* ca = LoadCert(ca_path);
  X509* cert = LoadCert(cert_path);
  EXPECT_NE(ca, nullptr);
  EXPECT_NE(cert, nullptr);
  if (ca == nullptr || cert == nullptr) return -1;
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert, nullptr);
  const int rc = X509_verify_cert(ctx);
  const int err = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(cert);
  X509_free(ca);
  return rc == 1 ? X509_V_OK : err;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

class CertsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(CreateCa(dir_.path(), CertOptions{}).ok()); }
  TempDir dir_;
};

TEST_F(CertsTest, CaFilesExistWithAPrivateKey) {
  const std::string& d = dir_.path();
  EXPECT_EQ(FileMode(CaKeyPath(d)), 0600u);
  EXPECT_EQ(FileMode(CaCertPath(d)), 0644u);
  EXPECT_NE(ReadFile(CaKeyPath(d)).find("-----BEGIN PRIVATE KEY-----"), std::string::npos);
  Result<CertInfo> info = ReadCertInfo(CaCertPath(d));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_TRUE(info->is_ca);
  EXPECT_EQ(info->common_name, info->issuer_common_name);  // self-signed
  EXPECT_EQ(info->key_type, "EC P-256");
  const int64_t now = std::time(nullptr);
  EXPECT_NEAR(info->not_after_unix - now, int64_t{kCaValidityDays} * 86400, 120);
}

TEST_F(CertsTest, KeyIsPrivateEvenUnderAPermissiveUmask) {
  const mode_t old = ::umask(0);
  Status s = CreateCert(dir_.path(), PrincipalKind::kClient, "bench", CertOptions{});
  ::umask(old);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(FileMode(KeyPath(dir_.path(), "bench")), 0600u);
}

TEST_F(CertsTest, NodeCertificateVerifiesAndNamesTheNodeAndItsRole) {
  const std::string& d = dir_.path();
  CertOptions o;
  o.extra_dns_names = {"db1.example.com"};
  o.extra_ip_addresses = {"127.0.0.1", "::1"};
  Status s = CreateCert(d, PrincipalKind::kParticipant, "participant-2", o);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(FileMode(KeyPath(d, "participant-2")), 0600u);
  EXPECT_EQ(VerifyWithStore(CaCertPath(d), CertPath(d, "participant-2")), X509_V_OK);
  EXPECT_TRUE(VerifyCert(CaCertPath(d), CertPath(d, "participant-2")).ok());

  Result<CertInfo> info = ReadCertInfo(CertPath(d, "participant-2"));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->common_name, "participant-2");
  EXPECT_EQ(info->organizational_unit, "participant");
  EXPECT_EQ(info->kind, PrincipalKind::kParticipant);
  EXPECT_FALSE(info->is_ca);
  EXPECT_EQ(info->dns_names, (std::vector<std::string>{"participant-2", "db1.example.com"}));
  EXPECT_TRUE(Contains(info->ip_addresses, "127.0.0.1"));
  EXPECT_EQ(info->ip_addresses.size(), 2u);
  EXPECT_TRUE(Contains(info->extended_key_usages, "serverAuth"));
  EXPECT_TRUE(Contains(info->extended_key_usages, "clientAuth"));
  EXPECT_EQ(info->serial_hex.size(), 32u);  // 128 bits
  Result<CertInfo> ca = ReadCertInfo(CaCertPath(d));
  ASSERT_TRUE(ca.ok());
  EXPECT_EQ(info->issuer_common_name, ca->common_name);
  const int64_t now = std::time(nullptr);
  EXPECT_NEAR(info->not_after_unix - now, int64_t{kLeafValidityDays} * 86400, 120);
  EXPECT_FALSE(info->ExpiredAt(now));
  EXPECT_FALSE(info->NotYetValidAt(now));
}

TEST_F(CertsTest, ClientAndAdminCertificatesAreForClientAuthOnly) {
  const std::string& d = dir_.path();
  ASSERT_TRUE(CreateCert(d, PrincipalKind::kAdmin, "admin", CertOptions{}).ok());
  ASSERT_TRUE(CreateCert(d, PrincipalKind::kClient, "client", CertOptions{}).ok());
  for (const auto& [name, kind] :
       {std::pair{"admin", PrincipalKind::kAdmin}, std::pair{"client", PrincipalKind::kClient}}) {
    Result<CertInfo> info = ReadCertInfo(CertPath(d, name));
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->kind, kind);
    EXPECT_EQ(info->extended_key_usages, std::vector<std::string>{"clientAuth"}) << name;
    EXPECT_EQ(VerifyWithStore(CaCertPath(d), CertPath(d, name)), X509_V_OK);
  }
}

TEST_F(CertsTest, SerialsAreRandom) {
  const std::string& d = dir_.path();
  ASSERT_TRUE(CreateCert(d, PrincipalKind::kClient, "a", CertOptions{}).ok());
  ASSERT_TRUE(CreateCert(d, PrincipalKind::kClient, "b", CertOptions{}).ok());
  EXPECT_NE(ReadCertInfo(CertPath(d, "a"))->serial_hex, ReadCertInfo(CertPath(d, "b"))->serial_hex);
}

TEST_F(CertsTest, ExpiredCertificateIsExpiredAndDoesNotVerify) {
  const std::string& d = dir_.path();
  CertOptions o;
  const int64_t now = std::time(nullptr);
  o.not_before_unix = now - 10 * 86400;
  o.not_after_unix = now - 86400;
  ASSERT_TRUE(CreateCert(d, PrincipalKind::kCoordinator, "coordinator-0", o).ok());
  Result<CertInfo> info = ReadCertInfo(CertPath(d, "coordinator-0"));
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->ExpiredAt(now));
  EXPECT_EQ(info->not_after_unix, now - 86400);
  EXPECT_EQ(VerifyWithStore(CaCertPath(d), CertPath(d, "coordinator-0")),
            X509_V_ERR_CERT_HAS_EXPIRED);
  Status s = VerifyCert(CaCertPath(d), CertPath(d, "coordinator-0"));
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("expired"), std::string::npos) << s.ToString();
}

TEST_F(CertsTest, CertificateFromAnotherCaDoesNotVerify) {
  TempDir other;
  ASSERT_TRUE(CreateCa(other.path(), CertOptions{}).ok());
  ASSERT_TRUE(CreateCert(other.path(), PrincipalKind::kCoordinator, "coordinator-0", {}).ok());
  EXPECT_EQ(VerifyWithStore(other.path() + "/ca.crt", CertPath(other.path(), "coordinator-0")),
            X509_V_OK);
  EXPECT_NE(VerifyWithStore(CaCertPath(dir_.path()), CertPath(other.path(), "coordinator-0")),
            X509_V_OK);
  Status s = VerifyCert(CaCertPath(dir_.path()), CertPath(other.path(), "coordinator-0"));
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
}

TEST_F(CertsTest, BadNamesAndKindNoneAreRefused) {
  const std::string& d = dir_.path();
  for (const std::string& bad :
       {std::string(""), std::string("Participant-1"), std::string("a b"), std::string("a/b"),
        std::string("../ca"), std::string("x.y"), std::string("caf\xc3\xa9"),
        std::string(kPrincipalNameBytesMax + 1, 'a')}) {
    Status s = CreateCert(d, PrincipalKind::kClient, bad, CertOptions{});
    EXPECT_TRUE(s.IsInvalidArgument()) << "'" << bad << "': " << s.ToString();
    EXPECT_FALSE(std::filesystem::exists(CertPath(d, bad))) << bad;
  }
  EXPECT_TRUE(ValidatePrincipalName(std::string(kPrincipalNameBytesMax, 'a')).ok());
  EXPECT_TRUE(ValidatePrincipalName("participant-0").ok());
  Status s = CreateCert(d, PrincipalKind::kNone, "someone", CertOptions{});
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(KeyPath(d, "someone")));
}

TEST_F(CertsTest, BadExtraSubjectAltNamesAreRefused) {
  CertOptions ip;
  ip.extra_ip_addresses = {"127.0.0.256"};
  EXPECT_TRUE(CreateCert(dir_.path(), PrincipalKind::kClient, "c1", ip).IsInvalidArgument());
  CertOptions dns;
  dns.extra_dns_names = {"a,DNS:evil"};
  EXPECT_TRUE(CreateCert(dir_.path(), PrincipalKind::kClient, "c2", dns).IsInvalidArgument());
}

TEST_F(CertsTest, ExistingKeyIsNotOverwrittenUnlessAsked) {
  const std::string& d = dir_.path();
  const std::string ca_key = ReadFile(CaKeyPath(d));
  const std::string ca_crt = ReadFile(CaCertPath(d));
  Status s = CreateCa(d, CertOptions{});
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_EQ(ReadFile(CaKeyPath(d)), ca_key);
  EXPECT_EQ(ReadFile(CaCertPath(d)), ca_crt);

  ASSERT_TRUE(CreateCert(d, PrincipalKind::kClient, "client", CertOptions{}).ok());
  const std::string key = ReadFile(KeyPath(d, "client"));
  const std::string crt = ReadFile(CertPath(d, "client"));
  s = CreateCert(d, PrincipalKind::kClient, "client", CertOptions{});
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_EQ(ReadFile(KeyPath(d, "client")), key);
  EXPECT_EQ(ReadFile(CertPath(d, "client")), crt);

  CertOptions overwrite;
  overwrite.overwrite = true;
  ASSERT_TRUE(CreateCert(d, PrincipalKind::kClient, "client", overwrite).ok());
  EXPECT_NE(ReadFile(KeyPath(d, "client")), key);
  EXPECT_EQ(FileMode(KeyPath(d, "client")), 0600u);
  EXPECT_EQ(VerifyWithStore(CaCertPath(d), CertPath(d, "client")), X509_V_OK);
}

TEST(CertsNoCaTest, CertificateWithoutACaIsNotFound) {
  TempDir d;
  Status s = CreateCert(d.path(), PrincipalKind::kClient, "client", CertOptions{});
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("no CA"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(KeyPath(d.path(), "client")));
}

TEST(CertsNoCaTest, RsaKeysWork) {
  TempDir d;
  CertOptions o;
  o.key_type = KeyType::kRsa2048;
  ASSERT_TRUE(CreateCa(d.path(), o).ok());
  ASSERT_TRUE(CreateCert(d.path(), PrincipalKind::kAdmin, "admin", o).ok());
  EXPECT_EQ(ReadCertInfo(CertPath(d.path(), "admin"))->key_type, "RSA 2048");
  EXPECT_EQ(VerifyWithStore(CaCertPath(d.path()), CertPath(d.path(), "admin")), X509_V_OK);
}

TEST(CertsNoCaTest, ReadingSomethingElseIsAClearError) {
  TempDir d;
  const std::string path = d.path() + "/junk.crt";
  std::ofstream(path) << "not a certificate\n";
  Result<CertInfo> info = ReadCertInfo(path);
  ASSERT_FALSE(info.ok());
  EXPECT_TRUE(info.status().IsInvalidArgument()) << info.status().ToString();
  EXPECT_TRUE(ReadCertInfo(d.path() + "/missing.crt").status().IsIOError());
}

}  // namespace
}  // namespace dtx
