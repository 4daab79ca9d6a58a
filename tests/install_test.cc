// `cmake --install` of this build into a temporary prefix, as a user installs
// dtx (README.md "Install", cmake/install.cmake): the programs, only the public
// headers and the CMake package are there, and an application outside the
// tree (tests/install_app, copied out first) configures with
// find_package(dtx) against that prefix alone, builds, and commits and reads
// back a transaction on a cluster that the installed dtxctl started from the
// installed node binaries.
//
// Paths from tests/CMakeLists.txt: DTX_CMAKE_COMMAND, DTX_CXX_COMPILER,
// DTX_SOURCE_DIR, DTX_BUILD_DIR, DTX_INSTALL_BINDIR, DTX_INSTALL_INCLUDEDIR.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dtx/client.h"
#include "tests/harness.h"

namespace dtx::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kInstallTimeoutMs = 120000;
constexpr int kAppBuildTimeoutMs = 180000;
constexpr int kAppRunTimeoutMs = 60000;

std::string ReadWholeFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Paths of the regular files under `root`, relative to it.
std::set<std::string> FilesUnder(const fs::path& root) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), root).string());
  }
  return out;
}

// One installation for the suite: every test reads the same prefix.
class InstallTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = std::make_unique<TempDir>("dtx-install");
    prefix_ = tmp_->path() + "/prefix";
    install_ = RunCommand(
        {DTX_CMAKE_COMMAND, "--install", DTX_BUILD_DIR, "--prefix", prefix_}, kInstallTimeoutMs);
  }
  static void TearDownTestSuite() { tmp_.reset(); }
  void SetUp() override { ASSERT_EQ(install_.exit_code, 0) << install_.Describe(); }
  void TearDown() override {
    if (HasFailure()) std::cerr << cluster_.LogTails(30);
    cluster_.Down();
  }

  static fs::path Bin(const std::string& name) {
    return fs::path(prefix_) / DTX_INSTALL_BINDIR / name;
  }

  static inline std::unique_ptr<TempDir> tmp_;
  static inline std::string prefix_;
  static inline CommandResult install_;
  LocalCluster cluster_;  // started by the test that needs one
};

TEST_F(InstallTest, InstallsTheProgramsAndOnlyThePublicHeaders) {
  for (const char* program : {"dtx-participant", "dtx-coordinator", "dtxctl", "dtx-bench"}) {
    EXPECT_EQ(::access(Bin(program).c_str(), X_OK), 0) << Bin(program);
  }
  const fs::path installed = fs::path(prefix_) / DTX_INSTALL_INCLUDEDIR;
  const std::set<std::string> public_headers = FilesUnder(fs::path(DTX_SOURCE_DIR) / "include");
  ASSERT_FALSE(public_headers.empty());
  EXPECT_EQ(FilesUnder(installed), public_headers)
      << "the install's include/ must hold exactly the repository's include/";
}

// The package names nothing of this checkout: it works once the tree is gone.
TEST_F(InstallTest, PackageFilesDoNotReferToTheSourceOrBuildTree) {
  int package_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(prefix_)) {
    if (!e.is_regular_file() || e.path().extension() != ".cmake") continue;
    ++package_files;
    const std::string text = ReadWholeFile(e.path());
    EXPECT_EQ(text.find(DTX_SOURCE_DIR), std::string::npos) << e.path();
    EXPECT_EQ(text.find(DTX_BUILD_DIR), std::string::npos) << e.path();
  }
  // dtxConfig, dtxConfigVersion, dtxDependencies, dtxTargets and its per-config file.
  EXPECT_GE(package_files, 5);
}

TEST_F(InstallTest, ApplicationBuiltWithFindPackageCommitsAndReadsBack) {
  // The application's source, outside the repository.
  const fs::path app_src = tmp_->path() + "/app-src";
  const fs::path app_build = tmp_->path() + "/app-build";
  fs::create_directories(app_src);
  for (const char* f : {"CMakeLists.txt", "app.cc"}) {
    fs::copy_file(fs::path(DTX_SOURCE_DIR) / "tests/install_app" / f, app_src / f);
  }
  CommandResult configure = RunCommand(
      {DTX_CMAKE_COMMAND, "-S", app_src.string(), "-B", app_build.string(),
       "-DCMAKE_PREFIX_PATH=" + prefix_, "-DCMAKE_CXX_COMPILER=" DTX_CXX_COMPILER,
       "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"},
      kAppBuildTimeoutMs);
  ASSERT_EQ(configure.exit_code, 0) << configure.Describe();
  CommandResult build =
      RunCommand({DTX_CMAKE_COMMAND, "--build", app_build.string()}, kAppBuildTimeoutMs);
  ASSERT_EQ(build.exit_code, 0) << build.Describe();
  // Compiled and linked from the prefix alone.
  for (const fs::path& p :
       {app_build / "compile_commands.json", app_build / "CMakeFiles/app.dir/link.txt"}) {
    const std::string text = ReadWholeFile(p);
    ASSERT_FALSE(text.empty()) << p;
    EXPECT_EQ(text.find(DTX_SOURCE_DIR), std::string::npos) << p << ":\n" << text;
    EXPECT_EQ(text.find(DTX_BUILD_DIR), std::string::npos) << p << ":\n" << text;
    EXPECT_NE(text.find(prefix_), std::string::npos) << p << ":\n" << text;
  }

  // A TLS cluster (the default) started by the installed dtxctl, which finds
  // the installed nodes next to itself.
  LocalCluster::Options options;
  options.participants = 1;
  options.dtxctl = Bin("dtxctl").string();
  Status up = cluster_.Up(options);
  ASSERT_TRUE(up.ok()) << up.ToString();
  for (const auto& [node, program] :
       {std::pair{"coordinator-0", "dtx-coordinator"}, {"participant-0", "dtx-participant"}}) {
    const pid_t pid = cluster_.NodePid(node);
    ASSERT_GT(pid, 0) << node;
    std::error_code ec;
    EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec),
              fs::canonical(Bin(program)))
        << node << " is not the installed " << program << " " << ec.message();
  }
  const std::string certs = cluster_.dir() + "/" + tools::kCertsDirName;
  ASSERT_TRUE(fs::exists(certs + "/" + tools::kClientCertName + ".crt")) << "not a TLS cluster";

  const std::string key = "installed-app";
  const std::string value = "committed-by-" + std::to_string(::getpid());
  CommandResult app =
      RunCommand({(app_build / "app").string(), cluster_.dir(), key, value}, kAppRunTimeoutMs);
  EXPECT_EQ(app.exit_code, 0) << app.Describe();
  EXPECT_EQ(app.out, key + "=" + value + "\n") << app.Describe();

  // The cluster holds it, seen by another client (this build's).
  auto client = Client::Connect(cluster_.ClientOptionsFor());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  std::optional<std::string> seen;
  Status read = (*client)->Run([&](Transaction& tx) -> Status {
    auto v = tx.Get(key);
    if (!v.ok()) return v.status();
    seen = *v;
    return Status::OK();
  });
  ASSERT_TRUE(read.ok()) << read.ToString();
  EXPECT_EQ(seen, value);
}

}  // namespace
}  // namespace dtx::testing
