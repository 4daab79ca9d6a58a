#include "tests/harness.h"

#include "tools/admin_client.h"

#include "common/certs.h"
#include "common/check.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

extern char** environ;

namespace dtx::testing {
namespace fs = std::filesystem;

namespace {
std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
// Pids of live processes (not us) whose command line has an argument equal
// to `dir` or starting with `dir` + "/".
std::vector<pid_t> ProcessesMentioning(const std::string& dir) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == ::getpid() || !tools::ProcessAlive(pid)) continue;
    std::string cmdline = ReadAll("/proc/" + name + "/cmdline");
    size_t start = 0;
    while (start < cmdline.size()) {
      size_t end = cmdline.find('\0', start);
      if (end == std::string::npos) end = cmdline.size();
      std::string_view arg(cmdline.data() + start, end - start);
      if (arg == dir || arg.starts_with(dir + "/")) {
        out.push_back(pid);
        break;
      }
      start = end + 1;
    }
  }
  return out;
}

}  // namespace

std::string CommandResult::Describe() const {
  std::string s = timed_out ? "timed out" : "exit " + std::to_string(exit_code);
  return s + "\n--- stdout:\n" + out + "\n--- stderr:\n" + err;
}

CommandResult RunCommand(const std::vector<std::string>& argv, int timeout_ms,
                         const std::vector<std::string>& extra_env) {
  CommandResult r;
  TempDir io("dtx-cmd");
  std::string out_path = io.path() + "/stdout";
  std::string err_path = io.path() + "/stderr";
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e) env_s.emplace_back(*e);
  env_s.insert(env_s.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> env;
  for (auto& e : env_s) env.push_back(e.data());
  env.push_back(nullptr);
  std::vector<std::string> argv_s = argv;
  std::vector<char*> args;
  for (auto& a : argv_s) args.push_back(a.data());
  args.push_back(nullptr);
  int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out_fd < 0 || err_fd < 0 || null_fd < 0 || argv.empty()) {
    r.err = "cannot set up the command's output files";
    return r;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::execve(args[0], args.data(), env.data());
    ::_exit(127);
  }
  ::close(out_fd);
  ::close(err_fd);
  ::close(null_fd);
  if (pid < 0) {
    r.err = std::string("fork: ") + std::strerror(errno);
    return r;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.exit_code = 128 + WTERMSIG(status);
  r.out = ReadAll(out_path);
  r.err = ReadAll(err_path);
  return r;
}

TempDir::TempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = (tmp != nullptr && tmp[0] != '\0') ? tmp : "/tmp";
  std::string templ = base + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  char* p = ::mkdtemp(buf.data());
  DTX_CHECK_MSG(p != nullptr, "mkdtemp failed");
  path_ = p;
}

TempDir::~TempDir() {
  if (keep_) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

std::string DtxctlPath() { return DTX_DTXCTL_PATH; }

ChildProcess::~ChildProcess() { Stop(0); }

Status ChildProcess::Start(const std::vector<std::string>& argv, const std::string& output_path) {
  if (pid_ > 0) return Status::InvalidArgument("child already started");
  if (argv.empty()) return Status::InvalidArgument("empty argv");
  int out_fd = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out_fd < 0 || null_fd < 0) {
    if (out_fd >= 0) ::close(out_fd);
    if (null_fd >= 0) ::close(null_fd);
    return Status::IOError("cannot open " + output_path + " or /dev/null");
  }
  std::vector<std::string> argv_s = argv;
  std::vector<char*> args;
  for (auto& a : argv_s) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(out_fd, 2);
    ::execve(args[0], args.data(), environ);
    ::_exit(127);
  }
  ::close(out_fd);
  ::close(null_fd);
  if (pid < 0) return Status::IOError(std::string("fork: ") + std::strerror(errno));
  pid_ = pid;
  return Status::OK();
}

void ChildProcess::Signal(int signum) {
  if (pid_ > 0) ::kill(pid_, signum);
}

int ChildProcess::Stop(int timeout_ms) {
  if (pid_ <= 0) return -1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid_, &status, WNOHANG);
    if (w == pid_) break;
    if (w < 0 && errno != EINTR) {
      pid_ = -1;
      return -1;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid_, SIGCONT);  // a stopped child still dies of SIGKILL; be explicit
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string TailOfFile(const std::string& path, size_t lines) {
  std::string text = ReadAll(path);
  size_t pos = text.size();
  for (size_t n = 0; n <= lines && pos > 0;) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
    ++n;
    if (n > lines) {
      ++pos;
      break;
    }
  }
  return text.substr(pos);
}

LocalCluster::LocalCluster() : dir_("dtx-cluster") {
  tools::QuietThriftLogging();
  // Tests kill nodes while the test's own clients talk to them: a write to a
  // dead peer must be an error, not SIGPIPE for the test process.
  ::signal(SIGPIPE, SIG_IGN);
}

LocalCluster::~LocalCluster() { Down(); }

