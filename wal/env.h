// The file-system seam of the WAL (in the spirit of LevelDB's Env): every
// file and directory operation the log performs goes through an Env, so tests
// can fail any call or simulate a power loss (wal/fault_env.h).
//
// Ownership: Env::Posix() is a process-wide singleton that is never freed.
// A File is owned by whoever opened it and closes its descriptor when
// destroyed; it must not outlive its Env.
// Thread-safety: Env methods are thread-safe. A File may be used by one
// thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dtx::wal {

enum class OpenMode {
  kCreate,    // create, or truncate to 0 bytes if it exists
  kExisting,  // must exist; contents kept
};

// An open regular file, readable and writable at explicit offsets.
class File {
 public:
  virtual ~File() = default;
  // Reads up to n bytes at `offset` into dst; *got < n only at end of file.
  virtual Status ReadAt(uint64_t offset, size_t n, char* dst, size_t* got) = 0;
  // Writes all of `data` at `offset` (pwrite; retries short writes).
  virtual Status WriteAt(uint64_t offset, std::string_view data) = 0;
  // Writes all of `data` at the current end of the file.
  virtual Status Append(std::string_view data) = 0;
  // fdatasync: data written so far, and the size, survive a power loss.
  virtual Status Sync() = 0;
  // Drops this file's clean pages from the OS page cache, so that the next
  // reads come from the medium (posix_fadvise POSIX_FADV_DONTNEED). Dirty
  // pages are not dropped: call it after Sync returned 0, and then every
  // page is clean. What a later ReadAt returns is then what the medium holds,
  // not a cached copy that a failed writeback left behind
  // (docs/wal-format.md, "Recovery reads the medium").
  virtual Status DropCache() = 0;
  virtual Status Truncate(uint64_t size) = 0;
  // Reserves [offset, offset+len) (fallocate mode 0): reads as zeros and the
  // file size grows to cover it.
  virtual Status Allocate(uint64_t offset, uint64_t len) = 0;
  virtual Result<uint64_t> Size() = 0;
  virtual const std::string& path() const = 0;
};

// Held while the directory is in use; releasing it (destruction) unlocks.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  // The real POSIX file system.
  static Env* Posix();

  virtual Result<std::unique_ptr<File>> OpenFile(const std::string& path, OpenMode mode) = 0;
  // Creates one directory level; OK if it already exists.
  virtual Status CreateDir(const std::string& path) = 0;
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual Status DeleteFile(const std::string& path) = 0;
  // Names of the entries in `dir` (no "." or "..").
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  // fsync of the directory itself: makes creations, renames and deletions of
  // its entries durable.
  virtual Status SyncDir(const std::string& dir) = 0;
  // Exclusive advisory lock on `path` (created if missing). Busy if another
  // holder (process or open Log) has it.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) = 0;
};

}  // namespace dtx::wal
