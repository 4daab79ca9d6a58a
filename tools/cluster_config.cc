#include "tools/cluster_config.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace dtx::tools {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

Result<std::string> ReadSmallFile(const std::string& path, size_t bytes_max) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::FromErrno(path, errno);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Status::FromErrno(path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > bytes_max) {
      ::close(fd);
      return Status::InvalidArgument(path + ": larger than " + std::to_string(bytes_max) +
                                     " bytes");
    }
  }
  ::close(fd);
  return out;
}

bool RoleLess(const NodeEntry& a, const NodeEntry& b) {
  if (a.role != b.role) return a.role == NodeKind::kCoordinator;
  return a.index < b.index;
}

}  // namespace

Result<NodeEntry> ParseNodeName(std::string_view name) {
  NodeEntry e;
  std::string_view rest;
  if (name.starts_with("coordinator-")) {
    e.role = NodeKind::kCoordinator;
    rest = name.substr(12);
  } else if (name.starts_with("participant-")) {
    e.role = NodeKind::kParticipant;
    rest = name.substr(12);
  } else {
    return Status::InvalidArgument("node name '" + std::string(name) +
                                   "' is not coordinator-N or participant-N");
  }
  int index = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), index);
  if (rest.empty() || ec != std::errc() || end != rest.data() + rest.size() || index < 0 ||
      (rest.size() > 1 && rest[0] == '0')) {
    return Status::InvalidArgument("node name '" + std::string(name) +
                                   "' is not coordinator-N or participant-N");
  }
  e.name = std::string(name);
  e.index = index;
  return e;
}

Status ClusterConfig::Add(std::string_view name, std::string_view address,
                          std::string_view admin_address, std::string_view peer_address) {
  if (nodes_.size() >= kClusterNodesMax) {
    return Status::InvalidArgument("more than " + std::to_string(kClusterNodesMax) + " nodes");
  }
  auto entry = ParseNodeName(name);
  if (!entry.ok()) return entry.status();
  auto hp = ParseHostPort(address);
  if (!hp.ok()) return hp.status();
  if (Find(name) != nullptr) {
    return Status::InvalidArgument("node '" + std::string(name) + "' listed twice");
  }
  DTX_RETURN_IF_ERROR(CheckUnused(address, name));
  if (!admin_address.empty()) {
    auto admin_hp = ParseHostPort(admin_address);
    if (!admin_hp.ok()) return admin_hp.status();
    if (admin_address == address) {
      return Status::InvalidArgument("node '" + std::string(name) +
                                     "': the admin address must differ from its address");
    }
    DTX_RETURN_IF_ERROR(CheckUnused(admin_address, name));
  }
  if (!peer_address.empty()) {
    auto peer_hp = ParseHostPort(peer_address);
    if (!peer_hp.ok()) return peer_hp.status();
    if (peer_address == address || peer_address == admin_address) {
      return Status::InvalidArgument(
          "node '" + std::string(name) +
          "': the peer address must differ from its client and admin addresses");
    }
    DTX_RETURN_IF_ERROR(CheckUnused(peer_address, name));
  }
  entry->address = std::string(address);
  entry->admin_address = std::string(admin_address);
  entry->peer_address = std::string(peer_address);
  auto pos = std::upper_bound(nodes_.begin(), nodes_.end(), *entry, RoleLess);
  nodes_.insert(pos, std::move(*entry));
  return Status::OK();
}

Status ClusterConfig::CheckUnused(std::string_view address, std::string_view name) const {
  for (const NodeEntry& n : nodes_) {
    if (n.address == address || n.admin_address == address || n.peer_address == address ||
        n.metrics_address == address) {
      return Status::InvalidArgument("address " + std::string(address) + " used by both " + n.name +
                                     " and " + std::string(name));
    }
  }
  return Status::OK();
}

Status ClusterConfig::SetListenerAddress(std::string_view name, std::string NodeEntry::*listener,
                                         std::string_view address) {
  auto it = std::find_if(nodes_.begin(), nodes_.end(),
                         [&](const NodeEntry& n) { return n.name == name; });
  if (it == nodes_.end()) return Status::InvalidArgument("no node '" + std::string(name) + "'");
  auto hp = ParseHostPort(address);
  if (!hp.ok()) return hp.status();
  ((*it).*listener).clear();
  DTX_RETURN_IF_ERROR(CheckUnused(address, name));
  (*it).*listener = std::string(address);
  return Status::OK();
}

