#include "tests/netns_lab.h"

#include <signal.h>
#include <unistd.h>

#include <regex>
#include <sstream>

#include "tools/cluster_config.h"

namespace dtx::testing {

std::string IpBinary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

CommandResult Ip(std::vector<std::string> args) {
  args.insert(args.begin(), IpBinary());
  return RunCommand(args, 10000);
}

Status IpOk(const std::vector<std::string>& args) {
  CommandResult r = Ip(args);
  if (r.exit_code == 0) return Status::OK();
  std::string cmd = "ip";
  for (const auto& a : args) cmd += " " + a;
  return Status::Failed(cmd + ": " + r.Describe());
}

namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// "dtxn1234c0" -> 1234; -1 if the name is not ours.
long OwnerPid(const std::string& name) {
  static const std::regex re(std::string("^") + kNetnsPrefix + "([0-9]+)(c[01]|p[0-9]|w[0-9]|br)$");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return -1;
  return std::stol(m[1]);
}

bool Leftover(const std::string& name) {
  long pid = OwnerPid(name);
  return pid > 0 && (pid == ::getpid() || !tools::ProcessAlive(static_cast<pid_t>(pid)));
}

}  // namespace

void KillProcessesIn(const std::string& ns) {
  CommandResult r = Ip({"netns", "pids", ns});
  for (const std::string& line : Lines(r.out)) {
    if (line.empty() || line.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(line));
    if (pid > 1 && pid != ::getpid()) {
      ::kill(pid, SIGCONT);
      ::kill(pid, SIGKILL);
    }
  }
}

void RemoveLeftovers() {
  for (const std::string& line : Lines(Ip({"netns", "list"}).out)) {
    std::string name = line.substr(0, line.find(' '));
    if (!Leftover(name)) continue;
    KillProcessesIn(name);
    (void)Ip({"netns", "del", name});
  }
  for (const std::string& line : Lines(Ip({"-o", "link", "show"}).out)) {
    // "12: dtxn1234c0@if2: <...>"
    size_t colon = line.find(": ");
    if (colon == std::string::npos) continue;
    std::string name = line.substr(colon + 2);
    name = name.substr(0, name.find_first_of("@:"));
    if (Leftover(name)) (void)Ip({"link", "del", name});
  }
}

}  // namespace dtx::testing
