// The C++ client against real nodes (`dtxctl cluster up`, one coordinator and
// one participant): ClientOptions::FromClusterDir finds a cluster, and the
// usual TLS mistakes fail Connect with a message that names the cause
// (include/dtx/client.h, ClientOptions TLS). One TLS cluster and one
// --insecure cluster serve every test of the suite.
#include <gtest/gtest.h>

#include <ctime>
#include <iostream>
#include <memory>
#include <string>

#include "common/certs.h"
#include "dtx/client.h"
#include "tests/harness.h"

namespace dtx::testing {
namespace {

// Short: each mistake is refused at the first handshake; the timeout only
// bounds a test that fails.
constexpr int kRequestTimeoutMs = 2000;

class TlsErrorsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tls_ = new LocalCluster();
    insecure_ = new LocalCluster();
    LocalCluster::Options o;
    o.participants = 1;
    o.participant_bin = DTX_PARTICIPANT_PATH;
    o.coordinator_bin = DTX_COORDINATOR_PATH;
    setup_ = tls_->Up(o);
    if (!setup_.ok()) return;
    o.up_flags = {"--insecure"};
    setup_ = insecure_->Up(o);
  }
  static void TearDownTestSuite() {
    delete tls_;  // cluster down, then SIGKILL by pid
    delete insecure_;
    tls_ = insecure_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(setup_.ok()) << setup_.ToString(); }
  void TearDown() override {
    if (HasFailure()) std::cerr << tls_->LogTails(20) << insecure_->LogTails(20);
  }

  static ClientOptions TlsOptions() {
    auto o = ClientOptions::FromClusterDir(tls_->dir());
    EXPECT_TRUE(o.ok()) << o.status().ToString();
    ClientOptions options = o.ok() ? *o : ClientOptions{};
    options.request_timeout_ms = kRequestTimeoutMs;
    return options;
  }

  // Connect's failure message; "" (and a test failure) if it connected.
  static std::string ConnectError(const ClientOptions& options) {
    auto c = Client::Connect(options);
    EXPECT_FALSE(c.ok()) << "connected";
    if (c.ok()) return "";
    std::cout << "Connect: " << c.status().ToString() << "\n";  // what a user reads
    return c.status().ToString();
  }

  static inline LocalCluster* tls_ = nullptr;
  static inline LocalCluster* insecure_ = nullptr;
  static inline Status setup_;
};

TEST_F(TlsErrorsTest, FromClusterDirConnectsAndCommitsOnBothKindsOfCluster) {
  for (LocalCluster* cluster : {tls_, insecure_}) {
    auto options = ClientOptions::FromClusterDir(cluster->dir());
    ASSERT_TRUE(options.ok()) << options.status().ToString();
    EXPECT_EQ(options->coordinators, (std::vector<std::string>{cluster->coordinator_address()}));
    EXPECT_EQ(options->tls_ca_file.empty(), cluster == insecure_);
    auto c = Client::Connect(*options);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ((*c)->participants(), cluster->participant_addresses());
    ASSERT_TRUE((*c)->Run([](Transaction& tx) { return tx.Put("k", "v"); }).ok());
    std::optional<std::string> got;
    ASSERT_TRUE((*c)->Run([&](Transaction& tx) -> Status {
                      auto r = tx.Get("k");
                      if (!r.ok()) return r.status();
                      got = *r;
                      return Status::OK();
                    })
                    .ok());
    EXPECT_EQ(got, "v");
  }
}

// A TLS listener answers a plaintext call once, in plaintext, with the cause
// (common/rpc_server.cc TlsRequiredReply); the channel reports it instead of
// "connection closed", which is what a dead node looks like.
TEST_F(TlsErrorsTest, PlaintextClientToTlsClusterIsToldTheServerRequiresTls) {
  ClientOptions plain = TlsOptions();
  plain.tls_ca_file = plain.tls_cert_file = plain.tls_key_file = "";
  const std::string error = ConnectError(plain);
  EXPECT_NE(error.find("the server requires TLS"), std::string::npos) << error;
}

TEST_F(TlsErrorsTest, TlsClientToInsecureClusterIsToldTheServerIsPlaintext) {
  ClientOptions options = TlsOptions();
  options.coordinators = {insecure_->coordinator_address()};
  const std::string error = ConnectError(options);
  EXPECT_NE(error.find("a plaintext port"), std::string::npos) << error;
}

TEST_F(TlsErrorsTest, AnotherClustersCaRefusesTheServerCertificate) {
  ClientOptions options = TlsOptions();
  options.tls_ca_file = CaCertPath(insecure_->dir() + "/other-ca");
  ASSERT_TRUE(CreateCa(insecure_->dir() + "/other-ca", {}).ok());
  const std::string error = ConnectError(options);
  EXPECT_NE(error.find("not signed by the cluster CA"), std::string::npos) << error;
}

TEST_F(TlsErrorsTest, ClientCertificateOfAnotherCaIsRefusedByTheServer) {
  const std::string other = insecure_->dir() + "/other-ca-2";
  ASSERT_TRUE(CreateCa(other, {}).ok());
  ASSERT_TRUE(CreateCert(other, PrincipalKind::kClient, "client", {}).ok());
  ClientOptions options = TlsOptions();
  options.tls_cert_file = CertPath(other, "client");
  options.tls_key_file = KeyPath(other, "client");
  const std::string error = ConnectError(options);
  EXPECT_NE(error.find("refused our certificate: not signed by the CA it trusts"),
            std::string::npos)
      << error;
}

TEST_F(TlsErrorsTest, ExpiredClientCertificateIsRefusedByTheServer) {
  // Signed by the cluster's own CA, expired yesterday (common/certs_test.cc).
  const std::string certs = tls_->dir() + "/certs";
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  CertOptions expired;
  expired.not_before_unix = now - 10 * 86400;
  expired.not_after_unix = now - 86400;
  ASSERT_TRUE(CreateCert(certs, PrincipalKind::kClient, "expired-client", expired).ok());
  ClientOptions options = TlsOptions();
  options.tls_cert_file = CertPath(certs, "expired-client");
  options.tls_key_file = KeyPath(certs, "expired-client");
  const std::string error = ConnectError(options);
  EXPECT_NE(error.find("refused our certificate: expired"), std::string::npos) << error;
}

}  // namespace
}  // namespace dtx::testing
