#include "node/access.h"

#include <algorithm>
#include <utility>

#include "common/address.h"

namespace dtx::node {

namespace {

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

}  // namespace

Result<ConfiguredPeer> ParseConfiguredPeer(std::string_view item, PrincipalKind kind) {
  size_t eq = item.find('=');
  if (eq == std::string_view::npos) {
    return Status::InvalidArgument("'" + std::string(item) +
                                   "' is not NAME=HOST:PORT (e.g. coordinator-0=10.0.0.1:7101)");
  }
  std::string_view name = item.substr(0, eq);
  std::string_view address = item.substr(eq + 1);
  if (!ValidName(name)) {
    return Status::InvalidArgument("'" + std::string(item) + "': the name '" + std::string(name) +
                                   "' is not 1-64 of [a-z0-9-]");
  }
  Result<HostPort> hp = ParseHostPort(address);
  if (!hp.ok()) {
    return Status::InvalidArgument("'" + std::string(item) + "': " + hp.status().message());
  }
  return ConfiguredPeer{std::string(name), FormatHostPort(hp->host, hp->port), kind};
}

AccessPolicy::AccessPolicy(bool secure, std::vector<ConfiguredPeer> peers)
    : secure_(secure), peers_(std::move(peers)) {}

const ConfiguredPeer* AccessPolicy::FindByName(std::string_view name) const {
  for (const ConfiguredPeer& p : peers_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

const ConfiguredPeer* AccessPolicy::Find(const PeerIdentity& who, PrincipalKind kind) const {
  if (who.kind != kind) return nullptr;
  const ConfiguredPeer* p = FindByName(who.name);
  return p != nullptr && p->kind == kind ? p : nullptr;
}

Status AccessPolicy::RequirePeer(const PeerIdentity& who, PrincipalKind kind,
                                 std::string_view what) const {
  if (!secure_ || Find(who, kind) != nullptr) return Status::OK();
  return Status::PermissionDenied(std::string(what) + " refused: " + who.Describe() +
                                  " is not a configured " + std::string(PrincipalKindName(kind)) +
                                  " of this node");
}

Status AccessPolicy::RequirePeerClaiming(const PeerIdentity& who, PrincipalKind kind,
                                         std::string_view claimed_address,
                                         std::string_view what) const {
  if (!secure_) return Status::OK();
  const ConfiguredPeer* p = Find(who, kind);
  if (p == nullptr) return RequirePeer(who, kind, what);
  if (p->address == claimed_address) return Status::OK();
  return Status::PermissionDenied(std::string(what) + " refused: " + who.Describe() +
                                  " speaks for '" + std::string(claimed_address) +
                                  "', but its configured address is " + p->address);
}

Status AccessPolicy::RequireAdmin(const PeerIdentity& who, std::string_view what) const {
  if (!secure_ || who.kind == PrincipalKind::kAdmin) return Status::OK();
  return Status::PermissionDenied(std::string(what) + " refused: " + who.Describe() +
                                  " is not an admin (an admin certificate is required)");
}

}  // namespace dtx::node
