// ShedThrottle: client-side adaptive throttling (Google's SRE book, "Handling
// Overload": a client that sees its backend refuse work rejects part of its
// new work itself). A coordinator above capacity refuses a Commit with
// UNAVAILABLE and retry_after_ms (docs/design.md "Overload"); by then the
// transaction's reads were served for nothing. The client counts the commits
// answered (`requests`, with the transactions it refused itself) and those
// the coordinator took on (`accepts`: any answer but such a refusal) - both
// when the answer arrives, so that commits still in flight do not count as
// refused -
// over the last seconds (exponential decay, time constant kDecayNs: 1 s), and
// refuses a new transaction at Begin, before any read, with probability
//
//     max(0, (requests - K * accepts) / (requests + 1)).
//
// While the coordinator takes on everything asked, accepts = requests and the
// probability is 0; after an overload it fades to 0 within a few time
// constants of the coordinator taking everything on again (each generation of
// counts lowers it by about (K - 1) (1 - p): some 5 s from p = 0.5). When it sheds, the client lets through about K times what
// it took on lately and refuses the rest at no cost to any node. K = 1.1: the
// book's 2 suits backends that refuse cheaply; a refused commit here has cost
// a transaction's reads, so the client stays closer to what is accepted.
//
// Pure: time and the random draw are inputs. Not thread-safe (the client
// holds its mutex).
#pragma once

#include <cmath>
#include <cstdint>

namespace dtx {

class ShedThrottle {
 public:
  static constexpr double kDecayNs = 1e9;

  explicit ShedThrottle(double k) : k_(k) {}

  // The probability that a new transaction is refused now.
  double RejectProbability(int64_t now_ns) {
    Decay(now_ns);
    if (k_ <= 0) return 0;
    const double p = (requests_ - k_ * accepts_) / (requests_ + 1);
    return p > 0 ? p : 0;
  }
  // Begin: refuse (true) when `draw`, uniform in [0, 1), falls below the
  // probability; a refusal counts as a request.
  bool Refuse(int64_t now_ns, double draw) {
    if (draw >= RejectProbability(now_ns)) return false;
    requests_ += 1;
    return true;
  }
  // A commit was answered: taken on (`accepted`) or refused as overloaded.
  void Answered(int64_t now_ns, bool accepted) {
    Decay(now_ns);
    requests_ += 1;
    if (accepted) accepts_ += 1;
  }
  double requests() const { return requests_; }
  double accepts() const { return accepts_; }

 private:
  void Decay(int64_t now_ns) {
    if (now_ns > at_ns_) {
      const double f = std::exp(-static_cast<double>(now_ns - at_ns_) / kDecayNs);
      requests_ *= f;
      accepts_ *= f;
      at_ns_ = now_ns;
    }
  }

  const double k_;
  double requests_ = 0;
  double accepts_ = 0;
  int64_t at_ns_ = 0;
};

}  // namespace dtx
