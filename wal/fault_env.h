// FaultInjectionEnv: an Env for tests that wraps a real one and can
//  - fail any call (a hook sees every operation before it runs), and
//  - "lose power": undo every change to file data not covered by a
//    successful Sync of that file, and every file creation or rename not
//    covered by a later SyncDir of its directory.
// The model follows LevelDB's db/fault_injection_test.cc: a file's state as of
// its last sync is what survives. Deletions are not undone (the WAL only
// deletes fully obsolete segments and leftover temp files).
//
// The real file is the page cache's view; the undo records say how the
// medium differs from it. A process that dies (a test drops its Log without
// LosePower) leaves unsynced changes in the cache: readers still see them,
// and a later successful Sync makes them durable.
//
// A failed Sync (the hook refused it) does nothing by default: the changes
// stay dirty, as if the process had died just before the call. With
// SetSyncErrorsLoseData(true) it models Linux after a writeback error
// (PostgreSQL's "fsyncgate"): the file's unsynced changes are marked clean
// but never reached the medium. Reads still return them, a later Sync
// returns 0 without writing them, and only DropCache (the cache forgets them:
// reads show the medium) or LosePower undoes them. Writing to such a file
// before DropCache is refused (IOError): the model could not say what the
// medium then holds, and the WAL never does it (a failed sync stops the log).
//
// Changes are tracked only for files opened or created through this Env.
// While powered off (after LosePower, until PowerOn) every call fails with
// IOError, so a Log running on it fail-stops and reports nothing durable.
// Syncs are not passed to the real file system unless `real_sync` (tests do
// not need the real disk to be durable, only the model).
//
// Ownership: `base` is not owned and must outlive this Env; Files opened here
// must not outlive it. Thread-safety: all methods are thread-safe; every
// operation runs under one mutex, so LosePower sees each operation either
// entirely before or entirely after it.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/thread_annotations.h"
#include "wal/env.h"

namespace dtx::wal {

class FaultInjectionEnv final : public Env {
 public:
  enum class Op {
    kOpen,
    kCreate,
    kRead,
    kWrite,
    kAppend,
    kSync,
    kDropCache,
    kTruncate,
    kAllocate,
    kSize,
    kCreateDir,
    kRename,
    kDelete,
    kListDir,
    kSyncDir,
    kLock,
  };
  // Called before every operation with the path it touches; a non-OK return
  // makes the operation fail with that status without doing anything.
  using FaultHook = std::function<Status(Op op, const std::string& path)>;

  explicit FaultInjectionEnv(Env* base, bool real_sync = false);
  ~FaultInjectionEnv() override;

  void SetFaultHook(FaultHook hook);
  // See the class comment: whether a failed Sync leaves the file's unsynced
  // changes dirty (false, the default) or marks them clean but lost.
  void SetSyncErrorsLoseData(bool on);
  // Undo all unsynced changes (see above) and power off.
  Status LosePower();
  void PowerOn();
  bool powered() const;
  // Number of operations of kind `op` attempted so far (including failed ones).
  uint64_t count(Op op) const;

  Result<std::unique_ptr<File>> OpenFile(const std::string& path, OpenMode mode) override;
  Status CreateDir(const std::string& path) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status DeleteFile(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  Status SyncDir(const std::string& dir) override;
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override;

 private:
  class TrackedFile;
  struct Undo {
    uint64_t offset = 0;
    std::string old_bytes;  // file contents at [offset, offset + size) before the change
    uint64_t old_size = 0;  // file size before the change
  };
  struct FileState {
    std::vector<Undo> undo;  // changes since the last successful sync, oldest first
    // Changes whose sync failed under SetSyncErrorsLoseData(true): in the
    // cache, clean, not on the medium. Oldest first; `undo` is empty while
    // this is not (RecordChange refuses writes).
    std::vector<Undo> lost;
  };

  Status Before(Op op, const std::string& path) REQUIRES(mu_);
  Status RecordChange(File* f, const std::string& path, uint64_t offset, uint64_t len)
      REQUIRES(mu_);
  // A Sync of `path` failed: with sync_errors_lose_data_ its dirty changes
  // become lost.
  void SyncFailed(const std::string& path) REQUIRES(mu_);
  // Undoes `changes` (oldest first) on the real file at `path`, newest first.
  Status Revert(const std::string& path, const std::vector<Undo>& changes) REQUIRES(mu_);

  Env* const base_;
  const bool real_sync_;
  mutable Mutex mu_;
  FaultHook hook_ GUARDED_BY(mu_);
  bool powered_ GUARDED_BY(mu_) = true;
  bool sync_errors_lose_data_ GUARDED_BY(mu_) = false;
  std::map<std::string, FileState> files_ GUARDED_BY(mu_);
  std::map<std::string, std::set<std::string>> created_since_dir_sync_
      GUARDED_BY(mu_);  // dir -> paths
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> renamed_since_dir_sync_
      GUARDED_BY(mu_);
  std::map<Op, uint64_t> counts_ GUARDED_BY(mu_);
};

}  // namespace dtx::wal
