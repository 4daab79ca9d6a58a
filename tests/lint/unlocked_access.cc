// Must NOT compile under the thread-safety lint (scripts/thread-safety-lint
// --expect-error): Bump() writes a GUARDED_BY member without its mutex. The
// CTest test thread_safety_lint_rejects_unlocked_access shows the check fails
// when it should.
#include "common/thread_annotations.h"

namespace {

class Counter {
 public:
  void Bump() { ++count_; }  // the deliberate error: mu_ is not held
  int Get() {
    dtx::MutexLock lock(&mu_);
    return count_;
  }

 private:
  dtx::Mutex mu_;
  int count_ GUARDED_BY(mu_) = 0;
};

}  // namespace

int main() {
  Counter c;
  c.Bump();
  return c.Get();
}
