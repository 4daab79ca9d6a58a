#include "tools/certs_cmd.h"

#include <arpa/inet.h>

#include <boost/program_options.hpp>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "common/certs.h"

namespace dtx::tools {
namespace {

namespace po = boost::program_options;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

const char* kCertsUsage =
    "usage: dtxctl certs <subcommand> [options]   (--dir defaults to CLUSTERDIR/certs)\n"
    "\n"
    "  create-ca [--dir DIR] [--days N] [--key-type ec|rsa] [--overwrite]\n"
    "                        the cluster CA: DIR/ca.crt, DIR/ca.key (0600)\n"
    "  create-node NAME [--dir DIR] [--san HOST_OR_IP]... [--days N] [--key-type ec|rsa]\n"
    "              [--overwrite]\n"
    "                        a node's certificate (NAME coordinator-N, participant-N) or the\n"
    "                        operator's (NAME admin): DIR/NAME.crt, DIR/NAME.key (0600)\n"
    "  create-client NAME [--dir DIR] [--days N] [--key-type ec|rsa] [--overwrite]\n"
    "                        a client's certificate (NAME: [a-z0-9-]{1,64})\n"
    "  show FILE [--ca CA]   what a certificate says; with --ca, whether it verifies\n"
    "\n"
    "An existing key is never replaced without --overwrite.\n";

int Usage(const std::string& error) {
  std::cerr << "dtxctl certs: " << error << "\n\n" << kCertsUsage;
  return kExitUsage;
}

int Fail(const std::string& message) {
  std::cerr << "dtxctl certs: " << message << "\n";
  return kExitFailed;
}

bool IsIpAddress(const std::string& s) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// Puts `host` into the IP or the DNS subjectAltNames of `options`.
void AddSan(const std::string& host, CertOptions* options) {
  if (IsIpAddress(host)) {
    options->extra_ip_addresses.push_back(host);
  } else {
    options->extra_dns_names.push_back(host);
  }
}

// The flags every create-* subcommand takes.
struct CreateFlags {
  std::string dir;
  std::string name;
  int days = 0;
  std::string key_type;
  bool overwrite = false;
  std::vector<std::string> sans;
};

// Parses `args` for a create-* subcommand; `with_name` takes NAME, `with_san`
// takes --san. Returns false with *exit_code set after printing an error.
bool ParseCreateFlags(const std::vector<std::string>& args, bool with_name, bool with_san,
                      CreateFlags* f, CertOptions* options, int* exit_code) {
  po::options_description desc("options");
  desc.add_options()("help,h", "show help")(
      "dir", po::value<std::string>(&f->dir)->default_value(DefaultClusterDir() + "/certs"),
      "certificate directory")("days", po::value<int>(&f->days)->default_value(0),
                               "validity in days (default 3650 for the CA, 825 otherwise)")(
      "key-type", po::value<std::string>(&f->key_type)->default_value("ec"),
      "ec (ECDSA P-256) or rsa (RSA 2048)")("overwrite", po::bool_switch(&f->overwrite),
                                            "replace an existing key and certificate");
  if (with_name) desc.add_options()("name", po::value<std::string>(&f->name)->required(), "name");
  if (with_san) {
    desc.add_options()("san", po::value<std::vector<std::string>>(&f->sans),
                       "extra subjectAltName: a host name or IP address (repeatable)");
  }
  po::positional_options_description positional;
  if (with_name) positional.add("name", 1);
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).positional(positional).run(), vm);
    if (vm.count("help")) {
      std::cout << kCertsUsage << "\n" << desc;
      *exit_code = kExitOk;
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    *exit_code = Usage(e.what());
    return false;
  }
  if (f->days < 0 || f->days > kValidityDaysMax) {
    *exit_code = Usage("--days must be 1.." + std::to_string(kValidityDaysMax));
    return false;
  }
  if (f->key_type != "ec" && f->key_type != "rsa") {
    *exit_code = Usage("--key-type must be ec or rsa");
    return false;
  }
  options->validity_days = f->days;
  options->key_type = f->key_type == "rsa" ? KeyType::kRsa2048 : KeyType::kEcdsaP256;
  options->overwrite = f->overwrite;
  for (const std::string& san : f->sans) AddSan(san, options);
  return true;
}

