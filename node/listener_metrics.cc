#include "node/listener_metrics.h"

#include <string>

#include "common/check.h"

namespace dtx::node {

ListenerMetrics::ListenerMetrics(prometheus::Registry& registry) {
  for (size_t i = 0; i < kRpcServerCountersCount; ++i) {
    counters_[i] = &prometheus::BuildCounter()
                        .Name(kRpcServerCounters[i].name)
                        .Help(kRpcServerCounters[i].help)
                        .Register(registry);
  }
  for (size_t i = 0; i < kRpcServerGaugesCount; ++i) {
    gauges_[i] = &prometheus::BuildGauge()
                      .Name(kRpcServerGauges[i].name)
                      .Help(kRpcServerGauges[i].help)
                      .Register(registry);
  }
}

void ListenerMetrics::Add(std::string_view listener, const RpcServer& server) {
  const prometheus::Labels labels{{"listener", std::string(listener)}};
  // Family::Add returns the existing child for the same labels: a second
  // server of one name would share (and corrupt) the first one's series.
  DTX_CHECK(!counters_[0]->Has(labels));
  Listener l{.server = &server, .counters = {}, .seen = {}, .gauges = {}};
  for (size_t i = 0; i < kRpcServerCountersCount; ++i) l.counters[i] = &counters_[i]->Add(labels);
  for (size_t i = 0; i < kRpcServerGaugesCount; ++i) l.gauges[i] = &gauges_[i]->Add(labels);
  listeners_.push_back(l);
}

void ListenerMetrics::Update() {
  for (Listener& l : listeners_) {
    const RpcServerStats& stats = l.server->stats();
    for (size_t i = 0; i < kRpcServerCountersCount; ++i) {
      const uint64_t now = stats.*kRpcServerCounters[i].field;
      // A server counts from its Start() and never resets.
      DTX_CHECK(now >= l.seen[i]);
      if (now == l.seen[i]) continue;
      l.counters[i]->Increment(static_cast<double>(now - l.seen[i]));
      l.seen[i] = now;
    }
    for (size_t i = 0; i < kRpcServerGaugesCount; ++i) {
      l.gauges[i]->Set(static_cast<double>((l.server->*kRpcServerGauges[i].value)()));
    }
  }
}

}  // namespace dtx::node
