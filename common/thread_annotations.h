// Clang thread-safety annotations (-Wthread-safety), and the annotated mutex
// every lock in dtx uses. Models: Abseil absl/base/thread_annotations.h and
// absl/synchronization/mutex.h, LevelDB port/thread_annotations.h.
//
// Clang checks, at compile time, that a member marked GUARDED_BY(mu_) is
// touched only with `mu_` held and that a function marked REQUIRES(mu_) is
// called only with it held. It sees only annotated types, so locks are
// dtx::Mutex / dtx::MutexLock, not std::mutex / std::lock_guard. Under g++ the
// macros expand to nothing. The check runs as the CTest test
// `thread_safety_lint` (scripts/thread-safety-lint, label lint).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define DTX_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define DTX_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) DTX_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY DTX_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) DTX_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) DTX_THREAD_ANNOTATION(pt_guarded_by(x))
#define REQUIRES(...) DTX_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) DTX_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) DTX_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define EXCLUDES(...) DTX_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS DTX_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace dtx {

// std::mutex with the capability attribute. Not recursive.
class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }

 private:
  friend class MutexLock;
  std::mutex mu_;
};

// Holds `mu` for its scope (std::lock_guard for Mutex).
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : lock_(mu->mu_) {}
  ~MutexLock() RELEASE() {}
  // Releases early; the destructor then does nothing.
  void Unlock() RELEASE() { lock_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  friend class CondVar;
  std::unique_lock<std::mutex> lock_;
};

// std::condition_variable for Mutex. Wait* release the lock while blocked
// and hold it again on return; for the analysis the lock is held throughout
// (as for std::condition_variable). Callers loop on their condition.
class CondVar {
 public:
  void Wait(MutexLock* lock) { cv_.wait(lock->lock_); }
  // False on timeout.
  bool WaitUntil(MutexLock* lock, std::chrono::steady_clock::time_point deadline) {
    return cv_.wait_until(lock->lock_, deadline) == std::cv_status::no_timeout;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace dtx
