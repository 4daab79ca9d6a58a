#include "tools/node_launch.h"

#include "tools/admin_client.h"

namespace dtx::tools {

Result<std::vector<std::string>> NodeArgsFromClusterFile(const std::string& path,
                                                         const std::string& name, NodeKind kind,
                                                         bool ask_peer_role) {
  auto file = ClusterFile::Load(path);
  if (!file.ok()) {
    if (file.status().IsNotFound()) return Status::InvalidArgument("--cluster: no file " + path);
    return Status::InvalidArgument("--cluster: " + file.status().message());
  }
  const NodeEntry* node = file->config.Find(name);
  if (node == nullptr) {
    return Status::InvalidArgument("--cluster: " + path + " lists no node '" + name + "'");
  }
  if (node->role != kind) {
    return Status::InvalidArgument("--cluster: " + name + " is not a " +
                                   (kind == NodeKind::kCoordinator ? "coordinator" : "participant") +
                                   " (wrong binary)");
  }
  for (const NodeEntry& n : file->config.nodes()) {
    if (n.peer_address.empty()) {
      return Status::InvalidArgument("--cluster: " + path + ": " + n.name +
                                     " has no peer= address");
    }
  }
  NodeCommandLine cl = MakeNodeCommandLine(file->config, *node, file->NodeDir(name));
  std::vector<std::string> args = std::move(cl.args);
  std::vector<std::string> security = SecurityArgs(file->security, file->CertsDir());
  args.insert(args.end(), security.begin(), security.end());
  if (cl.peer != nullptr) {
    std::string role = cl.role;
    if (ask_peer_role) {
      auto creds = ToolCredentials::ForNode(*file, name);
      if (!creds.ok()) return Status::InvalidArgument("--cluster: " + creds.status().message());
      role = CoordinatorRoleToStart(*node, *cl.peer, *creds, cl.role, kRolePeerQueryTimeoutMs);
    }
    args.insert(args.end(), {"--role", role});
  }
  return args;
}

Status StoreClusterFileFlags(boost::program_options::variables_map& vm,
                             const boost::program_options::options_description& desc,
                             NodeKind kind) {
  namespace po = boost::program_options;
  if (vm.count("cluster") == 0) return Status::OK();
  if (vm.count("name") == 0 || vm["name"].defaulted()) {
    return Status::InvalidArgument("--cluster needs --name (the node this process is)");
  }
  bool role_given = vm.count("role") != 0 && !vm["role"].defaulted();
  auto args = NodeArgsFromClusterFile(vm["cluster"].as<std::string>(),
                                      vm["name"].as<std::string>(), kind, !role_given);
  if (!args.ok()) return args.status();
  po::store(po::command_line_parser(*args).options(desc).run(), vm);
  return Status::OK();
}

}  // namespace dtx::tools
