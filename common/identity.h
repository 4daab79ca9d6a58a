// PeerIdentity: who is at the other end of a connection, as the transport
// established it. With TLS (common/tls.h) it comes from the peer's verified
// certificate: the common name is the principal's name ("participant-2",
// "coordinator-0", "admin", "bench"), the organizational unit its kind
// ("participant", "coordinator", "admin", "client"). Without TLS (a node
// started with --insecure) nothing is authenticated and kind is kNone.
//
// The identity fields inside a request (sender, coordinator, primary) mean
// something only when they equal the connection's authenticated name; the
// handlers check that (docs/design.md "Trust boundary").
#pragma once

#include <string>
#include <string_view>

namespace dtx {

enum class PrincipalKind : int {
  kNone = 0,  // not authenticated (plaintext, or no client certificate)
  kClient = 1,
  kCoordinator = 2,
  kParticipant = 3,
  kAdmin = 4,
};

// "client", "coordinator", "participant", "admin"; "" for kNone.
inline std::string_view PrincipalKindName(PrincipalKind k) {
  switch (k) {
    case PrincipalKind::kClient: return "client";
    case PrincipalKind::kCoordinator: return "coordinator";
    case PrincipalKind::kParticipant: return "participant";
    case PrincipalKind::kAdmin: return "admin";
    case PrincipalKind::kNone: break;
  }
  return "";
}

// The inverse of PrincipalKindName; kNone for anything else.
inline PrincipalKind ParsePrincipalKind(std::string_view s) {
  if (s == "client") return PrincipalKind::kClient;
  if (s == "coordinator") return PrincipalKind::kCoordinator;
  if (s == "participant") return PrincipalKind::kParticipant;
  if (s == "admin") return PrincipalKind::kAdmin;
  return PrincipalKind::kNone;
}

struct PeerIdentity {
  PrincipalKind kind = PrincipalKind::kNone;
  std::string name;     // the certificate's common name; "" when not authenticated
  std::string address;  // remote "host:port" as the socket reports it

  bool authenticated() const { return kind != PrincipalKind::kNone; }
  bool Is(PrincipalKind k, std::string_view n) const { return kind == k && name == n; }
  // "coordinator-0 (coordinator) at 127.0.0.1:5000", or
  // "unauthenticated peer at 127.0.0.1:5000": for log lines and errors.
  std::string Describe() const {
    if (!authenticated()) return "unauthenticated peer at " + address;
    return name + " (" + std::string(PrincipalKindName(kind)) + ") at " + address;
  }
};

}  // namespace dtx
