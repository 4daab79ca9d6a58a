#include "tools/cluster_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

namespace dtx::tools {
namespace {

TEST(ClusterConfigTest, ParsesNodesInShardOrderWithCommentsAndBlankLines) {
  auto c = ClusterConfig::Parse(
      "# a cluster\n"
      "participant-1 127.0.0.1:40003\n"
      "\n"
      "coordinator-0   127.0.0.1:40001   # primary\n"
      "participant-0\t127.0.0.1:40002\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->nodes().size(), 3u);
  EXPECT_EQ(c->nodes()[0].name, "coordinator-0");
  ASSERT_NE(c->primary(), nullptr);
  EXPECT_EQ(c->primary()->address, "127.0.0.1:40001");
  auto ps = c->participants();
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].name, "participant-0");
  EXPECT_EQ(ps[0].address, "127.0.0.1:40002");
  EXPECT_EQ(ps[1].index, 1);
  EXPECT_EQ(ps[1].role, NodeKind::kParticipant);
}

TEST(ClusterConfigTest, RejectsBadLinesNamingTheLine) {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"coordinator-0\n", "line 1"},
      {"coordinator-0 127.0.0.1:1\nparticipant-0 127.0.0.1\n", "line 2"},
      {"coordinator-0 127.0.0.1:1\nparticipant-0 127.0.0.1:70000\n", "port"},
      {"coordinator-0 127.0.0.1:1\nworker-0 127.0.0.1:2\n", "worker-0"},
      {"coordinator-0 127.0.0.1:1\nparticipant-0 127.0.0.1:2 extra\n", "admin=HOST:PORT"},
      {"coordinator-0 127.0.0.1:1\nparticipant-0 127.0.0.1:2 admin=127.0.0.1:3 x\n",
       "admin=HOST:PORT"},
      {"coordinator-0 127.0.0.1:1\nparticipant-0 127.0.0.1:2 admin=\n", "empty admin"},
      {"coordinator-0 127.0.0.1:1 admin=127.0.0.1:1\nparticipant-0 127.0.0.1:2\n", "must differ"},
      {"coordinator-0 127.0.0.1:1 admin=127.0.0.1:2\nparticipant-0 127.0.0.1:2\n", "used by both"},
      {"coordinator-0 127.0.0.1:1\nparticipant-0 127.0.0.1:2\nparticipant-0 127.0.0.1:3\n",
       "twice"},
      {"coordinator-0 127.0.0.1:1\nparticipant-0 127.0.0.1:1\n", "used by both"},
      {"coordinator-0 127.0.0.1:1\nparticipant-1 127.0.0.1:2\n", "participant-0 is missing"},
      {"participant-0 127.0.0.1:2\n", "coordinator-0"},
      {"coordinator-0 127.0.0.1:1\n", "no participants"},
      {"coordinator-0 127.0.0.1:1\nparticipant-01 127.0.0.1:2\n", "participant-01"},
  };
  for (const Case& c : cases) {
    auto r = ClusterConfig::Parse(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << c.text << " -> " << r.status().ToString();
  }
}

TEST(ClusterConfigTest, SaveAndLoadRoundTrip) {
  char templ[] = "/tmp/dtx-cc-XXXXXX";
  ASSERT_NE(::mkdtemp(templ), nullptr);
  std::string dir = templ;
  ClusterConfig c;
  ASSERT_TRUE(c.Add("participant-0", "127.0.0.1:5001").ok());
  ASSERT_TRUE(c.Add("coordinator-0", "127.0.0.1:5000").ok());
  ASSERT_TRUE(c.Add("participant-1", "127.0.0.1:5002", "127.0.0.1:5102").ok());
  // A file from before the admin listener gets admin addresses later.
  ASSERT_TRUE(c.SetAdminAddress("coordinator-0", "127.0.0.1:5100").ok());
  EXPECT_FALSE(c.SetAdminAddress("participant-0", "127.0.0.1:5102").ok());  // participant-1's
  ASSERT_TRUE(c.Save(dir).ok());
  auto loaded = ClusterConfig::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->Serialize(), c.Serialize());
  EXPECT_EQ(loaded->participants().size(), 2u);
  EXPECT_EQ(loaded->Find("coordinator-0")->admin_address, "127.0.0.1:5100");
  EXPECT_EQ(loaded->Find("participant-0")->admin_address, "");
  EXPECT_EQ(loaded->Find("participant-1")->admin_address, "127.0.0.1:5102");
  auto missing = ClusterConfig::Load(dir + "/nope");
  EXPECT_TRUE(missing.status().IsNotFound());
  std::filesystem::remove_all(dir);
}

