// LifetimeToken: "is the object that posted this callback still alive?" for
// callbacks that run on the loop thread after a hop through another thread
// (WAL durable notices, checkpoint results) or after a network reply.
//
// The owner holds the token; a callback captures a Watch (a weak pointer)
// and does nothing once the token has expired: the owner was destroyed, or
// it renewed the token to disown everything started before (the
// coordinator's log reload after a step-down). Both runtimes used this
// weak-pointer pattern by hand; this is the one copy.
//
// Threading: Watch objects may be copied on any thread; Expired() and
// Guard()ed callbacks are meant for the loop thread, the thread on which the
// owner expires, renews and destroys the token, so "not expired" stays true
// until the callback returns.
#pragma once

#include <memory>
#include <utility>

namespace dtx::node {

class LifetimeToken {
 public:
  using Watch = std::weak_ptr<int>;

  LifetimeToken() : alive_(std::make_shared<int>(0)) {}
  ~LifetimeToken() = default;
  LifetimeToken(const LifetimeToken&) = delete;
  LifetimeToken& operator=(const LifetimeToken&) = delete;

  // A watch of the current lifetime. Implicit so that glue written as
  // `std::weak_ptr<int> alive = alive_; ... if (alive.expired()) return;`
  // reads the same with a token.
  Watch watch() const { return alive_; }
  operator Watch() const { return watch(); }  // NOLINT(google-explicit-constructor)

  // Ends the current lifetime: every earlier watch expires. Renew() starts a
  // new one (watches taken afterwards are alive again); Expire() leaves the
  // token expired for good.
  void Renew() { alive_ = std::make_shared<int>(0); }
  void Expire() { alive_.reset(); }
  bool expired() const { return alive_ == nullptr; }

  // `fn` wrapped so that it does nothing once this lifetime has ended.
  template <typename Fn>
  auto Guard(Fn fn) const {
    return [watch = watch(), fn = std::move(fn)](auto&&... args) mutable {
      if (watch.expired()) return;
      fn(std::forward<decltype(args)>(args)...);
    };
  }

 private:
  std::shared_ptr<int> alive_;
};

}  // namespace dtx::node
