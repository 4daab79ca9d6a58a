// dtx-sim: runs the deterministic simulator over many seeds, or replays one.
//
//   dtx-sim --seeds 10000 [--start-seed 1]     many seeds; prints each failing one
//   dtx-sim --seed 1234 [--trace]              one seed, exactly as before
//
// Exit status: 0 all seeds passed, 1 some seed failed, 2 bad flags.
#include <boost/program_options.hpp>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

#include "tests/sim/sim.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  using dtx::sim::SimOptions;
  uint64_t seed = 0, seeds = 1000, start_seed = 1;
  SimOptions opts;
  std::string sabotage = "none";
  po::options_description desc(
      "dtx-sim: the real participant and coordinator cores under a seeded schedule of delays, "
      "reordering, duplication, loss, crashes and restarts (tests/sim/README.md)");
  desc.add_options()("help,h", "this help")("seed", po::value<uint64_t>(&seed),
                                            "run exactly this seed (replays a failure)")(
      "seeds", po::value<uint64_t>(&seeds)->default_value(1000), "how many seeds to run")(
      "start-seed", po::value<uint64_t>(&start_seed)->default_value(1), "first seed of --seeds")(
      "trace", po::bool_switch(&opts.trace), "with --seed: print every event")(
      "verbose,v", "print the summary line of every seed, not only failing ones")(
      "participants", po::value<int>(&opts.participants)->default_value(0),
      "1..64; 0: drawn from the seed (1..4)")("clients",
                                              po::value<int>(&opts.clients)->default_value(0),
                                              "1..64; 0: drawn from the seed (1..5)")(
      "accounts", po::value<int>(&opts.accounts)->default_value(0),
      "2..100; 0: drawn from the seed (2..10)")(
      "fault-ms", po::value<uint64_t>(&opts.fault_phase_ms)->default_value(0),
      "virtual ms of faults and new transactions; 0: drawn (1000..4000)")(
      "heal-max-ms", po::value<uint64_t>(&opts.heal_max_ms)->default_value(20000),
      "virtual ms the fault-free heal phase may take to quiesce")("no-faults",
                                                                  "reliable network, no crashes")(
      "small-tables", po::bool_switch(&opts.small_tables),
      "shrink the cores' remembered-outcome tables to 16 entries (forgetting, WAL truncation)")(
      "no-client-retries", "clients never repeat a Commit (default: up to 3 attempts, same txid)")(
      "sabotage", po::value<std::string>(&sabotage)->default_value("none"),
      "break the model on purpose to see a check fire: none | lose-synced | blind-writes | "
      "accept-old-epochs | fake-sync (these two need --failover) | stored-outcome-for-reuse "
      "(needs --reuse-txids) | ignore-attempt-stamps")(
      "long-delays", po::bool_switch(&opts.long_delays),
      "hold about 1 message in 200 back for 2-30 virtual seconds during the fault phase")(
      "reuse-txids", po::bool_switch(&opts.reuse_txids),
      "clients reuse their previous txid with new content (a third of their transactions)")(
      "adversary", po::bool_switch(&opts.adversary),
      "one more client using only the client API against the others: GetOutcome spam, its own "
      "blind writes, their txids with its content, copies of their Commits sent much later")(
      "failover", po::bool_switch(&opts.failover),
      "two coordinators (primary + backup) with replication and failover; faults also hang and "
      "partition");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dtx-sim: %s\n%s", e.what(), "try --help\n");
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  auto bad = [](const std::string& m) {
    std::fprintf(stderr, "dtx-sim: %s\n", m.c_str());
    return 2;
  };
  if (opts.participants < 0 || opts.participants > 64) return bad("--participants must be 0..64");
  if (opts.clients < 0 || opts.clients > 64) return bad("--clients must be 0..64");
  if (opts.accounts != 0 && (opts.accounts < 2 || opts.accounts > 100))
    return bad("--accounts must be 0 or 2..100");
  if (opts.fault_phase_ms > 3'600'000 || opts.heal_max_ms > 3'600'000)
    return bad("phases are limited to one virtual hour");
  if (opts.heal_max_ms == 0) return bad("--heal-max-ms must be > 0");
  if (vm.count("seed") == 0 && (seeds == 0 || seeds > 100'000'000))
    return bad("--seeds must be 1..100000000");
  if (opts.trace && vm.count("seed") == 0) return bad("--trace needs --seed");
  if (vm.count("no-faults")) opts.faults = false;
  if (vm.count("no-client-retries")) opts.client_retries = false;
  if (sabotage == "none") {
    opts.sabotage = dtx::sim::Sabotage::kNone;
  } else if (sabotage == "lose-synced") {
    opts.sabotage = dtx::sim::Sabotage::kLoseSyncedRecords;
  } else if (sabotage == "blind-writes") {
    opts.sabotage = dtx::sim::Sabotage::kBlindWrites;
  } else if (sabotage == "accept-old-epochs") {
    opts.sabotage = dtx::sim::Sabotage::kAcceptOldEpochs;
  } else if (sabotage == "fake-sync") {
    opts.sabotage = dtx::sim::Sabotage::kFakeSync;
  } else if (sabotage == "stored-outcome-for-reuse") {
    opts.sabotage = dtx::sim::Sabotage::kStoredOutcomeForReuse;
  } else if (sabotage == "ignore-attempt-stamps") {
    opts.sabotage = dtx::sim::Sabotage::kIgnoreAttemptStamps;
  } else {
    return bad("unknown --sabotage '" + sabotage + "'");
  }
  const bool verbose = vm.count("verbose") != 0;

  dtx::sim::InstallAbortReporter();
  if (vm.count("seed")) {
    dtx::sim::SetCurrentSeed(seed);
    dtx::sim::RunResult r = dtx::sim::RunSeed(seed, opts);
    if (opts.trace) {
      for (const dtx::sim::TraceLine& t : r.trace) {
        std::printf("%8" PRIu64 "ms %s%s\n", t.at_ms,
                    t.txid == dtx::TxId{} ? "" : ("[" + t.txid.ToString() + "] ").c_str(),
                    t.text.c_str());
      }
    }
    std::printf("%s\n", dtx::sim::Summary(r).c_str());
    if (!r.ok()) {
      SimOptions untraced = opts;
      untraced.trace = false;
      std::printf("%s", dtx::sim::ExplainFailure(r, untraced).c_str());
      return 1;
    }
    return 0;
  }

  const auto t0 = std::chrono::steady_clock::now();
  uint64_t failed = 0, committed = 0, aborted = 0, crashes = 0, events = 0;
  dtx::sim::ProbeTotals probes;
  for (uint64_t s = start_seed; s < start_seed + seeds; ++s) {
    dtx::sim::SetCurrentSeed(s);
    dtx::sim::RunResult r = dtx::sim::RunSeed(s, opts);
    committed += r.stats.transfers_committed;
    aborted += r.stats.transfers_aborted;
    crashes += r.stats.crashes;
    events += r.stats.events;
    probes.Add(r.stats);
    if (verbose) std::printf("%s\n", dtx::sim::Summary(r).c_str());
    if (!r.ok()) {
      ++failed;
      std::printf("%s", dtx::sim::ExplainFailure(r, opts).c_str());
      std::fflush(stdout);
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("dtx-sim: %" PRIu64 " seeds from %" PRIu64 ": %" PRIu64 " failed; %" PRIu64
              " transfers committed, %" PRIu64 " aborted, %" PRIu64 " crashes, %" PRIu64
              " events in %.1f s\n",
              seeds, start_seed, failed, committed, aborted, crashes, events, secs);
  std::printf("%s", dtx::sim::ProbeTable(probes).c_str());
  return failed == 0 ? 0 : 1;
}