Status ClusterConfig::SetAdminAddress(std::string_view name, std::string_view admin_address) {
  return SetListenerAddress(name, &NodeEntry::admin_address, admin_address);
}

Status ClusterConfig::SetPeerAddress(std::string_view name, std::string_view peer_address) {
  return SetListenerAddress(name, &NodeEntry::peer_address, peer_address);
}

Status ClusterConfig::SetMetricsAddress(std::string_view name, std::string_view metrics_address) {
  return SetListenerAddress(name, &NodeEntry::metrics_address, metrics_address);
}

Status ClusterConfig::Validate() const {
  if (primary() == nullptr) return Status::InvalidArgument("no coordinator-0");
  int expect = 0;
  for (const NodeEntry& n : nodes_) {
    if (n.role != NodeKind::kParticipant) continue;
    if (n.index != expect) {
      return Status::InvalidArgument("participants must be numbered 0..N-1; participant-" +
                                     std::to_string(expect) + " is missing");
    }
    ++expect;
  }
  if (expect == 0) return Status::InvalidArgument("no participants");
  return Status::OK();
}

Result<ClusterConfig> ClusterConfig::Parse(std::string_view text) {
  ClusterConfig config;
  std::optional<bool> tls;
  std::optional<std::string> certs, data;
  int line_no = 0;
  auto error = [&line_no](const std::string& what) {
    return Status::InvalidArgument("cluster.conf line " + std::to_string(line_no) + ": " + what);
  };
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = Trim(line);
    if (line.empty()) continue;
    size_t sp = line.find_first_of(" \t");
    if (sp == std::string_view::npos) return error("expected 'NAME ADDRESS' or 'SETTING VALUE'");
    std::string_view name = line.substr(0, sp);
    std::string_view address = Trim(line.substr(sp));
    // The settings: "tls on|off", "certs PATH", "data PATH" (a path may hold
    // spaces: the rest of the line).
    if (name == "tls") {
      if (tls.has_value()) return error("tls given twice");
      if (address != "on" && address != "off") return error("tls must be 'on' or 'off'");
      tls = address == "on";
      continue;
    }
    if (name == "certs" || name == "data") {
      std::optional<std::string>& setting = name == "certs" ? certs : data;
      if (setting.has_value()) return error(std::string(name) + " given twice");
      setting = std::string(address);
      continue;
    }
    std::string_view rest;
    if (size_t sp2 = address.find_first_of(" \t"); sp2 != std::string_view::npos) {
      rest = Trim(address.substr(sp2));
      address = address.substr(0, sp2);
    }
    // The optional listeners: "admin=", "peer=", "metrics=" HOST:PORT, each once.
    struct Listener {
      std::string_view key;
      std::string_view value;
    } listeners[] = {{"admin", {}}, {"peer", {}}, {"metrics", {}}};
    while (!rest.empty()) {
      size_t end = rest.find_first_of(" \t");
      std::string_view item = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : Trim(rest.substr(end));
      size_t eq = item.find('=');
      Listener* listener = nullptr;
      for (Listener& l : listeners) {
        if (eq != std::string_view::npos && item.substr(0, eq) == l.key) listener = &l;
      }
      if (listener == nullptr) {
        return error("expected 'admin=HOST:PORT', 'peer=HOST:PORT' or 'metrics=HOST:PORT' after "
                     "the address, got '" + std::string(item) + "'");
      }
      item = item.substr(eq + 1);
      if (item.empty()) return error("empty " + std::string(listener->key) + " address");
      if (!listener->value.empty()) return error(std::string(listener->key) + "= given twice");
      listener->value = item;
    }
    Status s = config.Add(name, address, listeners[0].value, listeners[1].value);
    if (s.ok() && !listeners[2].value.empty()) s = config.SetMetricsAddress(name, listeners[2].value);
    if (!s.ok()) return error(s.message());
  }
  if (certs.has_value() && !tls.has_value()) {
    return Status::InvalidArgument("cluster.conf: certs without a tls line");
  }
  if (tls.has_value()) {
    if (*tls && !certs.has_value()) {
      return Status::InvalidArgument("cluster.conf: tls on without a certs line");
    }
    config.security_ = ClusterSecurity{.tls = *tls, .certs_dir = certs.value_or("")};
  }
  if (data.has_value()) config.data_dir_ = *data;
  DTX_RETURN_IF_ERROR(config.Validate());
  return config;
}

