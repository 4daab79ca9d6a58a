// `--cluster FILE --name NAME` of the node binaries (docs/deploy.md "Starting
// a node"): the command line a node started on its own host, by hand or by
// systemd, derives from the cluster file every host has a copy of. It is the
// one the local supervisor gives the same node (MakeNodeCommandLine,
// tools/cluster_config.h), plus the TLS flag of the file and, for a
// coordinator of a pair, the role it starts in (CoordinatorRoleToStart,
// tools/admin_client.h: the backup when its peer is primary now).
//
// Flags given on the command line win over the derived ones (the binaries
// parse the command line first), so `--log-level debug` or `--dir` can
// override what the file implies.
//
// Thread-safety: a free function; it reads files and, for a coordinator, makes
// one GetStatus call.
#pragma once

#include <boost/program_options.hpp>

#include <string>
#include <vector>

#include "common/status.h"
#include "tools/cluster_config.h"

namespace dtx::tools {

// How long a coordinator started from a cluster file asks its peer whether it
// is primary now.
inline constexpr int kRolePeerQueryTimeoutMs = 1000;

// The flags of node `name` from the cluster file `path`. InvalidArgument
// (naming the file) when the file cannot be read or is malformed, has no such
// node, names a node of the other kind (`kind` is the binary's), or lacks the
// node's peer= address. `ask_peer_role`: a coordinator of a pair asks its peer
// (false: the file's role, e.g. when --role is on the command line).
Result<std::vector<std::string>> NodeArgsFromClusterFile(const std::string& path,
                                                         const std::string& name, NodeKind kind,
                                                         bool ask_peer_role);

inline constexpr const char* kClusterFlagHelp =
    "cluster file (docs/deploy.md): every flag that follows from it for the node named by --name "
    "(listeners, peers, the NODEDIR, TLS, a coordinator's role); flags given here win";

// For the node binaries: when `vm` (the parsed command line) has --cluster,
// stores the flags the file implies for --name into `vm` (flags already on
// the command line are kept; boost::program_options::store keeps a value that
// is not a default). --role on the command line stops a coordinator from
// asking its peer. InvalidArgument (a usage error) as above, or without an
// explicit --name. Throws boost::program_options::error like store().
Status StoreClusterFileFlags(boost::program_options::variables_map& vm,
                             const boost::program_options::options_description& desc,
                             NodeKind kind);

}  // namespace dtx::tools
