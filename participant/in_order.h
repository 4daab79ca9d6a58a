// InOrder: one connection's calls reach the participant's driver in the
// order they arrived, each once the store keys it names read from memory
// (docs/design.md "The loop never blocks").
//
// A Prepare whose keys are neither in the overlay nor in the row cache first
// waits for the store reader (participant/async_store.h Warm), off the loop
// thread. The calls that arrive behind it on the same connection wait with it,
// so the core still sees a coordinator's calls (AdoptEpoch, Prepare, Abort of
// one transaction, ...) in the order the coordinator sent them; other
// connections do not wait. Reads change nothing and need no order: the
// runtime warms a Read's key directly.
//
// Bounded by the transport: a queued call is a call not answered yet, which
// counts against the connection's calls in flight (common/rpc_server.h).
//
// Threading: loop thread only. Held by shared_ptr (the handler of the
// connection, and a `done` handed to Warm, which keeps it until its calls ran
// even if the connection closed meanwhile).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dtx::participant {

class InOrder : public std::enable_shared_from_this<InOrder> {
 public:
  // AsyncStore::Warm's contract: true if `done` will run once the keys read
  // from memory; false (and `done` dropped) if they do now.
  using Warm =
      std::function<bool(const std::vector<std::string_view>& keys, std::function<void()> done)>;

  explicit InOrder(Warm warm) : warm_(std::move(warm)) {}

  // Nothing of this connection waits: a call whose keys read from memory may
  // run at once, without Queue.
  bool idle() const { return queue_.empty(); }
  size_t waiting() const { return queue_.size(); }

  // Runs `run` after every call queued before it has run, once `keys` read
  // from memory: at once if both already hold.
  void Queue(std::vector<std::string> keys, std::function<void()> run) {
    queue_.push_back(Call{std::move(keys), std::move(run)});
    if (!warming_) Advance();
  }

 private:
  struct Call {
    std::vector<std::string> keys;  // cleared once warmed
    std::function<void()> run;
  };

  void Advance() {
    while (!queue_.empty()) {
      Call& head = queue_.front();
      if (!head.keys.empty()) {
        std::vector<std::string_view> views(head.keys.begin(), head.keys.end());
        if (warm_(views, [self = shared_from_this()] { self->Warmed(); })) {
          warming_ = true;
          return;
        }
      }
      std::function<void()> run = std::move(head.run);
      queue_.pop_front();
      run();  // may Queue again (not re-entered while warming_): the loop goes on
    }
  }

  void Warmed() {
    warming_ = false;
    if (!queue_.empty()) queue_.front().keys.clear();
    Advance();
  }

  Warm warm_;
  std::deque<Call> queue_;
  bool warming_ = false;
};

}  // namespace dtx::participant