// cluster.conf's peer= (the peer listener) round-trips in either order with
// admin=, and is one more address no two listeners may share.
TEST(ClusterConfigTest, PeerAddressesParseSerializeAndMustBeUnique) {
  auto c = ClusterConfig::Parse(
      "coordinator-0 127.0.0.1:5000 admin=127.0.0.1:5100 peer=127.0.0.1:5200\n"
      "participant-0 127.0.0.1:5001 peer=127.0.0.1:5201 admin=127.0.0.1:5101\n"
      "participant-1 127.0.0.1:5002\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->Find("coordinator-0")->peer_address, "127.0.0.1:5200");
  EXPECT_EQ(c->Find("participant-0")->peer_address, "127.0.0.1:5201");
  EXPECT_EQ(c->Find("participant-0")->admin_address, "127.0.0.1:5101");
  EXPECT_EQ(c->Find("participant-1")->peer_address, "");
  EXPECT_NE(c->Serialize().find("participant-0 127.0.0.1:5001 admin=127.0.0.1:5101 "
                                "peer=127.0.0.1:5201\n"),
            std::string::npos)
      << c->Serialize();
  auto again = ClusterConfig::Parse(c->Serialize());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->Serialize(), c->Serialize());
  ClusterConfig copy = *c;
  EXPECT_FALSE(copy.SetPeerAddress("participant-1", "127.0.0.1:5200").ok());  // coordinator-0's
  EXPECT_TRUE(copy.SetPeerAddress("participant-1", "127.0.0.1:5202").ok());
  for (const char* bad :
       {"coordinator-0 127.0.0.1:5000 peer=127.0.0.1:5000\nparticipant-0 127.0.0.1:5001\n",
        "coordinator-0 127.0.0.1:5000 peer=\nparticipant-0 127.0.0.1:5001\n",
        "coordinator-0 127.0.0.1:5000 peer=127.0.0.1:1 peer=127.0.0.1:2\n"
        "participant-0 127.0.0.1:5001\n",
        "coordinator-0 127.0.0.1:5000 client=127.0.0.1:1\nparticipant-0 127.0.0.1:5001\n",
        "coordinator-0 127.0.0.1:5000 peer=127.0.0.1:5001\nparticipant-0 127.0.0.1:5001\n"}) {
    EXPECT_FALSE(ClusterConfig::Parse(bad).ok()) << bad;
  }
}

TEST(ClusterSecurityTest, SaveAndLoadRoundTripAndResolveTheCertsDir) {
  char templ[] = "/tmp/dtx-cc-XXXXXX";
  ASSERT_NE(::mkdtemp(templ), nullptr);
  std::string dir = templ;
  EXPECT_TRUE(ClusterSecurity::Load(dir).status().IsNotFound());
  ClusterSecurity secure{.tls = true, .certs_dir = kCertsDirName};
  ASSERT_TRUE(secure.Save(dir).ok());
  auto loaded = ClusterSecurity::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(loaded->tls);
  EXPECT_EQ(loaded->CertsDir(dir), dir + "/certs");
  ClusterSecurity absolute{.tls = true, .certs_dir = "/etc/dtx/certs"};
  EXPECT_EQ(absolute.CertsDir(dir), "/etc/dtx/certs");

  ClusterSecurity insecure{.tls = false, .certs_dir = ""};
  ASSERT_TRUE(insecure.Save(dir).ok());
  loaded = ClusterSecurity::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_FALSE(loaded->tls);
  EXPECT_EQ(loaded->CertsDir(dir), "");

  ClusterSecurity no_certs{.tls = true, .certs_dir = ""};
  EXPECT_TRUE(no_certs.Save(dir).IsInvalidArgument());
  ClusterSecurity unwritable{.tls = true, .certs_dir = "a#b"};
  EXPECT_TRUE(unwritable.Save(dir).IsInvalidArgument());
  std::filesystem::remove_all(dir);
}

