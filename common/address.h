// The one "host:port" parser and formatter. Every place that reads an address
// (command lines, cluster.conf, shard maps, the client's options) uses it.
//
//   address = host ":" port | "[" v6host "]" ":" port
//   host    = non-empty, no ':' (an IPv6 host needs the brackets)
//   port    = 1..5 decimal digits, 1..65535 (0 too with PortZero::kAllow:
//             "any free port", for listen addresses)
//
// The host is not resolved or checked further. Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dtx {

struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
  friend bool operator==(const HostPort&, const HostPort&) = default;
};

enum class PortZero : bool { kRefuse, kAllow };

// InvalidArgument naming the address and what is wrong with it.
Result<HostPort> ParseHostPort(std::string_view address, PortZero zero = PortZero::kRefuse);

// "host:port", with brackets around a host that contains ':' (IPv6).
std::string FormatHostPort(std::string_view host, int port);

}  // namespace dtx
