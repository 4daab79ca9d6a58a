// Test hosts as network namespaces (ip netns, veth pairs, one bridge), for
// the tests that run each node on its own "host": tests/ha_netns_test.cc
// (partitions) and tests/multihost_netns_test.cc (a cluster started from one
// cluster file).
//
//   root ns: bridge dtxn<pid>br, 10.A.B.1/24      (the test itself)
//     |-- veth dtxn<pid>c0 <-> eth0 in ns dtxn<pid>c0, 10.A.B.10  ("c0")
//     |-- ... c1 10.A.B.11, p0..p9 10.A.B.20.., w0..w9 10.A.B.30..
//   (A = 100 + (pid / 256) % 100, B = pid % 256)
//
// Host names are c0, c1 (coordinators), p0..p9 (participants) and w0..w9
// (workload clients). Everything is named dtxn<pid>...; RemoveLeftovers()
// removes what a dead earlier run left, and a NetnsLab removes its own
// namespaces, links and the processes in them on destruction. Needs root
// and `ip`.
//
// Not thread-safe; one lab per test.
#pragma once

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/status.h"
#include "tests/harness.h"

namespace dtx::testing {

inline constexpr int kNetnsNodePort = 7000;
inline constexpr int kNetnsPeerPort = 7001;  // the peer listener (--peer-listen)
inline constexpr const char* kNetnsPrefix = "dtxn";

// The ip binary; "" when there is none.
std::string IpBinary();
// Runs `ip ARGS` (10 s timeout).
CommandResult Ip(std::vector<std::string> args);
// `ip ARGS`; an error naming the command when it fails.
Status IpOk(const std::vector<std::string>& args);
// Kills every process in namespace `ns`.
void KillProcessesIn(const std::string& ns);
// Removes namespaces and links named dtxn<pid>... of processes that no longer
// exist (an earlier run that died) or of this process.
void RemoveLeftovers();

// The last octet of host `kind`N is HostNumberBase(kind) + N.
inline int HostNumberBase(char kind) { return kind == 'c' ? 10 : kind == 'p' ? 20 : 30; }

// The namespaces, veths and bridge of one test; removed on destruction.
class NetnsLab {
 public:
  struct Host {
    std::string name;  // "c0", "p1"
    std::string ns;    // also the host-side veth's name
    std::string ip;
  };

  // On failure the lab is torn down again; the status says which step failed.
  Status Create(const std::vector<std::string>& hosts) {
    const long pid = ::getpid();
    prefix_ = kNetnsPrefix + std::to_string(pid);
    subnet_ =
        "10." + std::to_string(100 + (pid / 256) % 100) + "." + std::to_string(pid % 256) + ".";
    bridge_ = prefix_ + "br";
    created_ = true;
    DTX_RETURN_IF_ERROR(IpOk({"link", "add", bridge_, "type", "bridge"}));
    DTX_RETURN_IF_ERROR(IpOk({"addr", "add", subnet_ + "1/24", "dev", bridge_}));
    DTX_RETURN_IF_ERROR(IpOk({"link", "set", bridge_, "up"}));
    for (const std::string& h : hosts) {
      Host host{h, prefix_ + h,
                subnet_ + std::to_string(HostNumberBase(h[0]) + std::stoi(h.substr(1)))};
      hosts_.push_back(host);
      DTX_RETURN_IF_ERROR(IpOk({"netns", "add", host.ns}));
      DTX_RETURN_IF_ERROR(
          IpOk({"link", "add", host.ns, "type", "veth", "peer", "name", "eth0", "netns", host.ns}));
      DTX_RETURN_IF_ERROR(IpOk({"link", "set", host.ns, "master", bridge_}));
      DTX_RETURN_IF_ERROR(IpOk({"link", "set", host.ns, "up"}));
      DTX_RETURN_IF_ERROR(IpOk({"-n", host.ns, "link", "set", "lo", "up"}));
      DTX_RETURN_IF_ERROR(IpOk({"-n", host.ns, "addr", "add", host.ip + "/24", "dev", "eth0"}));
      DTX_RETURN_IF_ERROR(IpOk({"-n", host.ns, "link", "set", "eth0", "up"}));
    }
    return Status::OK();
  }

  ~NetnsLab() { Destroy(); }

  void Destroy() {
    if (!created_) return;
    created_ = false;
    for (const Host& h : hosts_) KillProcessesIn(h.ns);
    for (const Host& h : hosts_) {
      (void)Ip({"link", "del", h.ns});
      (void)Ip({"netns", "del", h.ns});
    }
    (void)Ip({"link", "del", bridge_});
    hosts_.clear();
  }

  const Host& host(const std::string& name) const {
    for (const Host& h : hosts_) {
      if (h.name == name) return h;
    }
    DTX_CHECK_MSG(false, "unknown host");
    return hosts_.front();
  }
  std::string Address(const std::string& name) const {
    return host(name).ip + ":" + std::to_string(kNetnsNodePort);
  }
  std::string PeerAddress(const std::string& name) const {
    return host(name).ip + ":" + std::to_string(kNetnsPeerPort);
  }

  // Drops all traffic between hosts a and b (both directions).
  Status Cut(const std::string& a, const std::string& b) {
    DTX_RETURN_IF_ERROR(IpOk({"-n", host(a).ns, "route", "add", "blackhole", host(b).ip + "/32"}));
    DTX_RETURN_IF_ERROR(IpOk({"-n", host(b).ns, "route", "add", "blackhole", host(a).ip + "/32"}));
    cuts_.insert({a, b});
    return Status::OK();
  }
  Status HealAll() {
    Status first;
    for (const auto& [a, b] : cuts_) {
      for (const auto& [x, y] : {std::pair{a, b}, std::pair{b, a}}) {
        Status s = IpOk({"-n", host(x).ns, "route", "del", "blackhole", host(y).ip + "/32"});
        if (!s.ok() && first.ok()) first = s;
      }
    }
    cuts_.clear();
    return first;
  }

  // argv prefix that runs a command inside host `name`'s namespace (ip
  // execs the command: the child's pid is the command's).
  std::vector<std::string> Exec(const std::string& name) const {
    return {IpBinary(), "netns", "exec", host(name).ns};
  }

 private:
  bool created_ = false;
  std::string prefix_, subnet_, bridge_;
  std::vector<Host> hosts_;
  std::set<std::pair<std::string, std::string>> cuts_;
};

}  // namespace dtx::testing
