// NodeSecurity: a node's transport security, decided once at start from its
// flags and used by both node binaries and both runtimes (docs/design.md
// "Trust boundary"):
//   --certs-dir DIR   TLS 1.3 on every listener and every node-to-node
//                     channel, with DIR/ca.crt (the cluster CA), DIR/NAME.crt
//                     and DIR/NAME.key (NAME: the node's --name; the layout
//                     of common/certs.h, made by `dtxctl certs` or `dtxctl
//                     cluster up`). Every listener requires a client
//                     certificate signed by the CA; the access policy is
//                     secure (node/access.h).
//   --insecure        plaintext, nobody authenticated; the runtime logs one
//                     WARN at start.
// Exactly one of the two: neither or both is a usage error.
//
// With TLS a node-to-node channel presents the node's own certificate and
// expects the peer configured at that address (node/access.h
// ConfiguredPeer, from the NAME=HOST:PORT lists); a bare HOST:PORT in those
// lists names nobody, so with TLS it is a start-up error.
//
// Immutable after creation; cheap to copy (the contexts are shared);
// thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/identity.h"
#include "common/rpc_client.h"
#include "common/status.h"
#include "common/tls.h"
#include "node/access.h"

namespace dtx::node {

inline constexpr const char* kCertsDirFlagHelp =
    "certificate directory: TLS with DIR/ca.crt, DIR/NAME.crt, DIR/NAME.key (NAME: --name; "
    "made by `dtxctl certs` or `dtxctl cluster up`)";
inline constexpr const char* kInsecureFlagHelp =
    "no TLS: plaintext, callers not authenticated (tests and trusted networks only)";

// --certs-dir and --insecure as given on the command line.
struct SecurityFlags {
  std::string certs_dir;
  bool insecure = false;

  // InvalidArgument (a usage error) unless exactly one of the two is given.
  Status Validate() const;
  bool tls() const { return !insecure; }
};

// InvalidArgument when TLS is on and `item` of the peer list `flag`
// ("--participants", ...) is a bare HOST:PORT instead of NAME=HOST:PORT.
Status RequireNamedPeer(const SecurityFlags& flags, std::string_view flag, std::string_view item);

class NodeSecurity {
 public:
  // Plaintext (--insecure; the default of the runtimes' options).
  NodeSecurity() = default;

  // From validated flags: for --certs-dir DIR, the contexts from DIR's files
  // for the node `name` (InvalidArgument naming a missing or bad file).
  static Result<NodeSecurity> FromFlags(const SecurityFlags& flags, const std::string& name);
  // TLS with these files (tests).
  static Result<NodeSecurity> FromFiles(const TlsFiles& files);

  bool tls() const { return server_ != nullptr; }
  // Server side, requiring a client certificate: every listener. Null
  // without TLS.
  const std::shared_ptr<const TlsContext>& server() const { return server_; }
  // Client side, presenting the node's certificate. Null without TLS.
  const std::shared_ptr<const TlsContext>& client() const { return client_; }

  // Options of a channel to `address`: with TLS the client context and, as
  // the expected server, the peer of `peers` configured at that address
  // (name and kind), or any principal of `kind` when none is.
  PeerChannelOptions ChannelTo(std::string_view address, PrincipalKind kind,
                               const std::vector<ConfiguredPeer>& peers) const;

  // "TLS 1.3 (certificates of DIR)" or "--insecure (plaintext)", for log lines.
  std::string Describe() const;

 private:
  std::shared_ptr<const TlsContext> server_;
  std::shared_ptr<const TlsContext> client_;
  std::string source_;  // where the certificate came from, for Describe()
};

}  // namespace dtx::node