Result<ClusterConfig> ClusterConfig::Load(const std::string& dir) {
  std::string path = dir + "/" + kClusterConfFile;
  auto text = ReadSmallFile(path, kClusterConfBytesMax);
  if (!text.ok()) return text.status();
  auto config = Parse(*text);
  if (!config.ok()) return Status::InvalidArgument(path + ": " + config.status().message());
  return config;
}

std::string ClusterConfig::Serialize() const {
  std::string out =
      "# dtx cluster: NAME ADDRESS admin=ADMIN_ADDRESS peer=PEER_ADDRESS (grammar: "
      "tools/cluster_config.h)\n";
  if (security_.has_value()) {
    out += security_->tls ? "tls on\n" : "tls off\n";
    if (!security_->certs_dir.empty()) out += "certs " + security_->certs_dir + "\n";
  }
  if (!data_dir_.empty()) out += "data " + data_dir_ + "\n";
  for (const NodeEntry& n : nodes_) {
    out += n.name + " " + n.address;
    if (!n.admin_address.empty()) out += " admin=" + n.admin_address;
    if (!n.peer_address.empty()) out += " peer=" + n.peer_address;
    if (!n.metrics_address.empty()) out += " metrics=" + n.metrics_address;
    out += "\n";
  }
  return out;
}

Status ClusterConfig::Save(const std::string& dir) const {
  DTX_RETURN_IF_ERROR(Validate());
  return WriteFileAtomic(dir + "/" + kClusterConfFile, Serialize());
}

const NodeEntry* ClusterConfig::Find(std::string_view name) const {
  for (const NodeEntry& n : nodes_) {
    if (n.name == name) return &n;
  }
  return nullptr;
}

std::vector<NodeEntry> ClusterConfig::participants() const {
  std::vector<NodeEntry> out;
  for (const NodeEntry& n : nodes_) {
    if (n.role == NodeKind::kParticipant) out.push_back(n);
  }
  return out;
}

Result<ClusterSecurity> ClusterSecurity::Parse(std::string_view text) {
  ClusterSecurity out;
  bool have_tls = false;
  bool have_certs = false;
  int line_no = 0;
  auto error = [&](const std::string& what) {
    return Status::InvalidArgument(std::string(kSecurityConfFile) + " line " +
                                   std::to_string(line_no) + ": " + what);
  };
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = Trim(line);
    if (line.empty()) continue;
    size_t sp = line.find_first_of(" \t");
    std::string_view key = line.substr(0, sp);
    std::string_view value = sp == std::string_view::npos ? "" : Trim(line.substr(sp));
    if (value.empty()) return error("expected 'KEY VALUE'");
    if (key == "tls") {
      if (have_tls) return error("tls given twice");
      if (value != "on" && value != "off") return error("tls must be 'on' or 'off'");
      out.tls = value == "on";
      have_tls = true;
    } else if (key == "certs") {
      if (have_certs) return error("certs given twice");
      out.certs_dir = std::string(value);
      have_certs = true;
    } else {
      return error("unknown key '" + std::string(key) + "' (expected tls or certs)");
    }
  }
  if (!have_tls) return Status::InvalidArgument(std::string(kSecurityConfFile) + ": no tls line");
  if (out.tls && out.certs_dir.empty()) {
    return Status::InvalidArgument(std::string(kSecurityConfFile) + ": tls on without certs");
  }
  return out;
}

Result<ClusterSecurity> ClusterSecurity::Load(const std::string& dir) {
  std::string path = dir + "/" + kSecurityConfFile;
  auto text = ReadSmallFile(path, kClusterConfBytesMax);
  if (!text.ok()) return text.status();
  auto security = Parse(*text);
  if (!security.ok()) return Status::InvalidArgument(dir + "/" + security.status().message());
  return security;
}

std::string ClusterSecurity::Serialize() const {
  std::string out = "# dtx cluster security (written by dtxctl cluster up)\n";
  out += tls ? "tls on\n" : "tls off    # --insecure: plaintext, nothing authenticated\n";
  if (!certs_dir.empty()) out += "certs " + certs_dir + "\n";
  return out;
}

Status ClusterSecurity::Save(const std::string& dir) const {
  if (certs_dir.find_first_of("#\n\r") != std::string::npos || Trim(certs_dir) != certs_dir) {
    return Status::InvalidArgument("certificate directory '" + certs_dir +
                                   "' cannot be written to " + kSecurityConfFile);
  }
  if (tls && certs_dir.empty()) {
    return Status::InvalidArgument("a TLS cluster needs a certificate directory");
  }
  return WriteFileAtomic(dir + "/" + kSecurityConfFile, Serialize());
}

