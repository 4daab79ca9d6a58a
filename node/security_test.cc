#include "node/security.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "common/certs.h"

namespace dtx::node {
namespace {

class CertDir {
 public:
  CertDir() {
    char tmpl[] = "/tmp/dtx-security-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~CertDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(SecurityFlagsTest, ExactlyOneOfCertsDirAndInsecure) {
  const SecurityFlags neither_flag{.certs_dir = "", .insecure = false};
  const SecurityFlags both{.certs_dir = "/x", .insecure = true};
  const SecurityFlags tls{.certs_dir = "/x", .insecure = false};
  const SecurityFlags plain{.certs_dir = "", .insecure = true};
  EXPECT_TRUE(neither_flag.Validate().IsInvalidArgument());
  EXPECT_TRUE(both.Validate().IsInvalidArgument());
  EXPECT_TRUE(tls.Validate().ok());
  EXPECT_TRUE(plain.Validate().ok());
  Status neither = SecurityFlags{}.Validate();
  EXPECT_NE(neither.message().find("--certs-dir DIR"), std::string::npos) << neither.ToString();
  EXPECT_NE(neither.message().find("--insecure"), std::string::npos) << neither.ToString();
}

TEST(SecurityFlagsTest, BarePeerIsRefusedOnlyWithTls) {
  const SecurityFlags tls{.certs_dir = "/x", .insecure = false};
  const SecurityFlags plain{.certs_dir = "", .insecure = true};
  Status bare = RequireNamedPeer(tls, "--participants", "127.0.0.1:7201");
  EXPECT_TRUE(bare.IsInvalidArgument());
  EXPECT_NE(bare.message().find("NAME=HOST:PORT"), std::string::npos) << bare.ToString();
  EXPECT_TRUE(RequireNamedPeer(tls, "--participants", "participant-0=127.0.0.1:7201").ok());
  EXPECT_TRUE(RequireNamedPeer(plain, "--participants", "127.0.0.1:7201").ok());
}

TEST(NodeSecurityTest, InsecureHasNoContextsAndPlainChannels) {
  const SecurityFlags plain{.certs_dir = "", .insecure = true};
  auto s = NodeSecurity::FromFlags(plain, "x");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_FALSE(s->tls());
  EXPECT_EQ(s->server(), nullptr);
  PeerChannelOptions o = s->ChannelTo("127.0.0.1:1", PrincipalKind::kParticipant, {});
  EXPECT_EQ(o.tls, nullptr);
}

TEST(NodeSecurityTest, CertsDirGivesContextsAndChannelsExpectTheConfiguredPeer) {
  CertDir dir;
  ASSERT_TRUE(CreateCa(dir.path(), {}).ok());
  ASSERT_TRUE(CreateCert(dir.path(), PrincipalKind::kCoordinator, "coordinator-0", {}).ok());
  const SecurityFlags tls{.certs_dir = dir.path(), .insecure = false};
  auto s = NodeSecurity::FromFlags(tls, "coordinator-0");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE(s->tls());
  EXPECT_TRUE(s->server()->options().require_client_cert);
  EXPECT_EQ(s->client()->local_identity().name, "coordinator-0");

  const std::vector<ConfiguredPeer> peers = {
      {.name = "participant-0", .address = "10.0.0.1:7201", .kind = PrincipalKind::kParticipant},
      {.name = "coordinator-1", .address = "10.0.0.2:7101", .kind = PrincipalKind::kCoordinator}};
  PeerChannelOptions p0 = s->ChannelTo("10.0.0.1:7201", PrincipalKind::kParticipant, peers);
  EXPECT_EQ(p0.tls, s->client());
  EXPECT_EQ(p0.expected_server.kind, PrincipalKind::kParticipant);
  EXPECT_EQ(p0.expected_server.name, "participant-0");
  PeerChannelOptions c1 = s->ChannelTo("10.0.0.2:7101", PrincipalKind::kCoordinator, peers);
  EXPECT_EQ(c1.expected_server.name, "coordinator-1");
  // An address nobody is configured at: any principal of that kind.
  PeerChannelOptions other = s->ChannelTo("10.0.0.3:7101", PrincipalKind::kCoordinator, peers);
  EXPECT_EQ(other.expected_server.kind, PrincipalKind::kCoordinator);
  EXPECT_EQ(other.expected_server.name, "");
  // The right address but the wrong kind names nobody.
  PeerChannelOptions wrong = s->ChannelTo("10.0.0.1:7201", PrincipalKind::kCoordinator, peers);
  EXPECT_EQ(wrong.expected_server.name, "");
}

TEST(NodeSecurityTest, MissingCertificateFilesAreNamed) {
  CertDir dir;
  ASSERT_TRUE(CreateCa(dir.path(), {}).ok());
  const SecurityFlags tls{.certs_dir = dir.path(), .insecure = false};
  auto s = NodeSecurity::FromFlags(tls, "participant-3");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsInvalidArgument());
  EXPECT_NE(s.status().message().find("participant-3.crt"), std::string::npos)
      << s.status().ToString();
}

}  // namespace
}  // namespace dtx::node
