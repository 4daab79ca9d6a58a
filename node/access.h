// AccessPolicy: who may call what on a node (docs/design.md "Trust
// boundary"). The transport authenticates the caller (common/identity.h);
// the handlers ask this policy before they act on a request:
//   - the peer protocol (Prepare, Commit, Abort, AdoptEpoch, QueryDecision,
//     Heartbeat, Replicate) only from the node's configured peers: a
//     participant's coordinators, a coordinator's other coordinator (and, for
//     QueryDecision, its participants);
//   - an identity field inside a request (AdoptEpoch's `coordinator`,
//     Heartbeat's `sender`, Replicate's `primary`) names an address; it must
//     be the configured address of the very peer the certificate names, so a
//     coordinator cannot speak for the other one;
//   - admin calls (SetFailpoint, GetTrace, ListInDoubt) only from an admin
//     certificate.
// A node started with --insecure has no authenticated callers: the policy
// then allows everything (the node logs that loudly at start).
//
// Stateless after construction; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/identity.h"
#include "common/status.h"

namespace dtx::node {

// A peer node as configured: its certificate name and its peer-listener
// address ("coordinator-0" at "10.0.0.1:7101").
struct ConfiguredPeer {
  std::string name;
  std::string address;
  PrincipalKind kind = PrincipalKind::kNone;
  friend bool operator==(const ConfiguredPeer&, const ConfiguredPeer&) = default;
};

// Parses "NAME=HOST:PORT" (the form of --coordinators, --participants,
// --peer). `kind` is the kind the peer's certificate must carry. NAME is
// [a-z0-9-]{1,64}. InvalidArgument naming the item otherwise.
Result<ConfiguredPeer> ParseConfiguredPeer(std::string_view item, PrincipalKind kind);

class AccessPolicy {
 public:
  // secure: callers are authenticated by TLS and checked; !secure: every
  // check passes (--insecure). `peers`: every node allowed to speak the peer
  // protocol to this one.
  AccessPolicy(bool secure, std::vector<ConfiguredPeer> peers);
  // An insecure policy with no peers (tests, tools).
  static AccessPolicy Insecure() { return AccessPolicy(false, {}); }

  bool secure() const { return secure_; }
  const std::vector<ConfiguredPeer>& peers() const { return peers_; }

  // OK when `who` is a configured peer of kind `kind`; PermissionDenied
  // naming the caller and `what` (e.g. "Abort") otherwise.
  Status RequirePeer(const PeerIdentity& who, PrincipalKind kind, std::string_view what) const;
  // RequirePeer, and `claimed_address` (an identity field of the request) is
  // that peer's configured address.
  Status RequirePeerClaiming(const PeerIdentity& who, PrincipalKind kind,
                             std::string_view claimed_address, std::string_view what) const;
  // OK for an admin certificate.
  Status RequireAdmin(const PeerIdentity& who, std::string_view what) const;

  // The configured peer named `name`, or nullptr.
  const ConfiguredPeer* FindByName(std::string_view name) const;

 private:
  const ConfiguredPeer* Find(const PeerIdentity& who, PrincipalKind kind) const;

  bool secure_;
  std::vector<ConfiguredPeer> peers_;
};

}  // namespace dtx::node
