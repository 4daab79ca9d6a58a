// A user of the C++ client as the README shows one: the target links only
// dtx_client and includes only <dtx/client.h>. Checks that dtx_client's usage
// requirements carry include/ and nothing of the inside: not the repository
// root (where common/, coordinator/, ... would become includable), not
// spdlog's compile definitions, not the generated Thrift headers. Each leak is
// detected here at compile time and reported as a failing test.
#include <dtx/client.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

// The file's own folder (bindings/cpp) has no common/, so these resolve only
// through an include directory that is the repository root or the build tree.
#if __has_include("common/log.h")
constexpr bool kRepositoryRootIncludable = true;
#else
constexpr bool kRepositoryRootIncludable = false;
#endif

#if __has_include("dtx_types.h")
constexpr bool kGeneratedThriftIncludable = true;
#else
constexpr bool kGeneratedThriftIncludable = false;
#endif

// spdlog's CMake target defines these for every target that links it.
#if defined(SPDLOG_COMPILED_LIB) || defined(SPDLOG_FMT_EXTERNAL) || defined(SPDLOG_SHARED_LIB)
constexpr bool kSpdlogUsageReachesUsers = true;
#else
constexpr bool kSpdlogUsageReachesUsers = false;
#endif

namespace {

TEST(PublicHeaders, RepositoryRootIsNotOnTheUsersIncludePath) {
  EXPECT_FALSE(kRepositoryRootIncludable)
      << "\"common/log.h\" is includable: dtx_client exports the source tree (link dtx_common, "
         "dtx_transport PRIVATE; only dtx_headers PUBLIC)";
}

TEST(PublicHeaders, GeneratedThriftHeadersAreNotOnTheUsersIncludePath) {
  EXPECT_FALSE(kGeneratedThriftIncludable) << "idl/gen-cpp reaches dtx_client's users";
}

TEST(PublicHeaders, SpdlogDoesNotReachTheUsers) {
  EXPECT_FALSE(kSpdlogUsageReachesUsers) << "spdlog's compile definitions reach dtx_client's users";
}

// The public vocabulary is usable from the public headers alone.
TEST(PublicHeaders, StatusResultAndTypesAreComplete) {
  dtx::Result<int> r = dtx::Status::NotFound("k");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound());
  EXPECT_EQ(r.status().ToString(), "NotFound: k");
  dtx::Result<int> v = 7;
  EXPECT_EQ(*v, 7);
  EXPECT_EQ((dtx::TxId{1, 2}.ToString()), "00000000000000010000000000000002");
  EXPECT_STREQ(dtx::AbortReasonName(dtx::AbortReason::kConflict), "conflict");
}

// Linking only dtx_client resolves its private dependencies (transport, event
// loop, logging): Connect runs the I/O thread and fails on a closed port.
TEST(PublicHeaders, ConnectLinksAndReportsErrors) {
  auto none = dtx::Client::Connect({});
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(none.status().IsInvalidArgument()) << none.status().ToString();

  dtx::ClientOptions options;
  options.coordinators = {"127.0.0.1:1"};  // nothing listens on port 1
  options.request_timeout_ms = 500;
  auto start = std::chrono::steady_clock::now();
  auto closed = dtx::Client::Connect(options);
  ASSERT_FALSE(closed.ok());
  EXPECT_TRUE(closed.status().IsUnavailable() || closed.status().IsTimeout())
      << closed.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

}  // namespace