std::string ClusterSecurity::CertsDir(const std::string& dir) const {
  if (certs_dir.empty() || certs_dir.front() == '/') return certs_dir;
  return dir + "/" + certs_dir;
}

namespace {
// `path` resolved against `dir` unless it is absolute (or empty).
std::string Resolve(const std::string& dir, const std::string& path) {
  if (path.empty() || path.front() == '/') return path;
  return dir + "/" + path;
}
}  // namespace

Result<ClusterFile> ClusterFile::Load(const std::string& path) {
  auto text = ReadSmallFile(path, kClusterConfBytesMax);
  if (!text.ok()) return text.status();
  auto config = ClusterConfig::Parse(*text);
  if (!config.ok()) return Status::InvalidArgument(path + ": " + config.status().message());
  ClusterFile file;
  file.path = path;
  file.dir = std::filesystem::path(path).parent_path().string();
  if (file.dir.empty()) file.dir = ".";
  file.config = std::move(*config);
  if (file.config.security().has_value()) {
    file.security = *file.config.security();
    return file;
  }
  auto security = ClusterSecurity::Load(file.dir);
  if (security.status().IsNotFound()) {
    return Status::InvalidArgument(path + ": no 'tls on' or 'tls off' line, and no " +
                                   kSecurityConfFile + " beside it");
  }
  if (!security.ok()) return security.status();
  file.security = std::move(*security);
  return file;
}

std::string ClusterFile::CertsDir() const {
  return security.tls ? Resolve(dir, security.certs_dir) : "";
}

std::string ClusterFile::NodeDir(std::string_view name) const {
  if (config.data_dir().empty()) return tools::NodeDir(dir, name);
  return tools::NodeDir(Resolve(dir, config.data_dir()), name);
}

NodeCommandLine MakeNodeCommandLine(const ClusterConfig& config, const NodeEntry& node,
                                    const std::string& node_dir) {
  // NAME=PEER_ADDRESS items: the names the nodes' access policies know their
  // peers by (node/access.h), at their peer listeners. Clients learn the
  // participants' client addresses from the coordinator's shard map
  // (--participant-clients) and the other coordinator's from its NOT_PRIMARY
  // hint (--peer-client).
  std::string participants, participant_clients, coordinators;
  for (const NodeEntry& p : config.participants()) {
    if (!participants.empty()) participants += ",";
    participants += p.name + "=" + p.peer_address;
    if (!participant_clients.empty()) participant_clients += ",";
    participant_clients += p.address;
  }
  for (const NodeEntry& c : config.nodes()) {
    if (c.role != NodeKind::kCoordinator) continue;
    if (!coordinators.empty()) coordinators += ",";
    coordinators += c.name + "=" + c.peer_address;
  }
  NodeCommandLine out;
  std::vector<std::string>& a = out.args;
  a = {"--name", node.name, "--listen", node.address, "--dir", node_dir, "--peer-listen",
       node.peer_address};
  if (!node.admin_address.empty()) a.insert(a.end(), {"--admin-listen", node.admin_address});
  if (!node.metrics_address.empty()) {
    a.insert(a.end(), {"--metrics-listen", node.metrics_address});
  }
  if (node.role == NodeKind::kCoordinator) {
    a.insert(a.end(),
             {"--participants", participants, "--participant-clients", participant_clients});
    const NodeEntry* c0 = config.Find("coordinator-0");
    const NodeEntry* c1 = config.Find("coordinator-1");
    if (c0 != nullptr && c1 != nullptr && (node.index == 0 || node.index == 1)) {
      out.role = node.index == 0 ? "primary" : "backup";
      out.peer = node.index == 0 ? c1 : c0;
      a.insert(a.end(), {"--peer", out.peer->name + "=" + out.peer->peer_address, "--peer-client",
                         out.peer->address});
    }
  } else {
    a.insert(a.end(),
             {"--coordinator", config.primary()->peer_address, "--coordinators", coordinators});
  }
  return out;
}

std::vector<std::string> SecurityArgs(const ClusterSecurity& security,
                                      const std::string& certs_dir) {
  if (!security.tls) return {"--insecure"};
  return {"--certs-dir", certs_dir};
}

