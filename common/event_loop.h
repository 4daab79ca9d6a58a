// EventLoop: the one libuv loop of a process (or of the C++ client's I/O
// thread). Every socket, timer and signal of the process lives on it; other
// threads reach it only through Post() (a uv_async_t plus a mutex-guarded
// queue). Models: Node.js src/handle_wrap.{h,cc}, uvw src/uvw/handle.hpp.
//
// Handle ownership rule used by every wrapper in common/ (EventLoop timers,
// RpcServer, PeerChannel): a libuv handle is embedded in a heap object, the
// handle's `data` points at that object, and the object is freed in the
// uv_close callback, never before. Close() on any wrapper is safe to call
// twice. Callbacks given to libuv never throw; user callbacks run from them
// must not throw either (a throw is a programmer error: the process stops with
// a check failure naming the callback).
//
// Threads: one thread runs the loop (the "loop thread": the thread that
// called Run(); before the first Run(), the thread that constructed the
// loop). Post(), Stop(), InLoopThread() and InLoopThreadOrIdle() are
// thread-safe; every other method, and every method of every object built on
// the loop (RpcServer, PeerChannel, stubs), must be called on the loop thread,
// or on any single thread while the loop is not running. Those methods
// DTX_CHECK(InLoopThreadOrIdle()) on entry.
//
// Lifetime: the EventLoop must outlive every object built on it and every
// thread that may call Post(). Destroy those objects (or Close() them) first,
// on the loop thread or after Run() has returned; ~EventLoop then runs the
// loop until all close callbacks have run and closes it.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/check.h"
#include "common/status.h"
#include "common/thread_annotations.h"