Status LocalCluster::Up(const Options& options) {
  if (!options.dtxctl.empty()) dtxctl_ = options.dtxctl;
  std::vector<std::string> argv = {dtxctl_,
                                   "cluster",
                                   "up",
                                   "--dir",
                                   dir(),
                                   "--participants",
                                   std::to_string(options.participants),
                                   "--timeout",
                                   std::to_string(options.up_timeout_s)};
  if (!options.bin_dir.empty()) {
    argv.push_back("--bin-dir");
    argv.push_back(options.bin_dir);
  }
  if (!options.participant_bin.empty()) {
    argv.push_back("--participant-bin");
    argv.push_back(options.participant_bin);
  }
  if (!options.coordinator_bin.empty()) {
    argv.push_back("--coordinator-bin");
    argv.push_back(options.coordinator_bin);
  }
  if (options.backup) argv.push_back("--backup");
  argv.insert(argv.end(), options.up_flags.begin(), options.up_flags.end());
  up_ = true;  // even a failed `up` may have left something to clean up
  CommandResult r = RunCommand(argv, (options.up_timeout_s + 30) * 1000, options.env);
  if (r.exit_code != 0) {
    return Status::Unavailable("dtxctl cluster up failed: " + r.Describe());
  }
  auto config = tools::ClusterConfig::Load(dir());
  if (!config.ok()) return config.status();
  config_ = *config;
  auto creds = tools::ToolCredentials::Load(dir());
  if (!creds.ok()) return creds.status();
  creds_ = std::move(*creds);
  return Status::OK();
}

ClientOptions LocalCluster::ClientOptionsFor() const {
  ClientOptions o;
  for (const auto& n : config_.nodes()) {
    if (n.role == tools::NodeKind::kCoordinator) o.coordinators.push_back(n.address);
  }
  return WithClusterTls(dir(), std::move(o));
}

tools::ConnectionTls LocalCluster::ClientTlsAt(const std::string& address) const {
  for (const auto& n : config_.nodes()) {
    if (n.address == address) return creds_.ForClientListener(n);
  }
  // Not a node of this cluster: any principal of the CA.
  return tools::ConnectionTls{.context = creds_.client, .expected = {}};
}

namespace {
// The kind of a test node's certificate, by its name.
PrincipalKind TestNodeKind(const std::string& name) {
  return name.starts_with("coordinator-") ? PrincipalKind::kCoordinator
                                          : PrincipalKind::kParticipant;
}
}  // namespace

Status MakeClusterCerts(const std::string& cluster_dir, const std::vector<std::string>& nodes) {
  const std::string certs = cluster_dir + "/" + tools::kCertsDirName;
  DTX_RETURN_IF_ERROR(CreateCa(certs, CertOptions{}));
  for (const std::string& n : nodes) {
    DTX_RETURN_IF_ERROR(CreateCert(certs, TestNodeKind(n), n, CertOptions{}));
  }
  DTX_RETURN_IF_ERROR(CreateCert(certs, PrincipalKind::kAdmin, "admin", CertOptions{}));
  DTX_RETURN_IF_ERROR(CreateCert(certs, PrincipalKind::kClient, "client", CertOptions{}));
  tools::ClusterSecurity sec;
  sec.tls = true;
  sec.certs_dir = tools::kCertsDirName;
  return sec.Save(cluster_dir);
}

Result<TestTls> TestTls::Make(const std::string& cluster_dir,
                              const std::vector<std::string>& nodes) {
  DTX_RETURN_IF_ERROR(MakeClusterCerts(cluster_dir, nodes));
  TestTls t;
  t.cluster_dir_ = cluster_dir;
  t.certs_dir_ = cluster_dir + "/" + tools::kCertsDirName;
  std::vector<std::string> names = nodes;
  names.insert(names.end(), {std::string(tools::kAdminCertName), tools::kClientCertName});
  for (const std::string& name : names) {
    const TlsFiles files{.ca_file = CaCertPath(t.certs_dir_),
                         .cert_file = CertPath(t.certs_dir_, name),
                         .key_file = KeyPath(t.certs_dir_, name)};
    auto client = TlsContext::Create(files, TlsSide::kClient);
    if (!client.ok()) return client.status();
    t.client_[name] = *client;
    auto server = TlsContext::Create(files, TlsSide::kServer);
    if (!server.ok()) return server.status();
    t.server_[name] = *server;
  }
  return t;
}

std::shared_ptr<const TlsContext> TestTls::ClientContext(const std::string& name) const {
  auto it = client_.find(name);
  DTX_CHECK_MSG(it != client_.end(), "TestTls: no certificate made for this name");
  return it->second;
}

std::shared_ptr<const TlsContext> TestTls::ServerContext(const std::string& name) const {
  auto it = server_.find(name);
  DTX_CHECK_MSG(it != server_.end(), "TestTls: no certificate made for this name");
  return it->second;
}