std::string NodeDir(const std::string& dir, std::string_view node) {
  return dir + "/" + std::string(node);
}

std::string DefaultClusterDir() {
  const char* env = std::getenv("DTX_CLUSTER_DIR");
  if (env != nullptr && env[0] != '\0') return env;
  return "./dtx-cluster";
}

Result<pid_t> ReadPidFile(const std::string& path) {
  auto text = ReadSmallFile(path, 64);
  if (!text.ok()) return text.status();
  std::string_view t = Trim(*text);
  while (!t.empty() && t.back() == '\n') t.remove_suffix(1);
  long pid = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), pid);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size() || pid <= 1) {
    return Status::Corruption(path + ": not a pid");
  }
  return static_cast<pid_t>(pid);
}

Status WriteFileAtomic(const std::string& path, std::string_view text) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(tmp, errno);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Status::FromErrno(tmp, err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::FromErrno(tmp + ": fsync", err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno("rename to " + path, err);
  }
  return Status::OK();
}

Status WritePidFile(const std::string& path, pid_t pid) {
  return WriteFileAtomic(path, std::to_string(pid) + "\n");
}

namespace {
// The state letter from /proc/<pid>/stat, or 0 if the process is gone.
char ProcState(pid_t pid, std::string* stat_out) {
  auto text = ReadSmallFile("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!text.ok()) return 0;
  // "pid (comm) S ...": comm may contain spaces and parentheses; the state
  // follows the last ')'.
  size_t rp = text->rfind(')');
  if (rp == std::string::npos || rp + 2 >= text->size()) return 0;
  if (stat_out != nullptr) *stat_out = text->substr(rp + 2);
  return (*text)[rp + 2];
}
}  // namespace

bool ProcessAlive(pid_t pid) {
  if (pid <= 1) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  char state = ProcState(pid, nullptr);
  return state != 0 && state != 'Z' && state != 'X';
}

bool IsNodeProcess(pid_t pid, std::string_view node) {
  if (!ProcessAlive(pid)) return false;
  auto cmdline = ReadSmallFile("/proc/" + std::to_string(pid) + "/cmdline", 1u << 16);
  if (!cmdline.ok()) return false;
  std::string needle = "--name";
  needle.push_back('\0');
  needle += node;
  needle.push_back('\0');
  return cmdline->find(needle) != std::string::npos;
}

Result<ContextSwitches> ProcessContextSwitches(pid_t pid) {
  const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  std::filesystem::directory_iterator it(task_dir, ec);
  if (ec) return Status::NotFound("process " + std::to_string(pid) + " is gone");
  ContextSwitches total;
  for (const auto& entry : it) {
    std::ifstream status(entry.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      auto value = [&line](std::string_view key) -> std::optional<uint64_t> {
        if (!line.starts_with(key)) return std::nullopt;
        return std::strtoull(line.c_str() + key.size(), nullptr, 10);
      };
      if (auto v = value("voluntary_ctxt_switches:")) total.voluntary += *v;
      if (auto v = value("nonvoluntary_ctxt_switches:")) total.involuntary += *v;
    }
  }
  return total;
}

Result<double> ProcessCpuSeconds(pid_t pid) {
  std::string rest;
  if (ProcState(pid, &rest) == 0) {
    return Status::NotFound("process " + std::to_string(pid) + " is gone");
  }
  // Fields after ')': 3 state, 4 ppid, ... 14 utime, 15 stime (1-based in proc(5)).
  std::istringstream in(rest);
  std::string field;
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  long ticks = ::sysconf(_SC_CLK_TCK);
  if (ticks <= 0) ticks = 100;
  return static_cast<double>(utime + stime) / static_cast<double>(ticks);
}

std::string TailFile(const std::string& path, size_t lines_max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  constexpr std::streamoff kTailBytesMax = 64 << 10;
  std::streamoff start = size > kTailBytesMax ? size - kTailBytesMax : 0;
  in.seekg(start);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = data.size();
  if (pos > 0 && data[pos - 1] == '\n') --pos;
  size_t lines = 0;
  while (pos > 0) {
    size_t nl = data.rfind('\n', pos - 1);
    if (nl == std::string::npos) {
      pos = 0;
      break;
    }
    if (++lines == lines_max) {
      pos = nl + 1;
      break;
    }
    pos = nl;
  }
  return data.substr(pos);
}

}  // namespace dtx::tools