namespace dtx {

// Identifies a timer on one EventLoop. 0 is never a valid id.
using TimerId = uint64_t;

class EventLoop {
 public:
  // Also sets SIGPIPE to ignored for the process: a write to a closed socket
  // must fail with EPIPE, not kill the node.
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs the loop on the calling thread until Stop() is called (from any
  // thread, or from a signal callback). Posted functions and timers run
  // inside Run(). May be called again after it returned. Loop thread only
  // (the caller becomes the loop thread).
  void Run();

  // Thread-safe, async-signal-unsafe. Asks Run() to return after the current
  // callback. A Stop() before Run() makes the next Run() return at once.
  void Stop();

  // Thread-safe. Queues `fn` to run on the loop thread, in FIFO order with
  // other Post()s. Returns false (and drops `fn`) once the loop is being
  // destroyed. Functions still queued when the loop is destroyed are
  // destroyed without running. The queue is not bounded here: every
  // producer (WAL threads, LevelDB threads, client API) bounds its own
  // in-flight work, which bounds this queue.
  bool Post(std::function<void()> fn);

  // Thread-safe. True on the loop thread.
  bool InLoopThread() const;
  // Thread-safe. True where a "loop thread only" method may be called: on the
  // loop thread, or on any thread while no Run() is in progress.
  bool InLoopThreadOrIdle() const;

  // Milliseconds from the loop's monotonic clock (uv_now; updated once per
  // loop iteration). Loop thread only.
  uint64_t NowMs() const;

  // One-shot timer: runs `fn` once on the loop thread after `delay_ms`.
  // Returns its id (valid until it fires or is cancelled). Loop thread only.
  TimerId RunAfter(uint64_t delay_ms, std::function<void()> fn);
  // Repeating timer: first after `interval_ms`, then every `interval_ms`
  // (> 0), until cancelled. Loop thread only.
  TimerId RunEvery(uint64_t interval_ms, std::function<void()> fn);
  // Cancels a timer. True if it was pending; false if the id is unknown,
  // already fired (one-shot) or already cancelled. Safe to call from inside
  // the timer's own callback (a repeating timer then stops). Loop thread only.
  bool Cancel(TimerId id);
  // Number of timers pending (tests, metrics).
  size_t timer_count() const { return timers_.size(); }

  // Runs `fn` once on the loop thread at the end of the current loop turn:
  // after this turn's I/O callbacks (the reads, accepts and Post()s of one
  // poll), or, for work queued from a timer, before the loop next waits for
  // I/O. Never later than the loop's next wait, so nothing queued here waits
  // on a timeout. The transport uses it to coalesce: the frames produced for
  // one connection during a turn leave in one write (common/rpc_server.h).
  // Functions queued while the turn-end functions run (one of them fails a
  // connection, whose callbacks write elsewhere) run in the same pass.
  // Functions still queued when the loop is destroyed are dropped. Loop
  // thread only.
  void AtTurnEnd(std::function<void()> fn);
  // Runs the turn-end functions queued so far now (and any they queue): the
  // writes coalesced so far leave at once. For a crash failpoint that must
  // find a message written. Loop thread only.
  void RunTurnEndNow();

  // Installs SIGTERM and SIGINT handlers (uv_signal_t) that call
  // `on_signal(signum)` on the loop thread. Typical use: stop servers, then
  // Stop(). Calling it again replaces the callback. One EventLoop per process
  // should do this. Loop thread only.
  Status HandleStopSignals(std::function<void(int signum)> on_signal);

  // The raw loop, for wrappers in common/ that own libuv handles. Loop
  // thread only.
  uv_loop_t* uv_loop() {
    DTX_CHECK(InLoopThreadOrIdle());
    return &loop_;
  }

 private:
  struct TimerHandle;  // owns a uv_timer_t; freed in its close callback
  struct SignalHandle;

  static void OnAsync(uv_async_t* handle);
  void DrainPosted();
  void RunTurnEnd();
  void FireTimer(TimerHandle* t);

  uv_loop_t loop_;
  uv_async_t* async_ = nullptr;  // freed in its close callback
  // Both run RunTurnEnd(): check after each poll, prepare before each wait.
  // Unreferenced: they never keep Run() alive by themselves.
  uv_check_t* turn_end_check_ = nullptr;      // freed in its close callback
  uv_prepare_t* turn_end_prepare_ = nullptr;  // freed in its close callback
  std::vector<std::function<void()>> turn_end_;
  std::atomic<std::thread::id> loop_thread_;
  std::atomic<bool> running_{false};  // inside Run()

  Mutex mu_;
  std::deque<std::function<void()>> posted_ GUARDED_BY(mu_);
  bool stop_requested_ GUARDED_BY(mu_) = false;
  bool closing_ GUARDED_BY(mu_) = false;

  TimerId next_timer_id_ = 1;
  std::unordered_map<TimerId, TimerHandle*> timers_;  // pending timers
  SignalHandle* sigterm_ = nullptr;
  SignalHandle* sigint_ = nullptr;
  std::function<void(int)> on_signal_;
};

// Runs an EventLoop on its own thread (the C++ client, tests). Start() starts
// the thread; Stop() (or the destructor) stops the loop and joins. Objects
// built on the loop must be created and destroyed on the loop thread: use
// RunSync() to do that from the owning thread.
class LoopThread {
 public:
  LoopThread();
  ~LoopThread();  // Stop()
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  void Start();
  // Stops the loop and joins the thread. Safe to call twice.
  void Stop();
  EventLoop* loop() { return loop_.get(); }
  const EventLoop* loop() const { return loop_.get(); }
  // Runs `fn` on the loop thread and waits for it to finish. Must not be
  // called from the loop thread. If the loop is not running, runs `fn` on the
  // calling thread.
  void RunSync(const std::function<void()>& fn);

 private:
  std::unique_ptr<EventLoop> loop_;
  std::thread thread_;
  bool running_ = false;
};

namespace internal {
// A user callback run from a libuv callback threw: a programmer error. Logs
// and stops the process (check failure) naming `what`.
[[noreturn]] void CallbackThrew(const char* what, const char* message);

// Runs `f()`; a throw ends in CallbackThrew(what, ...). For use inside libuv
// callbacks, which must never throw.
template <typename F>
void InvokeCallback(const char* what, F&& f) noexcept {
  try {
    f();
  } catch (const std::exception& e) {
    CallbackThrew(what, e.what());
  } catch (...) {
    CallbackThrew(what, "non-std exception");
  }
}
}  // namespace internal

}  // namespace dtx
