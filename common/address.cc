#include "common/address.h"

#include <charconv>

namespace dtx {

Result<HostPort> ParseHostPort(std::string_view address, PortZero zero) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("address '" + std::string(address) + "': " + why);
  };
  std::string_view host;
  std::string_view port_text;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string_view::npos) return bad("no ']' after the IPv6 host");
    if (close + 1 >= address.size() || address[close + 1] != ':') return bad("want [v6host]:port");
    host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) return bad("want host:port");
    host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return bad("an IPv6 host needs brackets: [v6host]:port");
  }
  if (host.empty()) return bad("empty host");
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string_view::npos) {
    return bad("the port must be a decimal number");
  }
  unsigned port = 0;
  std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  const unsigned port_min = zero == PortZero::kAllow ? 0 : 1;
  if (port < port_min || port > 65535) {
    return bad(zero == PortZero::kAllow ? "port out of range 0..65535"
                                        : "port out of range 1..65535");
  }
  return HostPort{std::string(host), static_cast<uint16_t>(port)};
}

std::string FormatHostPort(std::string_view host, int port) {
  const bool v6 = host.find(':') != std::string_view::npos;
  std::string out;
  if (v6) out += '[';
  out += host;
  if (v6) out += ']';
  return out + ":" + std::to_string(port);
}

}  // namespace dtx
