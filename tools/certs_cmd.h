// `dtxctl certs ...` and the certificates `dtxctl cluster up` makes
// (tools/README.md "Certificates"). The files themselves come from
// common/certs.h.
//
// Stateless; not thread-safe only in that the commands print to stdout/stderr.
#pragma once

#include <string>
#include <vector>

#include "common/identity.h"
#include "common/status.h"
#include "tools/cluster_config.h"

namespace dtx::tools {

// The warning `dtxctl cluster up --insecure` prints on stderr.
inline constexpr const char* kInsecureWarning =
    "WARNING: --insecure: nodes accept plaintext from anyone; any program that reaches their "
    "ports can drive the peer protocol, fence the coordinator and arm failpoints. Use it only "
    "on a machine you trust, never on a shared network.";

// The kind of a certificate `dtxctl certs create-node NAME` makes: coordinator
// or participant for "coordinator-N"/"participant-N", admin for "admin";
// InvalidArgument otherwise (the message points to create-client).
Result<PrincipalKind> NodeCertKind(const std::string& name);

// `dtxctl certs SUBCOMMAND ...` with `args` after "certs". Returns the exit
// status (0 ok, 1 failed, 2 bad usage), messages on stdout/stderr.
int RunCertsCommand(std::vector<std::string> args);

// What `dtxctl cluster up` does without --insecure: under `certs_dir`, the CA
// (kept if one exists), a certificate per node of `config` (with the node's
// address host as an extra SAN), kAdminCertName and kClientCertName. Existing
// certificates signed by an existing CA are kept; a new CA replaces them all.
Status CreateClusterCerts(const std::string& certs_dir, const ClusterConfig& config);

// `dtxctl cluster up`'s security set-up in cluster directory `dir`: with
// `insecure`, prints kInsecureWarning on stderr and creates no certificate;
// otherwise CreateClusterCerts in DIR/certs. Either way writes
// DIR/security.conf (ClusterSecurity) recording the choice.
Status SetUpClusterSecurity(const std::string& dir, const ClusterConfig& config, bool insecure);

}  // namespace dtx::tools
