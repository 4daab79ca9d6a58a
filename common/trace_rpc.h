// Wire form of a node's span events for one txid (the GetTrace RPC of
// idl/dtx.thrift), shared by the participant and coordinator runtimes and by
// dtxctl. Header-only so that dtx_obs need not depend on the generated IDL.
#pragma once

#include <string>
#include <vector>

#include "common/trace.h"
#include "dtx_types.h"

namespace dtx::obs {

inline rpc::TraceResponse TraceToRpc(const std::string& node,
                                     const std::vector<SpanEvent>& events) {
  rpc::TraceResponse out;
  out.name = node;
  out.events.reserve(events.size());
  for (const SpanEvent& e : events) {
    rpc::SpanEventMsg m;
    m.event = e.event;
    m.unix_ns = e.unix_ns;
    m.mono_ns = static_cast<int64_t>(e.mono_ns);
    m.seq = static_cast<int64_t>(e.seq);
    if (!e.detail.empty()) {
      m.__set_detail(e.detail);
    }
    out.events.push_back(std::move(m));
  }
  return out;
}

}  // namespace dtx::obs