TEST(ClusterSecurityTest, RejectsBadLinesNamingTheLine) {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"", "no tls line"},
      {"certs certs\n", "no tls line"},
      {"tls yes\n", "line 1: tls must be"},
      {"tls on\n", "tls on without certs"},
      {"tls on\ncerts\n", "line 2: expected"},
      {"tls on\ntls off\n", "line 2: tls given twice"},
      {"tls on\ncerts a\ncerts b\n", "line 3: certs given twice"},
      {"tls off\ntoken abc\n", "line 2: unknown key 'token'"},
  };
  for (const Case& c : cases) {
    auto r = ClusterSecurity::Parse(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << c.text << " -> " << r.status().ToString();
  }
  auto ok = ClusterSecurity::Parse("# comment\n tls on  # yes\ncerts /x/my certs\n");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->certs_dir, "/x/my certs");
}

// A cluster file for several hosts: the settings and metrics= parse,
// round-trip, and are checked like the listeners.
TEST(ClusterFileTest, SettingsAndMetricsAddressesParseAndRoundTrip) {
  const char* text =
      "tls on\n"
      "certs /etc/dtx/certs   # on every host\n"
      "data /var/lib/dtx\n"
      "coordinator-0 10.0.0.1:7000 admin=10.0.0.1:7200 peer=10.0.0.1:7100 metrics=10.0.0.1:9100\n"
      "coordinator-1 10.0.0.2:7000 peer=10.0.0.2:7100\n"
      "participant-0 10.0.0.3:7000 metrics=10.0.0.3:9100 peer=10.0.0.3:7100\n";
  auto c = ClusterConfig::Parse(text);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->security().has_value());
  EXPECT_TRUE(c->security()->tls);
  EXPECT_EQ(c->security()->certs_dir, "/etc/dtx/certs");
  EXPECT_EQ(c->data_dir(), "/var/lib/dtx");
  EXPECT_EQ(c->Find("coordinator-0")->metrics_address, "10.0.0.1:9100");
  EXPECT_EQ(c->Find("coordinator-1")->metrics_address, "");
  EXPECT_EQ(c->Find("participant-0")->metrics_address, "10.0.0.3:9100");
  auto again = ClusterConfig::Parse(c->Serialize());
  ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << c->Serialize();
  EXPECT_EQ(again->Serialize(), c->Serialize());
  EXPECT_EQ(again->security()->certs_dir, "/etc/dtx/certs");
  EXPECT_EQ(again->Find("participant-0")->metrics_address, "10.0.0.3:9100");

  // A file without settings has none (a local cluster: security.conf).
  auto plain = ClusterConfig::Parse("coordinator-0 127.0.0.1:1\nparticipant-0 127.0.0.1:2\n");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->security().has_value());
  EXPECT_EQ(plain->data_dir(), "");

  const char* nodes = "coordinator-0 10.0.0.1:1\nparticipant-0 10.0.0.2:1\n";
  struct Case {
    std::string text;
    const char* expect;
  } cases[] = {
      {std::string("tls maybe\n") + nodes, "line 1: tls must be 'on' or 'off'"},
      {std::string("tls on\n") + nodes, "tls on without a certs line"},
      {std::string("certs /c\n") + nodes, "certs without a tls line"},
      {std::string("tls off\ntls on\n") + nodes, "line 2: tls given twice"},
      {std::string("data /a\ndata /b\n") + nodes, "line 2: data given twice"},
      {std::string("tls\n") + nodes, "line 1: expected"},
      {"coordinator-0 10.0.0.1:1 metrics=10.0.0.1:1\nparticipant-0 10.0.0.2:1\n",
       "used by both"},
      {"coordinator-0 10.0.0.1:1 metrics=10.0.0.9:9\nparticipant-0 10.0.0.2:1 "
       "metrics=10.0.0.9:9\n",
       "used by both"},
      {"coordinator-0 10.0.0.1:1 metrics=\nparticipant-0 10.0.0.2:1\n", "empty metrics address"},
      {"coordinator-0 10.0.0.1:1 metrics=a:1 metrics=b:1\nparticipant-0 10.0.0.2:1\n",
       "metrics= given twice"},
      {"coordinator-0 10.0.0.1:1 stats=a:1\nparticipant-0 10.0.0.2:1\n", "got 'stats=a:1'"},
  };
  for (const Case& k : cases) {
    auto r = ClusterConfig::Parse(k.text);
    ASSERT_FALSE(r.ok()) << k.text;
    EXPECT_NE(r.status().message().find(k.expect), std::string::npos)
        << k.text << " -> " << r.status().ToString();
  }
}

class ClusterFileLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/dtx-cf-XXXXXX";
    ASSERT_NE(::mkdtemp(templ), nullptr);
    dir_ = templ;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return path;
  }
  std::string dir_;
};

TEST_F(ClusterFileLoadTest, SecurityComesFromTheFileElseFromSecurityConfBesideIt) {
  const std::string nodes =
      "coordinator-0 10.0.0.1:7000 peer=10.0.0.1:7100\n"
      "participant-0 10.0.0.2:7000 peer=10.0.0.2:7100\n";
  // Relative certs and data paths are relative to the file's directory.
  auto f = ClusterFile::Load(Write("hosts.conf", "tls on\ncerts certs\ndata nodes\n" + nodes));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(f->security.tls);
  EXPECT_EQ(f->dir, dir_);
  EXPECT_EQ(f->CertsDir(), dir_ + "/certs");
  EXPECT_EQ(f->NodeDir("participant-0"), dir_ + "/nodes/participant-0");

  // No tls line and nothing beside it: refused, not plaintext by default.
  auto none = ClusterFile::Load(Write("cluster.conf", nodes));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no 'tls on' or 'tls off' line"), std::string::npos)
      << none.status().ToString();
  // A local-cluster directory: security.conf beside it; NODEDIR = DIR/NAME.
  ASSERT_TRUE((ClusterSecurity{.tls = false, .certs_dir = ""}).Save(dir_).ok());
  auto local = ClusterFile::Load(dir_ + "/cluster.conf");
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  EXPECT_FALSE(local->security.tls);
  EXPECT_EQ(local->CertsDir(), "");
  EXPECT_EQ(local->NodeDir("coordinator-0"), dir_ + "/coordinator-0");

  EXPECT_TRUE(ClusterFile::Load(dir_ + "/missing.conf").status().IsNotFound());
  auto bad = ClusterFile::Load(Write("bad.conf", "tls on\n" + nodes));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.conf"), std::string::npos);
}

// The flags a node gets from the file: what the supervisor gives it too.
TEST(NodeCommandLineTest, CoordinatorsAndParticipantsGetTheirPeers) {
  auto c = ClusterConfig::Parse(
      "coordinator-0 10.0.0.1:7000 admin=10.0.0.1:7200 peer=10.0.0.1:7100 metrics=10.0.0.1:9100\n"
      "coordinator-1 10.0.0.2:7000 peer=10.0.0.2:7100\n"
      "participant-0 10.0.0.3:7000 peer=10.0.0.3:7100\n"
      "participant-1 10.0.0.4:7000 peer=10.0.0.4:7100\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto joined = [](const std::vector<std::string>& v) {
    std::string out;
    for (const std::string& s : v) out += (out.empty() ? "" : " ") + s;
    return out;
  };
  NodeCommandLine c0 = MakeNodeCommandLine(*c, *c->Find("coordinator-0"), "/d/c0");
  EXPECT_EQ(joined(c0.args),
            "--name coordinator-0 --listen 10.0.0.1:7000 --dir /d/c0 --peer-listen 10.0.0.1:7100 "
            "--admin-listen 10.0.0.1:7200 --metrics-listen 10.0.0.1:9100 --participants "
            "participant-0=10.0.0.3:7100,participant-1=10.0.0.4:7100 --participant-clients "
            "10.0.0.3:7000,10.0.0.4:7000 --peer coordinator-1=10.0.0.2:7100 --peer-client "
            "10.0.0.2:7000");
  EXPECT_EQ(c0.role, "primary");
  ASSERT_NE(c0.peer, nullptr);
  EXPECT_EQ(c0.peer->name, "coordinator-1");
  NodeCommandLine c1 = MakeNodeCommandLine(*c, *c->Find("coordinator-1"), "/d/c1");
  EXPECT_EQ(c1.role, "backup");
  EXPECT_EQ(c1.peer->name, "coordinator-0");
  NodeCommandLine p1 = MakeNodeCommandLine(*c, *c->Find("participant-1"), "/d/p1");
  EXPECT_EQ(joined(p1.args),
            "--name participant-1 --listen 10.0.0.4:7000 --dir /d/p1 --peer-listen 10.0.0.4:7100 "
            "--coordinator 10.0.0.1:7100 --coordinators "
            "coordinator-0=10.0.0.1:7100,coordinator-1=10.0.0.2:7100");
  EXPECT_EQ(p1.role, "");
  EXPECT_EQ(p1.peer, nullptr);
  EXPECT_EQ(joined(SecurityArgs({.tls = true, .certs_dir = "c"}, "/etc/c")), "--certs-dir /etc/c");
  EXPECT_EQ(joined(SecurityArgs({.tls = false, .certs_dir = ""}, "")), "--insecure");
}