// An error from common/certs.h, with what to do about the usual ones.
int FailWithHint(const Status& s, const std::string& dir) {
  std::string m = s.message();
  if (s.IsNotFound()) m += "; create one first: dtxctl certs create-ca --dir " + dir;
  if (s.IsInvalidArgument() && m.find("already exists") != std::string::npos) {
    m += " (pass --overwrite to replace it)";
  }
  return Fail(m);
}

int CmdCreateCa(const std::vector<std::string>& args) {
  CreateFlags f;
  CertOptions options;
  int code = 0;
  if (!ParseCreateFlags(args, false, false, &f, &options, &code)) return code;
  Status s = CreateCa(f.dir, options);
  if (!s.ok()) return FailWithHint(s, f.dir);
  std::cout << "created " << CaCertPath(f.dir) << " and " << CaKeyPath(f.dir) << "\n";
  return kExitOk;
}

int CreatePrincipal(const CreateFlags& f, PrincipalKind kind, const CertOptions& options) {
  Status s = CreateCert(f.dir, kind, f.name, options);
  if (!s.ok()) return FailWithHint(s, f.dir);
  std::cout << "created " << CertPath(f.dir, f.name) << " and " << KeyPath(f.dir, f.name) << " ("
            << PrincipalKindName(kind) << " " << f.name << ")\n";
  return kExitOk;
}

int CmdCreateNode(const std::vector<std::string>& args) {
  CreateFlags f;
  CertOptions options;
  int code = 0;
  if (!ParseCreateFlags(args, true, true, &f, &options, &code)) return code;
  Result<PrincipalKind> kind = NodeCertKind(f.name);
  if (!kind.ok()) return Usage(kind.status().message());
  return CreatePrincipal(f, *kind, options);
}

int CmdCreateClient(const std::vector<std::string>& args) {
  CreateFlags f;
  CertOptions options;
  int code = 0;
  if (!ParseCreateFlags(args, true, false, &f, &options, &code)) return code;
  if (NodeCertKind(f.name).ok()) {
    return Usage("'" + f.name + "' names a node or the operator; use create-node " + f.name);
  }
  Status valid = ValidatePrincipalName(f.name);
  if (!valid.ok()) return Usage(valid.message());
  return CreatePrincipal(f, PrincipalKind::kClient, options);
}

std::string FormatUtc(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string Join(const std::string& prefix, const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : " ") + prefix + s;
  return out.empty() ? "(none)" : out;
}

int CmdShow(const std::vector<std::string>& args) {
  std::string file;
  std::string ca;
  po::options_description desc("options");
  desc.add_options()("help,h", "show help")("file", po::value<std::string>(&file)->required(),
                                            "certificate file")(
      "ca", po::value<std::string>(&ca), "also verify FILE against this CA certificate");
  po::positional_options_description positional;
  positional.add("file", 1);
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).positional(positional).run(), vm);
    if (vm.count("help")) {
      std::cout << kCertsUsage << "\n" << desc;
      return kExitOk;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return Usage(e.what());
  }
  Result<CertInfo> info = ReadCertInfo(file);
  if (!info.ok()) return Fail(info.status().message());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  std::string state =
      "valid, expires in " + std::to_string((info->not_after_unix - now) / 86400) + " days";
  if (info->ExpiredAt(now)) {
    state = "EXPIRED " + std::to_string((now - info->not_after_unix) / 86400) + " days ago";
  } else if (info->NotYetValidAt(now)) {
    state = "NOT YET VALID";
  }
  std::vector<std::string> names;
  for (const std::string& dns : info->dns_names) names.push_back("DNS:" + dns);
  for (const std::string& ip : info->ip_addresses) names.push_back("IP:" + ip);
  std::cout << "file     " << file << "\n"
            << "name     " << info->common_name << "\n"
            << "kind     "
            << (info->is_ca                         ? "CA"
                : info->organizational_unit.empty() ? "(none)"
                                                    : info->organizational_unit)
            << "\n"
            << "issuer   " << info->issuer_common_name << "\n"
            << "valid    " << FormatUtc(info->not_before_unix) << " .. "
            << FormatUtc(info->not_after_unix) << " (" << state << ")\n"
            << "names    " << Join("", names) << "\n"
            << "usage    " << Join("", info->extended_key_usages) << "\n"
            << "key      " << info->key_type << "\n"
            << "serial   " << info->serial_hex << "\n";
  if (ca.empty()) return kExitOk;
  Status verified = VerifyCert(ca, file);
  if (!verified.ok()) return Fail(verified.message());
  std::cout << "verified against " << ca << "\n";
  return kExitOk;
}

}  // namespace

