#include "common/event_loop.h"

#include <csignal>
#include <future>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/log.h"

namespace dtx {

namespace internal {
void CallbackThrew(const char* what, const char* message) {
  std::string msg = std::string("callback threw (callbacks must not throw): ") + what + ": " +
                    (message ? message : "");
  DTX_LOG_ERROR("{}", msg);
  ::dtx::CheckFailed(__FILE__, __LINE__, "callback did not throw", msg.c_str());
}
}  // namespace internal

struct EventLoop::TimerHandle {
  uv_timer_t handle;
  EventLoop* loop;
  TimerId id;
  bool repeating;
  std::function<void()> fn;
};

struct EventLoop::SignalHandle {
  uv_signal_t handle;
  EventLoop* loop;
};

namespace {

template <typename Owner, typename Handle>
void DeleteOwnerOnClose(Handle* h) {
  uv_close(reinterpret_cast<uv_handle_t*>(h),
           [](uv_handle_t* closed) { delete static_cast<Owner*>(closed->data); });
}

}  // namespace

EventLoop::EventLoop() : loop_thread_(std::this_thread::get_id()) {
  // libuv writes to sockets with write(2), so a peer that closed its end
  // raises SIGPIPE, whose default action kills the process. Every process
  // that runs a loop talks to peers it does not control: the write must fail
  // with EPIPE instead (the connection is then closed and logged).
  std::signal(SIGPIPE, SIG_IGN);
  int rc = uv_loop_init(&loop_);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  async_ = new uv_async_t;
  rc = uv_async_init(&loop_, async_, &EventLoop::OnAsync);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  async_->data = this;
  turn_end_check_ = new uv_check_t;
  rc = uv_check_init(&loop_, turn_end_check_);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  turn_end_check_->data = this;
  uv_check_start(turn_end_check_,
                 [](uv_check_t* h) { static_cast<EventLoop*>(h->data)->RunTurnEnd(); });
  uv_unref(reinterpret_cast<uv_handle_t*>(turn_end_check_));
  turn_end_prepare_ = new uv_prepare_t;
  rc = uv_prepare_init(&loop_, turn_end_prepare_);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  turn_end_prepare_->data = this;
  uv_prepare_start(turn_end_prepare_,
                   [](uv_prepare_t* h) { static_cast<EventLoop*>(h->data)->RunTurnEnd(); });
  uv_unref(reinterpret_cast<uv_handle_t*>(turn_end_prepare_));
}

EventLoop::~EventLoop() {
  std::deque<std::function<void()>> dropped;
  {
    MutexLock lock(&mu_);
    closing_ = true;
    dropped.swap(posted_);
  }
  dropped.clear();
  turn_end_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(turn_end_check_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(turn_end_prepare_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_prepare_t*>(h); });
  turn_end_check_ = nullptr;
  turn_end_prepare_ = nullptr;

  std::vector<TimerId> ids;
  ids.reserve(timers_.size());
  for (const auto& [id, t] : timers_) ids.push_back(id);
  for (TimerId id : ids) Cancel(id);
  for (SignalHandle** s : {&sigterm_, &sigint_}) {
    if (*s != nullptr) {
      uv_signal_stop(&(*s)->handle);
      DeleteOwnerOnClose<SignalHandle>(&(*s)->handle);
      *s = nullptr;
    }
  }
  {
    // Post() sends under mu_, so after this no thread touches async_.
    MutexLock lock(&mu_);
    uv_close(reinterpret_cast<uv_handle_t*>(async_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
    async_ = nullptr;
  }

  // Handles whose owners were not closed first (a contract violation): close
  // them so the loop can close; their owners leak rather than crash.
  size_t leaked = 0;
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void* arg) {
        if (!uv_is_closing(h)) {
          ++*static_cast<size_t*>(arg);
          uv_close(h, nullptr);
        }
      },
      &leaked);
  if (leaked > 0) {
    DTX_LOG_WARN("event loop destroyed with {} open handle(s); owners not closed first", leaked);
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop_);
  if (rc != 0) DTX_LOG_ERROR("uv_loop_close: {}", uv_strerror(rc));
}

void EventLoop::Run() {
  DTX_CHECK_MSG(!running_.load(), "EventLoop::Run while another Run() is in progress");
  loop_thread_.store(std::this_thread::get_id());
  running_.store(true);
  uv_run(&loop_, UV_RUN_DEFAULT);
  running_.store(false);
}

void EventLoop::Stop() {
  MutexLock lock(&mu_);
  stop_requested_ = true;
  if (async_ != nullptr) uv_async_send(async_);
}

bool EventLoop::Post(std::function<void()> fn) {
  MutexLock lock(&mu_);
  if (closing_) return false;
  posted_.push_back(std::move(fn));
  uv_async_send(async_);
  return true;
}

bool EventLoop::InLoopThread() const { return loop_thread_.load() == std::this_thread::get_id(); }

bool EventLoop::InLoopThreadOrIdle() const { return !running_.load() || InLoopThread(); }

uint64_t EventLoop::NowMs() const {
  DTX_CHECK(InLoopThreadOrIdle());
  return uv_now(&loop_);
}

void EventLoop::OnAsync(uv_async_t* handle) {
  auto* self = static_cast<EventLoop*>(handle->data);
  self->DrainPosted();
}

void EventLoop::DrainPosted() {
  std::deque<std::function<void()>> batch;
  bool stop = false;
  {
    MutexLock lock(&mu_);
    batch.swap(posted_);
    stop = stop_requested_;
    stop_requested_ = false;
  }
  for (auto& fn : batch) {
    internal::InvokeCallback("EventLoop::Post", fn);
  }
  if (stop) uv_stop(&loop_);
}

void EventLoop::AtTurnEnd(std::function<void()> fn) {
  DTX_CHECK(InLoopThreadOrIdle());
  turn_end_.push_back(std::move(fn));
}

void EventLoop::RunTurnEndNow() {
  DTX_CHECK(InLoopThreadOrIdle());
  RunTurnEnd();
}

void EventLoop::RunTurnEnd() {
  // Swapped out before running: a function may queue more (they run in the
  // next round of this loop, still in this turn).
  std::vector<std::function<void()>> batch;
  while (!turn_end_.empty()) {
    batch.clear();
    batch.swap(turn_end_);
    for (auto& fn : batch) internal::InvokeCallback("EventLoop::AtTurnEnd", fn);
  }
}

TimerId EventLoop::RunAfter(uint64_t delay_ms, std::function<void()> fn) {
  DTX_CHECK(InLoopThreadOrIdle());
  auto* t = new TimerHandle{{}, this, next_timer_id_++, false, std::move(fn)};
  int rc = uv_timer_init(&loop_, &t->handle);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  t->handle.data = t;
  timers_.emplace(t->id, t);
  uv_timer_start(
      &t->handle,
      [](uv_timer_t* h) {
        auto* timer = static_cast<TimerHandle*>(h->data);
        timer->loop->FireTimer(timer);
      },
      delay_ms, 0);
  return t->id;
}

TimerId EventLoop::RunEvery(uint64_t interval_ms, std::function<void()> fn) {
  DTX_CHECK(InLoopThreadOrIdle());
  DTX_CHECK(interval_ms > 0);
  auto* t = new TimerHandle{{}, this, next_timer_id_++, true, std::move(fn)};
  int rc = uv_timer_init(&loop_, &t->handle);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  t->handle.data = t;
  timers_.emplace(t->id, t);
  uv_timer_start(
      &t->handle,
      [](uv_timer_t* h) {
        auto* timer = static_cast<TimerHandle*>(h->data);
        timer->loop->FireTimer(timer);
      },
      interval_ms, interval_ms);
  return t->id;
}

void EventLoop::FireTimer(TimerHandle* t) {
  if (t->repeating) {
    // Cancel() from inside fn only closes the handle; `t` (and fn) are freed
    // in the close callback, after this returns.
    internal::InvokeCallback("EventLoop timer", t->fn);
    return;
  }
  std::function<void()> fn = std::move(t->fn);
  timers_.erase(t->id);
  DeleteOwnerOnClose<TimerHandle>(&t->handle);
  internal::InvokeCallback("EventLoop timer", fn);
}

bool EventLoop::Cancel(TimerId id) {
  DTX_CHECK(InLoopThreadOrIdle());
  auto it = timers_.find(id);
  if (it == timers_.end()) return false;
  TimerHandle* t = it->second;
  timers_.erase(it);
  uv_timer_stop(&t->handle);
  DeleteOwnerOnClose<TimerHandle>(&t->handle);
  return true;
}

Status EventLoop::HandleStopSignals(std::function<void(int signum)> on_signal) {
  DTX_CHECK(InLoopThreadOrIdle());
  on_signal_ = std::move(on_signal);
  for (auto [slot, signum] : {std::pair{&sigterm_, SIGTERM}, std::pair{&sigint_, SIGINT}}) {
    if (*slot != nullptr) continue;
    auto* s = new SignalHandle{{}, this};
    int rc = uv_signal_init(&loop_, &s->handle);
    if (rc != 0) {
      delete s;
      return Status::IOError(std::string("uv_signal_init: ") + uv_strerror(rc));
    }
    s->handle.data = s;
    rc = uv_signal_start(
        &s->handle,
        [](uv_signal_t* h, int sig) {
          auto* sh = static_cast<SignalHandle*>(h->data);
          if (sh->loop->on_signal_) {
            internal::InvokeCallback("EventLoop signal", [&] { sh->loop->on_signal_(sig); });
          }
        },
        signum);
    if (rc != 0) {
      DeleteOwnerOnClose<SignalHandle>(&s->handle);
      return Status::IOError(std::string("uv_signal_start: ") + uv_strerror(rc));
    }
    *slot = s;
  }
  return Status::OK();
}

LoopThread::LoopThread() : loop_(std::make_unique<EventLoop>()) {}

LoopThread::~LoopThread() { Stop(); }

void LoopThread::Start() {
  DTX_CHECK(!running_);
  running_ = true;
  std::promise<void> started;
  auto started_future = started.get_future();
  thread_ = std::thread([this, &started] {
    // The loop thread is recorded by Run(); Post the signal so Start()
    // returns only once Run() has taken over.
    loop_->Post([&started] { started.set_value(); });
    loop_->Run();
  });
  started_future.wait();
}

void LoopThread::Stop() {
  if (!running_) return;
  loop_->Stop();
  thread_.join();
  running_ = false;
}

void LoopThread::RunSync(const std::function<void()>& fn) {
  if (!running_) {
    fn();
    return;
  }
  DTX_CHECK(!loop_->InLoopThread());
  std::promise<void> done;
  auto done_future = done.get_future();
  bool posted = loop_->Post([&] {
    fn();
    done.set_value();
  });
  DTX_CHECK(posted);
  done_future.wait();
}

}  // namespace dtx
