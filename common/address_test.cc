#include "common/address.h"

#include <gtest/gtest.h>

namespace dtx {
namespace {

TEST(AddressTest, ParsesHostAndPort) {
  auto hp = ParseHostPort("127.0.0.1:8080");
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ(*hp, (HostPort{"127.0.0.1", 8080}));
  hp = ParseHostPort("localhost:1");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(*hp, (HostPort{"localhost", 1}));
  hp = ParseHostPort("h:65535");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->port, 65535);
}

TEST(AddressTest, Ipv6HostNeedsBracketsWhichAreStripped) {
  auto hp = ParseHostPort("[::1]:9000");
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ(*hp, (HostPort{"::1", 9000}));
  hp = ParseHostPort("[fe80::1%eth0]:80");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "fe80::1%eth0");
  EXPECT_FALSE(ParseHostPort("::1:9000").ok()) << "ambiguous without brackets";
  EXPECT_FALSE(ParseHostPort("[::1]9000").ok());
  EXPECT_FALSE(ParseHostPort("[::1:9000").ok());
  EXPECT_FALSE(ParseHostPort("[::1]:").ok());
  EXPECT_FALSE(ParseHostPort("[]:80").ok());
}

TEST(AddressTest, RefusesBadInputNamingIt) {
  for (const char* bad :
       {"", ":", "127.0.0.1", "127.0.0.1:", ":80", "host:0", "host:65536", "host:70000",
        "host:123456", "host:8x", "host:-1", "host:+80", "host: 80", "host:80 ", "host:0x10"}) {
    auto hp = ParseHostPort(bad);
    ASSERT_FALSE(hp.ok()) << "'" << bad << "' parsed as " << hp->host << " " << hp->port;
    EXPECT_TRUE(hp.status().IsInvalidArgument());
    EXPECT_NE(hp.status().message().find(std::string("'") + bad + "'"), std::string::npos)
        << hp.status().message();
  }
}

TEST(AddressTest, PortZeroOnlyWhenAllowed) {
  EXPECT_FALSE(ParseHostPort("127.0.0.1:0").ok());
  auto hp = ParseHostPort("127.0.0.1:0", PortZero::kAllow);
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->port, 0);
  EXPECT_FALSE(ParseHostPort("127.0.0.1:65536", PortZero::kAllow).ok());
  EXPECT_FALSE(ParseHostPort(":0", PortZero::kAllow).ok());
}

TEST(AddressTest, FormatRoundTrips) {
  EXPECT_EQ(FormatHostPort("127.0.0.1", 80), "127.0.0.1:80");
  EXPECT_EQ(FormatHostPort("::1", 9000), "[::1]:9000");
  for (const char* a : {"127.0.0.1:80", "[::1]:9000", "localhost:65535"}) {
    auto hp = ParseHostPort(a);
    ASSERT_TRUE(hp.ok());
    EXPECT_EQ(FormatHostPort(hp->host, hp->port), a);
  }
}

}  // namespace
}  // namespace dtx
