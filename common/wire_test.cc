#include "common/wire.h"

#include <gtest/gtest.h>

#include <map>

namespace dtx {
namespace {

// Every value the IDL declares converts to ours and back unchanged, its name
// matches, and the values just outside the IDL's range convert to nullopt:
// an enumerator added to idl/dtx.thrift but not to common/types.h fails here.
template <typename Theirs>
void ExpectExactMirror(const std::map<int, const char*>& idl_values) {
  ASSERT_FALSE(idl_values.empty());
  for (const auto& [n, name] : idl_values) {
    auto ours = FromRpc(static_cast<Theirs>(n));
    ASSERT_TRUE(ours.has_value()) << name << " (" << n << ") has no common/types.h enumerator";
    EXPECT_EQ(static_cast<int>(*ours), n) << name;
    EXPECT_EQ(ToRpc(*ours), static_cast<Theirs>(n)) << name;
  }
  EXPECT_FALSE(FromRpc(static_cast<Theirs>(idl_values.begin()->first - 1)).has_value());
  EXPECT_FALSE(FromRpc(static_cast<Theirs>(idl_values.rbegin()->first + 1)).has_value());
  EXPECT_EQ(static_cast<int>(idl_values.size()),
            idl_values.rbegin()->first - idl_values.begin()->first + 1)
      << "the IDL enum is not contiguous: common/wire.cc InRange would accept a gap";
}

TEST(WireTest, EveryEnumMirrorsTheIdl) {
  ExpectExactMirror<rpc::ErrorCode::type>(rpc::_ErrorCode_VALUES_TO_NAMES);
  ExpectExactMirror<rpc::Vote::type>(rpc::_Vote_VALUES_TO_NAMES);
  ExpectExactMirror<rpc::Decision::type>(rpc::_Decision_VALUES_TO_NAMES);
  ExpectExactMirror<rpc::Outcome::type>(rpc::_Outcome_VALUES_TO_NAMES);
  ExpectExactMirror<rpc::AbortReason::type>(rpc::_AbortReason_VALUES_TO_NAMES);
  ExpectExactMirror<rpc::NodeRole::type>(rpc::_NodeRole_VALUES_TO_NAMES);
}

TEST(WireTest, NamesMatchTheIdl) {
  for (const auto& [n, name] : rpc::_ErrorCode_VALUES_TO_NAMES) {
    EXPECT_STREQ(ErrorCodeName(static_cast<ErrorCode>(n)), name);
  }
  for (const auto& [n, name] : rpc::_NodeRole_VALUES_TO_NAMES) {
    std::string lower(name);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(NodeRoleName(static_cast<rpc::NodeRole::type>(n)), lower);
  }
  EXPECT_STREQ(NodeRoleName(static_cast<rpc::NodeRole::type>(0)), "unknown");
}

TEST(WireTest, TxIdKeepsEveryBit) {
  for (TxId t : {TxId{0, 0}, TxId{~0ull, 1}, TxId{0x8000000000000000ull, 0x7fffffffffffffffull}}) {
    EXPECT_EQ(FromRpc(ToRpc(t)), t);
  }
  EXPECT_EQ(ToRpc(TxId{~0ull, 2}).hi, -1);
}

TEST(WireTest, FingerprintRoundTripsAndMalformedBytesAreRefused) {
  const Fingerprint f{0x0102030405060708ull, 0xf1f2f3f4f5f6f7f8ull};
  const std::string bytes = FingerprintToRpc(f);
  ASSERT_EQ(bytes.size(), kFingerprintBytes);
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), 0x01);  // hi first, big-endian
  EXPECT_EQ(static_cast<uint8_t>(bytes[15]), 0xf8);
  EXPECT_EQ(FingerprintFromRpc(bytes), f);
  EXPECT_FALSE(FingerprintFromRpc(bytes.substr(1)).has_value());
  EXPECT_FALSE(FingerprintFromRpc(bytes + "x").has_value());
  EXPECT_FALSE(FingerprintFromRpc(std::string(kFingerprintBytes, '\0')).has_value());
}

TEST(WireTest, CoreErrorBecomesDtxErrorAndBack) {
  rpc::DtxError e = MakeDtxError(ErrorCode::kNotPrimary, "ask elsewhere", "10.0.0.1:7000");
  EXPECT_EQ(e.code, rpc::ErrorCode::NOT_PRIMARY);
  EXPECT_EQ(e.primary, "10.0.0.1:7000");
  RpcStatus st = StatusFromDtxError(e);
  EXPECT_EQ(ErrorCodeOf(st), ErrorCode::kNotPrimary);
  EXPECT_EQ(ErrorCodeOf(RpcStatus(Status::Unavailable("no connection"))), std::nullopt);
  EXPECT_DEATH((void)ToRpc(ErrorCode::kOk), "not on the wire");
}

TEST(WireTest, StaleEpochRefusalKeepsItsFields) {
  rpc::DtxError e = MakeDtxError(ErrorCode::kStaleEpoch, "epoch 3 < 5");
  e.__set_current_epoch(5);
  e.__set_epoch_owner("10.0.0.2:7000");
  RpcStatus st = StatusFromDtxError(e);
  EXPECT_TRUE(st.IsAborted());
  EXPECT_EQ(st.current_epoch(), 5);
  EXPECT_EQ(st.epoch_owner(), "10.0.0.2:7000");
  RpcStatus plain = StatusFromDtxError(MakeDtxError(ErrorCode::kStaleEpoch, "x"));
  EXPECT_FALSE(plain.current_epoch().has_value());
  EXPECT_FALSE(plain.epoch_owner().has_value());
}

struct Read {
  std::string key;
  Version version = 0;
};
struct Write {
  std::string key;
  std::optional<std::string> value;
};

TEST(WireTest, ReadAndWriteSetsRoundTripWithDeletes) {
  std::vector<Read> reads{{"a", 0}, {"b", 7}};
  std::vector<Write> writes{{"c", "v"}, {"d", std::nullopt}, {"e", ""}};
  auto wire_writes = WritesToRpc(writes);
  ASSERT_EQ(wire_writes.size(), 3u);
  EXPECT_TRUE(wire_writes[0].__isset.value);
  EXPECT_FALSE(wire_writes[1].__isset.value) << "a delete has no value on the wire";
  EXPECT_TRUE(wire_writes[2].__isset.value) << "an empty value is not a delete";
  auto back_reads = ReadsFromRpc<Read>(ReadsToRpc(reads));
  ASSERT_EQ(back_reads.size(), 2u);
  EXPECT_EQ(back_reads[1].key, "b");
  EXPECT_EQ(back_reads[1].version, 7);
  auto back_writes = WritesFromRpc<Write>(wire_writes);
  ASSERT_EQ(back_writes.size(), 3u);
  EXPECT_EQ(back_writes[0].value, "v");
  EXPECT_EQ(back_writes[1].value, std::nullopt);
  EXPECT_EQ(back_writes[2].value, "");
}

}  // namespace
}  // namespace dtx
