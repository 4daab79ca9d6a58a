#include "node/access.h"

#include <gtest/gtest.h>

namespace dtx::node {
namespace {

PeerIdentity Who(PrincipalKind kind, std::string name) {
  return PeerIdentity{kind, std::move(name), "10.0.0.9:40000"};
}

AccessPolicy TwoCoordinators() {
  return AccessPolicy(
      true, {ParseConfiguredPeer("coordinator-0=10.0.0.1:7101", PrincipalKind::kCoordinator).value(),
             ParseConfiguredPeer("coordinator-1=10.0.0.2:7101", PrincipalKind::kCoordinator).value()});
}

TEST(ConfiguredPeerTest, ParsesNameAndAddress) {
  auto p = ParseConfiguredPeer("participant-2=[::1]:7201", PrincipalKind::kParticipant);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name, "participant-2");
  EXPECT_EQ(p->address, "[::1]:7201");
  EXPECT_EQ(p->kind, PrincipalKind::kParticipant);
}

TEST(ConfiguredPeerTest, RefusesMalformedItems) {
  for (const char* bad : {"10.0.0.1:7101", "=10.0.0.1:7101", "Coordinator=10.0.0.1:7101",
                          "coordinator-0=10.0.0.1", "coordinator-0=", "c_0=10.0.0.1:1"}) {
    auto p = ParseConfiguredPeer(bad, PrincipalKind::kCoordinator);
    EXPECT_TRUE(!p.ok() && p.status().IsInvalidArgument()) << bad;
  }
}

TEST(AccessPolicyTest, OnlyConfiguredPeersOfTheRightKindPass) {
  AccessPolicy policy = TwoCoordinators();
  EXPECT_TRUE(policy.RequirePeer(Who(PrincipalKind::kCoordinator, "coordinator-1"),
                                 PrincipalKind::kCoordinator, "Abort")
                  .ok());
  // Unauthenticated, a client, a participant, an unknown coordinator, and a
  // participant certificate that carries a coordinator's name.
  for (const PeerIdentity& who :
       {PeerIdentity{PrincipalKind::kNone, "", "10.0.0.9:1"},
        Who(PrincipalKind::kClient, "coordinator-0"), Who(PrincipalKind::kAdmin, "admin"),
        Who(PrincipalKind::kCoordinator, "coordinator-7"),
        Who(PrincipalKind::kParticipant, "coordinator-0")}) {
    Status s = policy.RequirePeer(who, PrincipalKind::kCoordinator, "Abort");
    EXPECT_TRUE(s.IsPermissionDenied()) << who.Describe();
    EXPECT_NE(s.message().find("Abort refused"), std::string::npos) << s.message();
  }
}

TEST(AccessPolicyTest, AnIdentityFieldMustBeTheCallersOwnAddress) {
  AccessPolicy policy = TwoCoordinators();
  PeerIdentity c1 = Who(PrincipalKind::kCoordinator, "coordinator-1");
  EXPECT_TRUE(
      policy.RequirePeerClaiming(c1, PrincipalKind::kCoordinator, "10.0.0.2:7101", "AdoptEpoch")
          .ok());
  Status s =
      policy.RequirePeerClaiming(c1, PrincipalKind::kCoordinator, "10.0.0.1:7101", "AdoptEpoch");
  EXPECT_TRUE(s.IsPermissionDenied());
  EXPECT_NE(s.message().find("10.0.0.2:7101"), std::string::npos) << s.message();
}

TEST(AccessPolicyTest, AdminCallsNeedAnAdminCertificate) {
  AccessPolicy policy = TwoCoordinators();
  EXPECT_TRUE(policy.RequireAdmin(Who(PrincipalKind::kAdmin, "admin"), "SetFailpoint").ok());
  EXPECT_TRUE(policy.RequireAdmin(Who(PrincipalKind::kCoordinator, "coordinator-0"), "SetFailpoint")
                  .IsPermissionDenied());
  EXPECT_TRUE(policy.RequireAdmin(Who(PrincipalKind::kClient, "admin"), "SetFailpoint")
                  .IsPermissionDenied());
}

TEST(AccessPolicyTest, InsecureAllowsEverything) {
  AccessPolicy policy = AccessPolicy::Insecure();
  PeerIdentity nobody{PrincipalKind::kNone, "", "10.0.0.9:1"};
  EXPECT_TRUE(policy.RequirePeer(nobody, PrincipalKind::kCoordinator, "Abort").ok());
  EXPECT_TRUE(policy.RequirePeerClaiming(nobody, PrincipalKind::kCoordinator, "x:1", "A").ok());
  EXPECT_TRUE(policy.RequireAdmin(nobody, "SetFailpoint").ok());
}

}  // namespace
}  // namespace dtx::node