Result<PrincipalKind> NodeCertKind(const std::string& name) {
  if (name == kAdminCertName) return PrincipalKind::kAdmin;
  Result<NodeEntry> node = ParseNodeName(name);
  if (!node.ok()) {
    return Status::InvalidArgument("'" + name +
                                   "' is not a node name (coordinator-N, participant-N) or "
                                   "admin; for a client use: dtxctl certs create-client " +
                                   name);
  }
  return node->role == NodeKind::kCoordinator ? PrincipalKind::kCoordinator
                                              : PrincipalKind::kParticipant;
}

int RunCertsCommand(std::vector<std::string> args) {
  if (args.empty()) return Usage("expected create-ca, create-node, create-client or show");
  const std::string sub = args[0];
  args.erase(args.begin());
  if (sub == "create-ca") return CmdCreateCa(args);
  if (sub == "create-node") return CmdCreateNode(args);
  if (sub == "create-client") return CmdCreateClient(args);
  if (sub == "show") return CmdShow(args);
  if (sub == "-h" || sub == "--help" || sub == "help") {
    std::cout << kCertsUsage;
    return kExitOk;
  }
  return Usage("unknown subcommand '" + sub + "'");
}

Status CreateClusterCerts(const std::string& certs_dir, const ClusterConfig& config) {
  namespace fs = std::filesystem;
  const bool have_crt = fs::exists(CaCertPath(certs_dir));
  const bool have_key = fs::exists(CaKeyPath(certs_dir));
  if (have_crt != have_key) {
    return Status::InvalidArgument(certs_dir + " holds only one of ca.crt and ca.key; restore " +
                                   "the other or remove both to make a new CA");
  }
  const bool new_ca = !have_crt;
  if (new_ca) DTX_RETURN_IF_ERROR(CreateCa(certs_dir, CertOptions{}));

  struct Principal {
    std::string name;
    PrincipalKind kind;
    std::string host;  // the node's address host, an extra SAN; "" for none
  };
  std::vector<Principal> principals;
  for (const NodeEntry& n : config.nodes()) {
    Result<HostPort> hp = ParseHostPort(n.address);
    if (!hp.ok()) return hp.status();
    principals.push_back({n.name,
                          n.role == NodeKind::kCoordinator ? PrincipalKind::kCoordinator
                                                           : PrincipalKind::kParticipant,
                          hp->host});
  }
  principals.push_back({kAdminCertName, PrincipalKind::kAdmin, ""});
  principals.push_back({kClientCertName, PrincipalKind::kClient, ""});

  for (const Principal& p : principals) {
    // A certificate that still verifies against this CA is kept: clients
    // holding copies of it keep working across cluster up / down.
    if (!new_ca && fs::exists(KeyPath(certs_dir, p.name)) &&
        VerifyCert(CaCertPath(certs_dir), CertPath(certs_dir, p.name)).ok()) {
      continue;
    }
    CertOptions options;
    options.overwrite = true;
    if (!p.host.empty()) AddSan(p.host, &options);
    DTX_RETURN_IF_ERROR(CreateCert(certs_dir, p.kind, p.name, options));
  }
  return Status::OK();
}

Status SetUpClusterSecurity(const std::string& dir, const ClusterConfig& config, bool insecure) {
  ClusterSecurity security;
  if (insecure) {
    std::cerr << "dtxctl: " << kInsecureWarning << "\n";
    security.tls = false;
  } else {
    security.certs_dir = kCertsDirName;
    DTX_RETURN_IF_ERROR(CreateClusterCerts(security.CertsDir(dir), config));
  }
  return security.Save(dir);
}

}  // namespace dtx::tools