tools::ConnectionTls TestTls::Connect(const std::string& as, const std::string& node) const {
  return tools::ConnectionTls{.context = ClientContext(as), .expected = Expect(node)};
}

TlsExpectedPeer TestTls::Expect(const std::string& node) {
  return TlsExpectedPeer{.kind = TestNodeKind(node), .name = node};
}

ClientOptions TestTls::ForClient(ClientOptions options) const {
  return WithClusterTls(cluster_dir_, std::move(options));
}

int FreePort() {
  // Below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768
  // and up by default) and below `dtxctl cluster up`'s 20000-31999: an
  // outgoing connection's source port is never one of these, so a node
  // restarted on its port finds it free. Each port is handed out once per
  // process, so two nodes of one test never get the same one.
  constexpr int kLow = 12000;
  constexpr int kHigh = 20000;
  static std::mutex mu;
  static std::set<int> given;
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()));
  std::lock_guard<std::mutex> lock(mu);
  const int span = kHigh - kLow;
  const int start = static_cast<int>(rng() % static_cast<unsigned>(span));
  for (int i = 0; i < span; ++i) {
    const int port = kLow + (start + i) % span;
    if (given.count(port) != 0) continue;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    ::close(fd);
    if (free) {
      given.insert(port);
      return port;
    }
  }
  return -1;
}

const TestTls& SharedTestTls() {
  struct Shared {
    TempDir dir{"dtx-test-certs"};
    TestTls tls;
  };
  static const Shared* const shared = [] {
    static Shared s;
    auto t = TestTls::Make(s.dir.path(), {"coordinator-0", "coordinator-1", "participant-0",
                                          "participant-1", "participant-2", "participant-3"});
    DTX_CHECK_MSG(t.ok(), "cannot make the test certificates");
    s.tls = std::move(*t);
    return &s;
  }();
  return shared->tls;
}

ClientOptions WithClusterTls(const std::string& cluster_dir, ClientOptions options) {
  auto sec = tools::ClusterSecurity::Load(cluster_dir);
  if (!sec.ok() || !sec->tls) return options;
  const std::string certs = sec->CertsDir(cluster_dir);
  options.tls_ca_file = CaCertPath(certs);
  options.tls_cert_file = CertPath(certs, "client");
  options.tls_key_file = KeyPath(certs, "client");
  return options;
}

void LocalCluster::Down() {
  if (!up_) return;
  up_ = false;
  RunCommand({dtxctl_, "cluster", "down", "--dir", dir()}, 30000);
  if (config_.nodes().empty()) {
    auto config = tools::ClusterConfig::Load(dir());
    if (config.ok()) config_ = *config;
  }
  // Whatever survived (a hung dtxctl, a killed supervisor): SIGKILL by pid.
  auto sup = tools::ReadPidFile(dir() + "/" + tools::kSupervisorPidFile);
  if (sup.ok() && tools::ProcessAlive(*sup)) {
    std::ifstream in("/proc/" + std::to_string(*sup) + "/cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find("supervise") != std::string::npos) ::kill(*sup, SIGKILL);
  }
  for (const tools::NodeEntry& n : config_.nodes()) {
    pid_t pid = NodePid(n.name);
    if (pid > 0 && tools::IsNodeProcess(pid, n.name)) ::kill(pid, SIGKILL);
  }
  // Last resort for a process whose pid file was never written (e.g. its
  // supervisor was killed between spawning it and writing the file): every
  // process of this cluster has the directory in its command line.
  for (pid_t pid : ProcessesMentioning(dir())) ::kill(pid, SIGKILL);
}

CommandResult LocalCluster::Dtxctl(std::vector<std::string> args, int timeout_ms) const {
  args.insert(args.begin(), dtxctl_);
  args.push_back("--dir");
  args.push_back(dir());
  return RunCommand(args, timeout_ms);
}

std::string LocalCluster::coordinator_address() const {
  const tools::NodeEntry* p = config_.primary();
  return p == nullptr ? "" : p->address;
}

std::vector<std::string> LocalCluster::participant_addresses() const {
  std::vector<std::string> out;
  for (const auto& n : config_.participants()) out.push_back(n.address);
  return out;
}

pid_t LocalCluster::NodePid(const std::string& node) const {
  auto pid = tools::ReadPidFile(tools::NodeDir(dir(), node) + "/" + tools::kNodePidFile);
  return pid.ok() ? *pid : -1;
}

std::string LocalCluster::LogTails(size_t lines) const {
  std::string out;
  auto add = [&](const std::string& path) {
    std::string tail = tools::TailFile(path, lines);
    if (!tail.empty()) out += "---- " + path + "\n" + tail + "\n";
  };
  add(dir() + "/" + tools::kSupervisorLogFile);
  for (const auto& n : config_.nodes()) {
    add(tools::NodeDir(dir(), n.name) + "/" + tools::kNodeConsoleFile);
    add(tools::NodeDir(dir(), n.name) + "/" + tools::kNodeLogFile);
  }
  return out;
}

}  // namespace dtx::testing
