// Thrift framed transport, as dtx speaks it (docs/design.md "Network layer"):
//
//   frame   = length payload
//   length  = 4 bytes, unsigned big-endian, number of payload bytes, 1..max
//   payload = one TBinaryProtocol message (strict: 0x80 0x01 0x00 <type>,
//             name, seqid, then the args/result struct)
//
// Internal to common/ (RpcServer, PeerChannel).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dtx {

inline constexpr size_t kFrameHeaderBytes = 4;

// How a TLS listener's plaintext answer to a plaintext call begins (the
// message of a TApplicationException, common/rpc_server.cc TlsRequiredReply);
// clients recognise it (common/rpc_client.cc, bindings/python/dtx/tls.py).
inline constexpr const char* kTlsRequiredReplyPrefix = "this port requires TLS";
static_assert(kFrameHeaderBytes == sizeof(uint32_t), "frame length is one big-endian u32");

inline uint32_t DecodeFrameLength(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

inline void EncodeFrameLength(uint32_t len, uint8_t* p) {
  p[0] = static_cast<uint8_t>(len >> 24);
  p[1] = static_cast<uint8_t>(len >> 16);
  p[2] = static_cast<uint8_t>(len >> 8);
  p[3] = static_cast<uint8_t>(len);
}

}  // namespace dtx
