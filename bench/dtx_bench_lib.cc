#include "bench/dtx_bench_lib.h"

#include <sys/stat.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <sstream>

#include "tools/cluster_config.h"

namespace po = boost::program_options;

namespace dtx::bench {

const char* WorkloadName(Workload w) {
  switch (w) {
    case Workload::kBank: return "bank";
    case Workload::kYcsbA: return "ycsb-a";
    case Workload::kYcsbB: return "ycsb-b";
    case Workload::kYcsbF: return "ycsb-f";
  }
  return "?";
}

namespace {

po::options_description Options(Config* c, std::string* distribution) {
  po::options_description d("options");
  d.add_options()("help,h", "show help")(
      "workload", po::value<std::string>(&c->workload_name)->required(),
      "bank | ycsb-a (50/50 read/update) | ycsb-b (95/5) | ycsb-f (read-modify-write)")(
      "cluster", po::value<std::string>(&c->cluster_dir), "cluster directory (dtxctl cluster up)")(
      "cluster-file", po::value<std::string>(&c->cluster_file),
      "cluster file (docs/deploy.md): a cluster on other hosts; no node CPU figures")(
      "coordinator", po::value<std::string>(&c->coordinator), "coordinator HOST:PORT")(
      "clients", po::value<int>(&c->clients), "closed loop: transactions in flight")(
      "rate", po::value<double>(&c->rate),
      "open loop: start R tx/s (latency from the intended start time)")(
      "shed-throttle-k", po::value<double>(&c->shed_throttle_k)->default_value(1.1),
      "the client's throttle after overloaded refusals (ClientOptions::shed_throttle_k; 0: off)")(
      "max-in-flight", po::value<int>(&c->open_loop_in_flight_max)->default_value(1000),
      "open loop: at most this many in flight (later starts wait, their latency counts)")(
      "duration", po::value<double>(&c->duration_s)->required(), "measured seconds")(
      "warmup", po::value<double>(&c->warmup_s)->default_value(1.0), "seconds before measuring")(
      "accounts", po::value<int64_t>(&c->accounts)->default_value(100000), "bank: accounts")(
      "initial-balance", po::value<int64_t>(&c->initial_balance)->default_value(1000),
      "bank: balance of each account at load")(
      "keys", po::value<int64_t>(&c->keys)->default_value(100000), "ycsb: key count")(
      "value-size", po::value<int64_t>(&c->value_size)->default_value(100), "ycsb: value bytes")(
      "keys-per-tx", po::value<int>(&c->keys_per_tx)->default_value(2),
      "keys per transaction (bank: accounts in one transfer)")(
      "participants-per-tx", po::value<int>(&c->participants_per_tx)->default_value(0),
      "keys of a transaction span exactly this many participants (0: wherever they fall)")(
      "distribution", po::value<std::string>(distribution)->default_value("uniform"),
      "key choice: uniform | zipfian")("theta",
                                       po::value<double>(&c->zipf_theta)->default_value(0.99),
                                       "zipfian theta, 0 < theta < 1")(
      "check-interval", po::value<double>(&c->check_interval_s)->default_value(0),
      "bank: every S seconds check the total with one read-only transaction (accounts <= 1024)")(
      "faults", po::value<std::string>(&c->faults),
      "fault schedule, e.g. \"at 10s kill participant-1; at 15s restart participant-1\"")(
      "dtxctl", po::value<std::string>(&c->dtxctl), "dtxctl path for --faults (default: search)")(
      "avoid-stopped", po::bool_switch(&c->avoid_stopped),
      "with --faults: while a participant is stopped, start no transaction that touches it")(
      "floor", po::bool_switch(&c->floor),
      "measure fdatasync and loopback round trip; state latency as a ratio to the 2PC floor")(
      "floor-dir", po::value<std::string>(&c->floor_dir),
      "directory for the fdatasync floor file (default: the cluster directory, else /tmp)")(
      "json", po::value<std::string>(&c->json_path), "write the full report here")(
      "seed", po::value<uint64_t>(&c->seed), "random seed (default: random)")(
      "no-load", po::bool_switch(&c->no_load), "use the keys an earlier run loaded")(
      "no-progress", "no progress line on stderr");
  return d;
}

Status Bad(const std::string& m) { return Status::InvalidArgument(m); }

}  // namespace

Result<Config> ParseFlags(int argc, const char* const* argv, bool* help, std::string* usage) {
  Config c;
  std::string distribution;
  po::options_description desc = Options(&c, &distribution);
  std::ostringstream u;
  u << "usage: dtx-bench --workload W (--cluster DIR | --cluster-file FILE | --coordinator "
       "HOST:PORT)\n"
       "                 (--clients N | --rate R) --duration S [options]\n"
       "       dtx-bench plot REPORT.json [REPORT.json ...] [--out PREFIX] [--format png|svg]\n"
    << desc;
  *usage = u.str();
  *help = false;
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("help")) {
      *help = true;
      return c;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return Bad(e.what());
  }
  c.progress = vm.count("no-progress") == 0;
  if (c.workload_name == "bank") {
    c.workload = Workload::kBank;
  } else if (c.workload_name == "ycsb-a") {
    c.workload = Workload::kYcsbA;
  } else if (c.workload_name == "ycsb-b") {
    c.workload = Workload::kYcsbB;
  } else if (c.workload_name == "ycsb-f") {
    c.workload = Workload::kYcsbF;
  } else {
    return Bad("unknown workload '" + c.workload_name + "' (bank, ycsb-a, ycsb-b, ycsb-f)");
  }
  if (int(!c.cluster_dir.empty()) + int(!c.cluster_file.empty()) + int(!c.coordinator.empty()) !=
      1) {
    return Bad("give exactly one of --cluster DIR, --cluster-file FILE and --coordinator HOST:PORT");
  }
  if (!c.cluster_dir.empty()) {
    struct stat st {};
    if (::stat(c.cluster_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Bad("--cluster " + c.cluster_dir + ": no such directory");
    }
  }
  if (!c.coordinator.empty()) {
    auto hp = tools::ParseHostPort(c.coordinator);
    if (!hp.ok()) return Bad("--coordinator: " + hp.status().message());
  }
  bool has_clients = vm.count("clients") > 0;
  bool has_rate = vm.count("rate") > 0;
  if (has_clients == has_rate) return Bad("give exactly one of --clients N and --rate R");
  if (has_clients && (c.clients < 1 || c.clients > kClientsMax)) {
    return Bad("--clients must be 1.." + std::to_string(kClientsMax));
  }
  if (has_rate && (!(c.rate > 0) || c.rate > kRateMax)) {
    return Bad("--rate must be > 0 and <= " + std::to_string(static_cast<int>(kRateMax)));
  }
  if (c.open_loop_in_flight_max < 1 || c.open_loop_in_flight_max > kClientsMax) {
    return Bad("--max-in-flight must be 1.." + std::to_string(kClientsMax));
  }
  if (!(c.shed_throttle_k >= 0) || c.shed_throttle_k > 100) {
    return Bad("--shed-throttle-k must be in 0..100");
  }
  if (!(c.duration_s > 0) || c.duration_s > kDurationSecondsMax) {
    return Bad("--duration must be > 0 and <= " + std::to_string(kDurationSecondsMax));
  }
  if (!(c.warmup_s >= 0) || c.warmup_s > kDurationSecondsMax) return Bad("--warmup must be >= 0");
  if (c.accounts < 2 || c.accounts > kAccountsMax) {
    return Bad("--accounts must be 2.." + std::to_string(kAccountsMax));
  }
  if (c.initial_balance < 0 || c.initial_balance > 1'000'000'000) {
    return Bad("--initial-balance must be 0..1000000000");
  }
  if (c.keys < 1 || c.keys > kKeysMax) return Bad("--keys must be 1.." + std::to_string(kKeysMax));
  if (c.value_size < 1 || c.value_size > kValueBytesMaxBench) {
    return Bad("--value-size must be 1.." + std::to_string(kValueBytesMaxBench));
  }
  int keys_min = c.workload == Workload::kBank ? 2 : 1;
  if (c.keys_per_tx < keys_min || c.keys_per_tx > kKeysPerTxMax) {
    return Bad("--keys-per-tx must be " + std::to_string(keys_min) + ".." +
               std::to_string(kKeysPerTxMax) + " for " + c.workload_name);
  }
  if (c.keys_per_tx > c.key_count()) {
    return Bad("--keys-per-tx " + std::to_string(c.keys_per_tx) + " is more than the " +
               std::to_string(c.key_count()) + " keys");
  }
  if (c.participants_per_tx < 0 || c.participants_per_tx > c.keys_per_tx) {
    return Bad("--participants-per-tx must be 0..--keys-per-tx");
  }
  if (distribution == "uniform") {
    c.distribution = KeyDistribution::kUniform;
  } else if (distribution == "zipfian") {
    c.distribution = KeyDistribution::kZipfian;
  } else {
    return Bad("--distribution must be uniform or zipfian, not '" + distribution + "'");
  }
  if (!(c.zipf_theta > 0) || c.zipf_theta > kZipfThetaMax) {
    return Bad("--theta must be in (0, 0.999]");
  }
  if (!(c.check_interval_s >= 0)) return Bad("--check-interval must be >= 0");
  if (c.check_interval_s > 0 && c.workload != Workload::kBank) {
    return Bad("--check-interval is for the bank workload");
  }
  if (c.check_interval_s > 0 && c.accounts > 1024) {
    return Bad("--check-interval needs --accounts <= 1024 (one read-only transaction reads all)");
  }
  if (!c.faults.empty()) {
    if (c.cluster_dir.empty()) return Bad("--faults needs --cluster DIR");
    auto f = ParseFaultSchedule(c.faults);
    if (!f.ok()) return Bad("--faults: " + f.status().message());
  }
  if (!vm.count("seed")) c.seed = std::random_device{}();
  return c;
}

// ---------------------------------------------------------------------------

ZipfianGenerator::ZipfianGenerator(int64_t n, double theta) : n_(n), theta_(theta) {
  double z = 0;
  for (int64_t i = 1; i <= n; ++i) z += 1.0 / std::pow(static_cast<double>(i), theta);
  zetan_ = z;
  double zeta2 = 1.0 + 1.0 / std::pow(2.0, theta);
  alpha_ = 1.0 / (1.0 - theta);
  eta_ = (1.0 - std::pow(2.0 / static_cast<double>(n), 1.0 - theta)) / (1.0 - zeta2 / zetan_);
  half_pow_theta_ = 1.0 + std::pow(0.5, theta);
}

int64_t ZipfianGenerator::Next(std::mt19937_64& rng) const {
  double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  double uz = u * zetan_;
  if (uz < 1.0) return 0;
  if (uz < half_pow_theta_) return std::min<int64_t>(1, n_ - 1);
  auto v = static_cast<int64_t>(static_cast<double>(n_) * std::pow(eta_ * u - eta_ + 1.0, alpha_));
  return std::clamp<int64_t>(v, 0, n_ - 1);
}

double ZipfianGenerator::Probability(int64_t i) const {
  return 1.0 / std::pow(static_cast<double>(i + 1), theta_) / zetan_;
}

KeyChooser::KeyChooser(int64_t n, KeyDistribution d, double theta) : n_(n), dist_(d) {
  if (d == KeyDistribution::kZipfian) zipf_.emplace(n, theta);
  // A multiplier coprime to n: rank -> (rank * mult + offset) mod n is a
  // bijection that scatters neighbouring ranks.
  uint64_t m = 2654435761u % static_cast<uint64_t>(n);
  if (m == 0) m = 1;
  while (std::gcd(m, static_cast<uint64_t>(n)) != 1) ++m;
  mult_ = m;
}

int64_t KeyChooser::NextRank(std::mt19937_64& rng) const {
  if (zipf_) return zipf_->Next(rng);
  return std::uniform_int_distribution<int64_t>(0, n_ - 1)(rng);
}

int64_t KeyChooser::Scramble(int64_t rank) const {
  // rank, mult_ < n_ <= kKeysMax (1e8): the product fits in 64 bits.
  auto n = static_cast<uint64_t>(n_);
  return static_cast<int64_t>((static_cast<uint64_t>(rank) * mult_ + 12345u) % n);
}

int64_t KeyChooser::Next(std::mt19937_64& rng) const {
  int64_t r = NextRank(rng);
  return dist_ == KeyDistribution::kZipfian ? Scramble(r) : r;
}

// ---------------------------------------------------------------------------

Result<double> ParseSeconds(std::string_view text) {
  std::string t(text);
  double scale = 1.0;
  if (t.size() > 2 && t.substr(t.size() - 2) == "ms") {
    scale = 1e-3;
    t.resize(t.size() - 2);
  } else if (t.size() > 1 && t.back() == 's') {
    t.pop_back();
  } else {
    return Status::InvalidArgument("time '" + std::string(text) + "' needs a unit: 10s or 500ms");
  }
  if (t.empty() || t.find_first_not_of("0123456789.") != std::string::npos ||
      std::count(t.begin(), t.end(), '.') > 1 || t == ".") {
    return Status::InvalidArgument("bad time '" + std::string(text) + "'");
  }
  double v = std::strtod(t.c_str(), nullptr) * scale;
  if (v > kDurationSecondsMax)
    return Status::InvalidArgument("time '" + std::string(text) + "' too large");
  return v;
}

Result<std::vector<FaultEvent>> ParseFaultSchedule(std::string_view text) {
  std::vector<FaultEvent> out;
  std::string s(text);
  std::replace(s.begin(), s.end(), '\n', ';');
  std::stringstream events(s);
  std::string ev;
  int n = 0;
  while (std::getline(events, ev, ';')) {
    ++n;
    std::istringstream in(ev);
    std::vector<std::string> w;
    for (std::string x; in >> x;) w.push_back(x);
    if (w.empty()) continue;
    std::string where = "event " + std::to_string(n) + " '" + ev + "': ";
    if (w[0] != "at" || w.size() < 4) {
      return Status::InvalidArgument(where + "expected 'at TIME ACTION NODE [ARGS]'");
    }
    FaultEvent f;
    auto t = ParseSeconds(w[1]);
    if (!t.ok()) return Status::InvalidArgument(where + t.status().message());
    f.at_s = *t;
    f.action = w[2];
    f.node = w[3];
    auto node = tools::ParseNodeName(f.node);
    if (!node.ok()) return Status::InvalidArgument(where + "bad node '" + f.node + "'");
    f.args.assign(w.begin() + 4, w.end());
    if (f.action == "kill" || f.action == "restart" || f.action == "stop" || f.action == "cont") {
      if (!f.args.empty()) return Status::InvalidArgument(where + f.action + " takes only a node");
    } else if (f.action == "failpoint") {
      if (f.args.size() != 2) {
        return Status::InvalidArgument(where + "failpoint takes NODE NAME ACTION");
      }
    } else {
      return Status::InvalidArgument(where + "unknown action '" + f.action +
                                     "' (kill, restart, failpoint, stop, cont)");
    }
    f.text = "at " + w[1];
    for (size_t i = 2; i < w.size(); ++i) f.text += " " + w[i];
    out.push_back(std::move(f));
    if (out.size() > kFaultEventsMax) return Status::InvalidArgument("too many fault events");
  }
  if (out.empty()) return Status::InvalidArgument("empty fault schedule");
  std::stable_sort(out.begin(), out.end(),
                   [](const FaultEvent& a, const FaultEvent& b) { return a.at_s < b.at_s; });
  return out;
}

// ---------------------------------------------------------------------------

std::string FormatNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

}  // namespace dtx::bench
