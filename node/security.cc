#include "node/security.h"

#include <utility>

#include "common/certs.h"

namespace dtx::node {

Status SecurityFlags::Validate() const {
  if (!certs_dir.empty() && insecure) {
    return Status::InvalidArgument("give --certs-dir DIR or --insecure, not both");
  }
  if (certs_dir.empty() && !insecure) {
    return Status::InvalidArgument("give --certs-dir DIR (see `dtxctl certs`) or --insecure");
  }
  return Status::OK();
}

Status RequireNamedPeer(const SecurityFlags& flags, std::string_view flag, std::string_view item) {
  if (!flags.tls() || item.find('=') != std::string_view::npos) return Status::OK();
  return Status::InvalidArgument(std::string(flag) + ": '" + std::string(item) +
                                 "' names no node: with TLS (--certs-dir) give NAME=HOST:PORT, "
                                 "NAME being the name in the peer's certificate");
}

Result<NodeSecurity> NodeSecurity::FromFlags(const SecurityFlags& flags, const std::string& name) {
  DTX_RETURN_IF_ERROR(flags.Validate());
  if (flags.insecure) return NodeSecurity();
  DTX_RETURN_IF_ERROR(ValidatePrincipalName(name));
  auto s = FromFiles(TlsFiles{.ca_file = CaCertPath(flags.certs_dir),
                              .cert_file = CertPath(flags.certs_dir, name),
                              .key_file = KeyPath(flags.certs_dir, name)});
  if (!s.ok())
    return Status::InvalidArgument("--certs-dir " + flags.certs_dir + ": " + s.status().message());
  s->source_ = "certificates of " + flags.certs_dir;
  return s;
}

Result<NodeSecurity> NodeSecurity::FromFiles(const TlsFiles& files) {
  auto server =
      TlsContext::Create(files, TlsSide::kServer, TlsContextOptions{.require_client_cert = true});
  if (!server.ok()) return server.status();
  auto client = TlsContext::Create(files, TlsSide::kClient);
  if (!client.ok()) return client.status();
  NodeSecurity s;
  s.server_ = std::move(*server);
  s.client_ = std::move(*client);
  s.source_ = files.cert_file;
  return s;
}

PeerChannelOptions NodeSecurity::ChannelTo(std::string_view address, PrincipalKind kind,
                                           const std::vector<ConfiguredPeer>& peers) const {
  PeerChannelOptions o;
  if (!tls()) return o;
  o.tls = client_;
  o.expected_server.kind = kind;
  for (const ConfiguredPeer& p : peers) {
    if (p.address == address && p.kind == kind) {
      o.expected_server.name = p.name;
      break;
    }
  }
  return o;
}

std::string NodeSecurity::Describe() const {
  if (!tls()) return "--insecure (plaintext, callers not authenticated)";
  return "TLS 1.3 (" + source_ + ")";
}

}  // namespace dtx::node