TEST(ClusterConfigTest, PidFilesAndProcessChecks) {
  char templ[] = "/tmp/dtx-cc-XXXXXX";
  ASSERT_NE(::mkdtemp(templ), nullptr);
  std::string path = std::string(templ) + "/pid";
  EXPECT_TRUE(ReadPidFile(path).status().IsNotFound());
  ASSERT_TRUE(WritePidFile(path, ::getpid()).ok());
  auto pid = ReadPidFile(path);
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(*pid, ::getpid());
  ASSERT_TRUE(WriteFileAtomic(path, "12x\n").ok());
  EXPECT_TRUE(ReadPidFile(path).status().IsCorruption());
  EXPECT_TRUE(ProcessAlive(::getpid()));
  // Our own command line has no "--name participant-0".
  EXPECT_FALSE(IsNodeProcess(::getpid(), "participant-0"));
  auto cpu = ProcessCpuSeconds(::getpid());
  ASSERT_TRUE(cpu.ok());
  EXPECT_GE(*cpu, 0.0);
  EXPECT_FALSE(ProcessCpuSeconds(0x3ffffff).ok());
  std::filesystem::remove_all(templ);
}

TEST(ClusterConfigTest, ContextSwitchesCountEveryThreadOfAProcess) {
  auto before = ProcessContextSwitches(::getpid());
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  // A second thread that sleeps 20 times switches out voluntarily at least
  // 20 times; it is still alive when the count is taken.
  std::atomic<bool> slept{false}, done{false};
  std::thread sleeper([&] {
    for (int i = 0; i < 20; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    slept = true;
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (!slept) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto after = ProcessContextSwitches(::getpid());
  done = true;
  sleeper.join();
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->voluntary, before->voluntary + 20);
  EXPECT_GE(after->involuntary, before->involuntary);
  EXPECT_TRUE(ProcessContextSwitches(0x3ffffff).status().IsNotFound());
}

TEST(ClusterConfigTest, TailFileReturnsTheLastLines) {
  char templ[] = "/tmp/dtx-cc-XXXXXX";
  ASSERT_NE(::mkdtemp(templ), nullptr);
  std::string path = std::string(templ) + "/log";
  ASSERT_TRUE(WriteFileAtomic(path, "a\nb\nc\nd\n").ok());
  EXPECT_EQ(TailFile(path, 2), "c\nd\n");
  EXPECT_EQ(TailFile(path, 10), "a\nb\nc\nd\n");
  EXPECT_EQ(TailFile(path + ".missing", 3), "");
  std::filesystem::remove_all(templ);
}

TEST(ClusterConfigTest, ParseHostPortAndNodeNames) {
  auto hp = ParseHostPort("127.0.0.1:8080");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 8080);
  EXPECT_FALSE(ParseHostPort(":80").ok());
  EXPECT_FALSE(ParseHostPort("host:").ok());
  EXPECT_FALSE(ParseHostPort("host:0").ok());
  EXPECT_FALSE(ParseHostPort("host:12ab").ok());
  EXPECT_TRUE(ParseNodeName("coordinator-1").ok());
  EXPECT_EQ(ParseNodeName("participant-12")->index, 12);
  EXPECT_FALSE(ParseNodeName("participant-").ok());
  EXPECT_FALSE(ParseNodeName("participant--1").ok());
}

}  // namespace
}  // namespace dtx::tools
