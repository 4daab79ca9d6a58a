#include "common/status.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace dtx {
namespace {

TEST(StatusTest, OkIsDefault) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, NamedConstructorsCarryCodeAndMessage) {
  Status s = Status::Corruption("seg 1: bad crc at offset 42");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_EQ(s.ToString(), "Corruption: seg 1: bad crc at offset 42");
  EXPECT_TRUE(Status::FromErrno("open x", ENOENT).IsIOError());
  EXPECT_NE(Status::FromErrno("open x", ENOENT).message().find("No such file"), std::string::npos);
}

TEST(StatusTest, ResultHoldsValueOrError) {
  Result<int> r = 7;
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 7);
  Result<int> e = Status::NotFound("k");
  EXPECT_FALSE(e.ok());
  EXPECT_TRUE(e.status().IsNotFound());
}

}  // namespace
}  // namespace dtx
