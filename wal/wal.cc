#include "wal/wal.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "common/failpoint.h"
#include "common/log.h"
#include "common/thread_annotations.h"
#include "wal/env.h"
#include "wal/format.h"

namespace dtx::wal {
namespace {

namespace f = format;

// Recovery reads a segment through this window: never more than one record
// (<= 16 MiB + header) or kReadChunkBytes in memory at once, whatever the
// length fields or the file size say.
constexpr size_t kReadChunkBytes = 1u << 20;
// The torn-tail check (docs/wal-format.md "Recovery rules (Open)", rule 6) may
// checksum candidate records after a bad one; past this many bytes of
// checksumming it gives up and calls the segment corrupt (the safe answer).
constexpr uint64_t kTornScanCrcBytesMax = 1ull << 30;

// wal::SyncFailedInProcess(): set by every failed sync, never cleared.
std::atomic<bool> g_sync_failed{false};

// Every sync of the log's files reports its failure through here.
Status SyncFailed(Status s) {
  DTX_CHECK(!s.ok());
  g_sync_failed.store(true);
  return s;
}

// fdatasync of a log file / fsync of a directory of the log, failures marked.
Status SyncFile(File* file) {
  Status s = file->Sync();
  return s.ok() ? s : SyncFailed(std::move(s));
}
Status SyncDirectory(Env* env, const std::string& dir) {
  Status s = env->SyncDir(dir);
  return s.ok() ? s : SyncFailed(std::move(s));
}

std::string JoinPath(const std::string& dir, std::string_view name) {
  std::string p = dir;
  if (p.empty() || p.back() != '/') p += '/';
  p += name;
  return p;
}

std::string ParentDir(const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  size_t slash = d.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return d.substr(0, slash);
}

class SegmentReader {
 public:
  SegmentReader(File* file, uint64_t size) : file_(file), size_(size) {}

  uint64_t size() const { return size_; }

  // Bytes [off, off + n), fewer only at end of file. Valid until the next call.
  Result<std::string_view> Read(uint64_t off, size_t n) {
    if (off >= size_) return std::string_view();
    n = static_cast<size_t>(std::min<uint64_t>(n, size_ - off));
    if (off >= buf_off_ && off + n <= buf_off_ + buf_.size()) {
      return std::string_view(buf_.data() + (off - buf_off_), n);
    }
    size_t want =
        static_cast<size_t>(std::min<uint64_t>(std::max(n, kReadChunkBytes), size_ - off));
    DTX_CHECK(want <= f::kRecordPayloadBytesMax + f::kRecordHeaderBytes || want <= kReadChunkBytes);
    buf_.resize(want);
    size_t got = 0;
    DTX_RETURN_IF_ERROR(file_->ReadAt(off, want, buf_.data(), &got));
    buf_.resize(got);
    buf_off_ = off;
    return std::string_view(buf_.data(), std::min(n, got));
  }

  // True if every byte in [off, size) is zero.
  Result<bool> AllZeroFrom(uint64_t off) {
    while (off < size_) {
      auto r = Read(off, kReadChunkBytes);
      if (!r.ok()) return r.status();
      if (r->empty()) break;  // file shrank under us: treat as end
      for (char c : *r) {
        if (c != 0) return false;
      }
      off += r->size();
    }
    return true;
  }

 private:
  File* const file_;
  const uint64_t size_;
  std::string buf_;
  uint64_t buf_off_ = 0;
};

struct Decoded {
  enum Kind { kRecord, kEndMarker, kZeroHeader, kBad } kind = kBad;
  uint8_t type = 0;
  std::string_view payload;  // valid until the reader's next Read
  Lsn next_lsn = 0;          // kEndMarker
  std::string why;           // kBad
  uint64_t frame_bytes() const { return f::kRecordHeaderBytes + payload.size(); }
};

// Decodes the frame at `off` (< reader.size()).
Result<Decoded> DecodeAt(SegmentReader& reader, uint64_t off) {
  Decoded d;
  auto h = reader.Read(off, f::kRecordHeaderBytes);
  if (!h.ok()) return h.status();
  if (h->size() < f::kRecordHeaderBytes) {
    bool zero = true;
    for (char c : *h) zero = zero && c == 0;
    d.kind = zero ? Decoded::kZeroHeader : Decoded::kBad;
    d.why = "partial record header (" + std::to_string(h->size()) + " bytes before end of file)";
    return d;
  }
  const uint32_t crc = f::GetU32(h->data());
  const uint32_t len = f::GetU32(h->data() + 4);
  const uint8_t type = static_cast<uint8_t>((*h)[8]);
  if (crc == 0 && len == 0 && type == 0) {
    d.kind = Decoded::kZeroHeader;
    return d;
  }
  if (len > f::kRecordPayloadBytesMax) {
    d.why = "length field " + std::to_string(len) + " exceeds the maximum " +
            std::to_string(f::kRecordPayloadBytesMax);
    return d;
  }
  if (off + f::kRecordHeaderBytes + len > reader.size()) {
    d.why = "record of " + std::to_string(len) + " payload bytes runs past the end of the file (" +
            std::to_string(reader.size()) + " bytes)";
    return d;
  }
  auto p = reader.Read(off + f::kRecordHeaderBytes, len);
  if (!p.ok()) return p.status();
  DTX_CHECK(p->size() == len);
  if (f::RecordCrc(type, *p) != crc) {
    d.why = "checksum mismatch";
    return d;
  }
  d.type = type;
  d.payload = *p;
  if (type == f::kTypeSegmentEnd) {
    if (len != f::kSegmentEndPayloadBytes) {
      d.why = "record of reserved type 0 with length " + std::to_string(len);
      return d;
    }
    d.kind = Decoded::kEndMarker;
    d.next_lsn = f::GetU64(p->data());
    return d;
  }
  d.kind = Decoded::kRecord;
  return d;
}

// Is there a valid frame starting anywhere in (bad_off, size)? See
// docs/wal-format.md "Recovery rules (Open)", rule 6. Returns its offset, or 0.
// Candidates are pre-filtered on the header in place (zero runs fail at once);
// only plausible ones are checksummed.
Result<uint64_t> FindValidFrameAfter(SegmentReader& reader, uint64_t bad_off) {
  uint64_t crc_bytes = 0;
  uint64_t q = bad_off + 1;
  while (q + f::kRecordHeaderBytes <= reader.size()) {
    auto view = reader.Read(q, kReadChunkBytes);
    if (!view.ok()) return view.status();
    DTX_CHECK(view->size() >= f::kRecordHeaderBytes);
    const size_t positions = view->size() - f::kRecordHeaderBytes + 1;
    for (size_t i = 0; i < positions; ++i) {
      const char* h = view->data() + i;
      const uint32_t len = f::GetU32(h + 4);
      const uint8_t type = static_cast<uint8_t>(h[8]);
      if (len > f::kRecordPayloadBytesMax || q + i + f::kRecordHeaderBytes + len > reader.size())
        continue;
      if (type == f::kTypeSegmentEnd && len != f::kSegmentEndPayloadBytes) continue;
      crc_bytes += len + 1;
      if (crc_bytes > kTornScanCrcBytesMax) return q + i;  // too much to tell: call it corrupt
      auto d = DecodeAt(reader, q + i);
      if (!d.ok()) return d.status();
      if (d->kind == Decoded::kRecord || d->kind == Decoded::kEndMarker) return q + i;
      view = reader.Read(q, kReadChunkBytes);  // DecodeAt may have moved the window
      if (!view.ok()) return view.status();
    }
    q += positions;
  }
  return uint64_t{0};
}

struct SegmentScan {
  enum End { kEndMarker, kZeros, kEof, kTorn } end = kEof;
  uint64_t records = 0;
  uint64_t end_offset = 0;  // just past the last valid record (torn: the cut point)
  Lsn next_lsn = 0;         // the LSN after this segment's last record
  std::string torn_why;
};

std::string At(const std::string& path, uint64_t off) {
  return path + " at offset " + std::to_string(off);
}

// Scans one segment, replaying its records. Non-last segments must end with
// an end marker; in the last one a bad frame is a torn tail unless a valid
// frame follows it.
Status ScanSegment(File* file, const std::string& path, Lsn name_lsn, bool is_last,
                   const ReplayFn& replay, SegmentScan* out) {
  auto size = file->Size();
  if (!size.ok()) return size.status();
  SegmentReader reader(file, *size);
  auto hb = reader.Read(0, f::kSegmentHeaderBytes);
  if (!hb.ok()) return hb.status();
  Lsn first = 0;
  Status hs = f::DecodeSegmentHeader(*hb, &first);
  if (!hs.ok()) return Status::Corruption(At(path, 0) + ": " + hs.message());
  if (first != name_lsn) {
    return Status::Corruption(At(path, 16) + ": header says first LSN " + std::to_string(first) +
                              " but the file name says " + std::to_string(name_lsn));
  }
  uint64_t off = f::kSegmentHeaderBytes;
  uint64_t n = 0;
  std::string bad_why;
  bool bad = false;
  for (;;) {
    if (off >= reader.size()) {
      out->end = SegmentScan::kEof;
      break;
    }
    auto d = DecodeAt(reader, off);
    if (!d.ok()) return d.status();
    if (d->kind == Decoded::kRecord) {
      if (replay) {
        Status s = replay(first + n, d->type, d->payload);
        if (!s.ok()) return s;
      }
      ++n;
      off += d->frame_bytes();
      continue;
    }
    if (d->kind == Decoded::kEndMarker) {
      if (d->next_lsn != first + n) {
        return Status::Corruption(At(path, off) + ": end marker says the next LSN is " +
                                  std::to_string(d->next_lsn) + " but the segment ends at LSN " +
                                  std::to_string(first + n - 1));
      }
      out->end = SegmentScan::kEndMarker;
      break;
    }
    if (d->kind == Decoded::kZeroHeader) {
      auto z = reader.AllZeroFrom(off);
      if (!z.ok()) return z.status();
      if (*z) {
        out->end = SegmentScan::kZeros;
        break;
      }
      d->why = "zero record header followed by non-zero bytes";
    }
    bad = true;
    bad_why = d->why;
    break;
  }
  out->records = n;
  out->end_offset = off;
  out->next_lsn = first + n;
  if (!is_last) {
    if (bad) return Status::Corruption(At(path, off) + ": corrupt record: " + bad_why);
    if (out->end != SegmentScan::kEndMarker) {
      return Status::Corruption(At(path, off) +
                                ": segment ends without an end marker but is not the last segment");
    }
    return Status::OK();
  }
  if (bad) {
    auto q = FindValidFrameAfter(reader, off);
    if (!q.ok()) return q.status();
    if (*q != 0) {
      return Status::Corruption(At(path, off) + ": corrupt record (" + bad_why +
                                ") followed by a valid record at offset " + std::to_string(*q) +
                                ", so it is not a torn tail");
    }
    out->end = SegmentScan::kTorn;
    out->torn_why = bad_why;
  }
  return Status::OK();
}

struct Batch {
  std::string bytes;                 // framed records, back to back
  std::vector<DurableFn> callbacks;  // one per record (may be empty functions)
  Lsn first_lsn = 0;
  bool empty() const { return callbacks.empty(); }
  Lsn last_lsn() const { return first_lsn + callbacks.size() - 1; }
  void clear() {
    bytes.clear();
    callbacks.clear();
    first_lsn = 0;
  }
};

}  // namespace

class Log::Impl {
 public:
  Impl(const Options& o, std::string dir, Env* env) : opt_(o), dir_(std::move(dir)), env_(env) {}

  ~Impl() {
    {
      MutexLock lock(&mu_);
      stopping_ = true;
    }
    flusher_cv_.Signal();
    space_cv_.SignalAll();
    if (flusher_.joinable()) flusher_.join();
  }

  Status Recover(const ReplayFn& replay);
  void Start() {
    flusher_ = std::thread([this] { FlusherLoop(); });
  }

  Result<Lsn> Append(uint8_t type, std::string_view payload, DurableFn cb, bool block);
  Status WaitDurable(Lsn lsn);
  Lsn durable_lsn() const { return durable_lsn_.load(); }
  Lsn last_lsn() const {
    MutexLock lock(&mu_);
    return last_lsn_;
  }
  uint64_t queued_bytes() const {
    MutexLock lock(&mu_);
    return pending_.bytes.size();
  }
  Status health() const {
    MutexLock lock(&mu_);
    return error_;
  }
  Status TruncateBefore(Lsn lsn);
  Stats stats() const;

 private:
  void FlusherLoop();
  void Linger(MutexLock* lock) REQUIRES(mu_);
  Status WriteBatch(const Batch& b);
  Status WriteAt(uint64_t off, std::string_view data);
  Status SyncSegment();
  Status SyncBeforeReplay(const std::vector<Lsn>& firsts);
  Status CreateSegment(Lsn first_lsn);
  void Fail(const Status& s, Batch* inflight);

  const Options opt_;
  const std::string dir_;
  Env* const env_;
  std::unique_ptr<FileLock> lock_;

  // Owned by the flusher thread once started (by Open before that).
  std::unique_ptr<File> seg_file_;
  Lsn seg_first_lsn_ = 0;
  uint64_t seg_offset_ = 0;
  uint64_t seg_records_ = 0;
  Batch inflight_;
  size_t last_batch_records_ = 0;
  uint64_t sync_us_ewma_ = 0;
  uint64_t batch_sync_ns_ = 0;  // flusher thread: fdatasync time of the batch being written

  // First LSN of every segment on disk, ascending; the last is being written.
  Mutex seg_mu_;
  std::vector<Lsn> segments_ GUARDED_BY(seg_mu_);

  mutable Mutex mu_;
  CondVar flusher_cv_;  // work for the flusher, or stop
  CondVar space_cv_;    // queue space, or failure
  CondVar durable_cv_;  // durable_lsn_ moved, or failure
  Batch pending_ GUARDED_BY(mu_);
  Lsn last_lsn_ GUARDED_BY(mu_) = 0;
  Status error_ GUARDED_BY(mu_);  // sticky
  bool stopping_ GUARDED_BY(mu_) = false;
  bool flusher_sleeping_ GUARDED_BY(mu_) = false;
  size_t linger_target_ GUARDED_BY(mu_) = 0;  // wake the flusher at this many queued records
  int space_waiters_ GUARDED_BY(mu_) = 0;
  std::atomic<int> durable_waiters_{0};
  std::atomic<Lsn> durable_lsn_{0};
  std::thread flusher_;

  std::atomic<uint64_t> st_syncs_{0}, st_records_synced_{0}, st_bytes_written_{0},
      st_segments_created_{0}, st_segments_deleted_{0}, st_sync_micros_total_{0},
      st_records_recovered_{0}, st_torn_tails_cut_{0};
};

Status Log::Impl::Recover(const ReplayFn& replay) {
  DTX_RETURN_IF_ERROR(env_->CreateDir(dir_));
  DTX_RETURN_IF_ERROR(SyncDirectory(env_, ParentDir(dir_)));
  auto lock = env_->LockFile(JoinPath(dir_, f::kLockFileName));
  if (!lock.ok()) return lock.status();
  lock_ = std::move(lock.value());

  auto names = env_->ListDir(dir_);
  if (!names.ok()) return names.status();
  std::vector<Lsn> firsts;
  for (const std::string& name : *names) {
    if (name == f::kLockFileName) continue;
    if (name.ends_with(f::kTempSuffix)) {
      // A segment whose creation did not finish: never renamed, so never used.
      DTX_RETURN_IF_ERROR(env_->DeleteFile(JoinPath(dir_, name)));
      continue;
    }
    if (name.ends_with(f::kSegmentSuffix)) {
      Lsn first = 0;
      if (!f::ParseSegmentFileName(name, &first)) {
        return Status::Corruption(JoinPath(dir_, name) + ": not a valid segment file name");
      }
      firsts.push_back(first);
    }
  }
  std::sort(firsts.begin(), firsts.end());
  DTX_RETURN_IF_ERROR(SyncBeforeReplay(firsts));

  if (firsts.empty()) {
    DTX_RETURN_IF_ERROR(CreateSegment(1));
    MutexLock mu_lock(&mu_);  // no other thread yet: uncontended, for the analysis
    last_lsn_ = 0;
    durable_lsn_ = 0;
    return Status::OK();
  }

  Lsn expected = firsts.front();
  uint64_t recovered = 0;
  for (size_t i = 0; i < firsts.size(); ++i) {
    const bool is_last = i + 1 == firsts.size();
    const std::string path = JoinPath(dir_, f::SegmentFileName(firsts[i]));
    if (firsts[i] != expected) {
      return Status::Corruption(path + ": segment starts at LSN " + std::to_string(firsts[i]) +
                                " but the previous segment ends at LSN " +
                                std::to_string(expected - 1) + " (a segment is missing)");
    }
    auto file = env_->OpenFile(path, OpenMode::kExisting);
    if (!file.ok()) return file.status();
    SegmentScan scan;
    DTX_RETURN_IF_ERROR(ScanSegment(file->get(), path, firsts[i], is_last, replay, &scan));
    recovered += scan.records;
    expected = scan.next_lsn;
    if (!is_last) continue;

    {
      MutexLock seg_lock(&seg_mu_);
      segments_ = firsts;
    }
    if (scan.end == SegmentScan::kEndMarker) {
      // Sealed before the crash; the next segment was never created.
      DTX_RETURN_IF_ERROR(CreateSegment(scan.next_lsn));
    } else {
      File* fp = file->get();
      if (scan.end == SegmentScan::kTorn) {
        auto size = fp->Size();
        if (!size.ok()) return size.status();
        DTX_LOG_WARN("wal: cutting torn tail of {} at offset {} ({}); the file was {} bytes", path,
                     scan.end_offset, scan.torn_why, *size);
        DTX_RETURN_IF_ERROR(fp->Truncate(scan.end_offset));
        if (opt_.preallocate && scan.end_offset < opt_.segment_bytes) {
          DTX_RETURN_IF_ERROR(fp->Allocate(scan.end_offset, opt_.segment_bytes - scan.end_offset));
        }
        DTX_RETURN_IF_ERROR(SyncFile(fp));
        st_torn_tails_cut_++;
      }
      seg_file_ = std::move(file.value());
      seg_first_lsn_ = firsts[i];
      seg_offset_ = scan.end_offset;
      seg_records_ = scan.records;
    }
  }
  MutexLock mu_lock(&mu_);
  last_lsn_ = expected - 1;
  durable_lsn_ = expected - 1;
  st_records_recovered_ = recovered;
  return Status::OK();
}

// Recovery reads the medium (docs/wal-format.md, "Recovery reads the
// medium"). The process that wrote the log may have died with records
// written and not yet synced: the page cache still holds them, a read would
// return them, and a power loss after we acted on them would take them away.
// Or a sync of it failed, and the kernel marked pages clean that never
// reached the disk: a later sync returns 0 and reads keep returning them
// until the cache lets them go. So before any record reaches `replay`: the
// directory is synced (the names listed are the ones on disk), every segment
// is fdatasync'ed - the first case is durable from here on - and its cached
// pages are dropped, so the scan reads what the medium holds and the second
// case is not read at all. A failed sync here stops Open; it is never
// retried (SyncFailedInProcess()).
Status Log::Impl::SyncBeforeReplay(const std::vector<Lsn>& firsts) {
  Status s = SyncDirectory(env_, dir_);
  if (!s.ok()) {
    return Status::IOError("wal: cannot make the directory " + dir_ +
                           " durable before replay: " + s.ToString());
  }
  for (Lsn first : firsts) {
    const std::string path = JoinPath(dir_, f::SegmentFileName(first));
    auto file = env_->OpenFile(path, OpenMode::kExisting);
    if (!file.ok()) return file.status();
    s = SyncFile(file->get());
    if (!s.ok()) {
      return Status::IOError("wal: cannot make " + path +
                             " durable before replaying it: " + s.ToString() +
                             "; stopping (what the page cache holds may never reach the disk)");
    }
    s = (*file)->DropCache();
    if (!s.ok()) return Status::IOError("wal: before replaying " + path + ": " + s.ToString());
  }
  return Status::OK();
}

Status Log::Impl::CreateSegment(Lsn first_lsn) {
  DTX_RETURN_IF_ERROR(fp::Eval(fp::Point::kWalBeforeSegmentCreate));
  const std::string name = f::SegmentFileName(first_lsn);
  const std::string path = JoinPath(dir_, name);
  const std::string tmp = path + std::string(f::kTempSuffix);
  auto file = env_->OpenFile(tmp, OpenMode::kCreate);
  if (!file.ok()) return file.status();
  DTX_RETURN_IF_ERROR((*file)->WriteAt(0, f::EncodeSegmentHeader(first_lsn)));
  if (opt_.preallocate) DTX_RETURN_IF_ERROR((*file)->Allocate(0, opt_.segment_bytes));
  DTX_RETURN_IF_ERROR(SyncFile(file->get()));
  DTX_RETURN_IF_ERROR(env_->RenameFile(tmp, path));
  DTX_RETURN_IF_ERROR(SyncDirectory(env_, dir_));
  // Write through a handle opened by the final name, so every later error
  // message (and the fault-injecting Env) names the real segment file.
  file = env_->OpenFile(path, OpenMode::kExisting);
  if (!file.ok()) return file.status();
  seg_file_ = std::move(file.value());
  seg_first_lsn_ = first_lsn;
  seg_offset_ = f::kSegmentHeaderBytes;
  seg_records_ = 0;
  {
    MutexLock lock(&seg_mu_);
    if (segments_.empty() || segments_.back() != first_lsn) segments_.push_back(first_lsn);
  }
  st_segments_created_++;
  return Status::OK();
}

Result<Lsn> Log::Impl::Append(uint8_t type, std::string_view payload, DurableFn cb, bool block) {
  if (type == f::kTypeSegmentEnd) return Status::InvalidArgument("wal: record type 0 is reserved");
  if (payload.size() > opt_.record_payload_bytes_max) {
    return Status::InvalidArgument("wal: payload of " + std::to_string(payload.size()) +
                                   " bytes exceeds the maximum " +
                                   std::to_string(opt_.record_payload_bytes_max));
  }
  char header[f::kRecordHeaderBytes];
  f::EncodeRecordHeader(header, type, payload);  // checksum outside the lock
  const size_t frame = f::kRecordHeaderBytes + payload.size();

  MutexLock lock(&mu_);
  for (;;) {
    if (!error_.ok()) return error_;
    if (stopping_) return Status::Failed("wal: log is closing");
    if (pending_.empty() || pending_.bytes.size() + frame <= opt_.queue_bytes_max) break;
    if (!block) return Status::Busy("wal: append queue full");
    if (linger_target_ != 0) {
      // The flusher is waiting for a fuller batch that cannot come: go now.
      linger_target_ = 0;
      flusher_cv_.Signal();
    }
    ++space_waiters_;
    space_cv_.Wait(&lock);
    --space_waiters_;
  }
  const Lsn lsn = ++last_lsn_;
  if (pending_.empty()) pending_.first_lsn = lsn;
  pending_.bytes.append(header, sizeof(header));
  pending_.bytes.append(payload.data(), payload.size());
  pending_.callbacks.push_back(std::move(cb));
  bool wake = flusher_sleeping_;
  flusher_sleeping_ = false;
  if (linger_target_ != 0 && pending_.callbacks.size() >= linger_target_) {
    linger_target_ = 0;
    wake = true;
  }
  lock.Unlock();
  if (wake) flusher_cv_.Signal();
  return lsn;
}

void Log::Impl::FlusherLoop() {
  static const Status kOk;
  for (;;) {
    bool notify_space = false;
    {
      MutexLock lock(&mu_);
      while (pending_.empty() && !stopping_) {
        flusher_sleeping_ = true;
        flusher_cv_.Wait(&lock);
      }
      flusher_sleeping_ = false;
      if (pending_.empty()) return;  // stopping, nothing left
      Linger(&lock);
      std::swap(pending_, inflight_);
      notify_space = space_waiters_ > 0;
    }
    if (notify_space) space_cv_.SignalAll();

    Status s = WriteBatch(inflight_);
    if (!s.ok()) {
      Fail(s, &inflight_);
      return;
    }
    st_records_synced_ += inflight_.callbacks.size();
    last_batch_records_ = inflight_.callbacks.size();
    if (opt_.on_sync)
      opt_.on_sync(inflight_.callbacks.size(), inflight_.bytes.size(), batch_sync_ns_);
    durable_lsn_.store(inflight_.last_lsn());
    if (durable_waiters_.load() > 0) {
      MutexLock lock(&mu_);
      durable_cv_.SignalAll();
    }
    for (DurableFn& cb : inflight_.callbacks) {
      if (cb) cb(kOk);
    }
    inflight_.clear();
  }
}

// Appenders driven by completions (an event loop re-issuing work when the
// previous batch is reported durable) send their next records in a burst.
// Taking only the first of them would split every burst over two syncs and
// double the latency, so when fewer records are queued than the previous
// batch had, wait briefly for the rest: at most linger_us_max and at most
// half a typical sync, and never when appenders are blocked on a full queue.
void Log::Impl::Linger(MutexLock* lock) {
  if (opt_.linger_us_max == 0 || pending_.callbacks.size() >= last_batch_records_ || stopping_ ||
      space_waiters_ > 0) {
    return;
  }
  const uint64_t us = std::min<uint64_t>(opt_.linger_us_max, sync_us_ewma_ / 2);
  if (us == 0) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  linger_target_ = last_batch_records_;
  while (linger_target_ != 0 && pending_.callbacks.size() < last_batch_records_ && !stopping_ &&
         space_waiters_ == 0) {
    if (!flusher_cv_.WaitUntil(lock, deadline)) break;
  }
  linger_target_ = 0;
}

void Log::Impl::Fail(const Status& s, Batch* inflight) {
  DTX_LOG_ERROR("wal: {} failed: {}; the log is fail-stopped", dir_, s.ToString());
  Batch rest;
  {
    MutexLock lock(&mu_);
    error_ = s;
    std::swap(rest, pending_);
    durable_cv_.SignalAll();
  }
  space_cv_.SignalAll();
  for (DurableFn& cb : inflight->callbacks) {
    if (cb) cb(s);
  }
  for (DurableFn& cb : rest.callbacks) {
    if (cb) cb(s);
  }
  inflight->clear();
}

Status Log::Impl::WriteAt(uint64_t off, std::string_view data) {
  DTX_RETURN_IF_ERROR(fp::Eval(fp::Point::kWalBeforeWrite));
  DTX_RETURN_IF_ERROR(seg_file_->WriteAt(off, data));
  st_bytes_written_ += data.size();
  return fp::Eval(fp::Point::kWalAfterWrite);
}

Status Log::Impl::SyncSegment() {
  // Timed from before the failpoint, so an injected sleep(ms) looks exactly
  // like a slow disk to the stats and to the linger bound.
  auto t0 = std::chrono::steady_clock::now();
  // `error` at either failpoint stands for this fdatasync failing.
  Status s = fp::Eval(fp::Point::kWalBeforeSync);
  if (!s.ok()) return SyncFailed(std::move(s));
  DTX_RETURN_IF_ERROR(SyncFile(seg_file_.get()));
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  batch_sync_ns_ +=
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count();
  st_sync_micros_total_ += static_cast<uint64_t>(us);
  sync_us_ewma_ = sync_us_ewma_ == 0 ? static_cast<uint64_t>(us)
                                     : (sync_us_ewma_ * 7 + static_cast<uint64_t>(us)) / 8;
  s = fp::Eval(fp::Point::kWalAfterSync);
  if (!s.ok()) return SyncFailed(std::move(s));
  st_syncs_++;  // counted only when the caller will see success
  return Status::OK();
}

Status Log::Impl::WriteBatch(const Batch& b) {
  batch_sync_ns_ = 0;
  const char* p = b.bytes.data();
  const size_t n = b.bytes.size();
  size_t pos = 0;
  Lsn lsn = b.first_lsn;
  while (pos < n) {
    const size_t start = pos;
    uint64_t off = seg_offset_;
    uint64_t recs = 0;
    while (pos < n) {
      DTX_CHECK(pos + f::kRecordHeaderBytes <= n);
      const uint64_t frame = f::kRecordHeaderBytes + f::GetU32(p + pos + 4);
      DTX_CHECK(pos + frame <= n);
      if (seg_records_ + recs > 0 && off + frame + f::kSegmentEndRecordBytes > opt_.segment_bytes)
        break;
      off += frame;
      pos += frame;
      ++recs;
    }
    if (pos > start) {
      DTX_RETURN_IF_ERROR(WriteAt(seg_offset_, std::string_view(p + start, pos - start)));
      seg_offset_ = off;
      seg_records_ += recs;
      lsn += recs;
    }
    if (pos < n) {
      // The segment is full: seal it (durably) before the next one exists, so
      // recovery can require an end marker in every segment but the last.
      DTX_RETURN_IF_ERROR(WriteAt(seg_offset_, f::EncodeSegmentEnd(lsn)));
      seg_offset_ += f::kSegmentEndRecordBytes;
      DTX_RETURN_IF_ERROR(SyncSegment());
      DTX_RETURN_IF_ERROR(CreateSegment(lsn));
    }
  }
  DTX_CHECK(lsn == b.first_lsn + b.callbacks.size());
  return SyncSegment();
}

Status Log::Impl::WaitDurable(Lsn lsn) {
  if (durable_lsn_.load() >= lsn) return Status::OK();
  MutexLock lock(&mu_);
  if (lsn > last_lsn_) {
    return Status::InvalidArgument("wal: WaitDurable(" + std::to_string(lsn) +
                                   ") beyond the last LSN " + std::to_string(last_lsn_));
  }
  durable_waiters_++;
  while (durable_lsn_.load() < lsn && error_.ok()) durable_cv_.Wait(&lock);
  durable_waiters_--;
  if (durable_lsn_.load() >= lsn) return Status::OK();
  return error_;
}

Status Log::Impl::TruncateBefore(Lsn lsn) {
  Status health_now = health();
  if (!health_now.ok()) return health_now;
  MutexLock lock(&seg_mu_);
  size_t drop = 0;
  // Segment i holds [segments_[i], segments_[i+1]); it can go when the next
  // one starts at or below lsn. The last segment is never dropped.
  while (drop + 1 < segments_.size() && segments_[drop + 1] <= lsn) ++drop;
  if (drop == 0) return Status::OK();
  for (size_t i = 0; i < drop; ++i) {
    // Oldest first: a crash part-way leaves a contiguous suffix.
    Status s = env_->DeleteFile(JoinPath(dir_, f::SegmentFileName(segments_[i])));
    if (!s.ok()) {
      segments_.erase(segments_.begin(), segments_.begin() + static_cast<ptrdiff_t>(i));
      return s;
    }
    st_segments_deleted_++;
  }
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<ptrdiff_t>(drop));
  return SyncDirectory(env_, dir_);
}

Stats Log::Impl::stats() const {
  Stats s;
  s.syncs = st_syncs_.load();
  s.records_synced = st_records_synced_.load();
  s.bytes_written = st_bytes_written_.load();
  s.segments_created = st_segments_created_.load();
  s.segments_deleted = st_segments_deleted_.load();
  s.sync_micros_total = st_sync_micros_total_.load();
  s.records_recovered = st_records_recovered_.load();
  s.torn_tails_cut = st_torn_tails_cut_.load();
  return s;
}

bool SyncFailedInProcess() { return g_sync_failed.load(); }

Result<std::unique_ptr<Log>> Log::Open(const Options& options, const std::string& dir,
                                       const ReplayFn& replay) {
  if (dir.empty()) return Status::InvalidArgument("wal: empty directory name");
  if (options.segment_bytes < format::kSegmentBytesMin) {
    return Status::InvalidArgument("wal: segment_bytes must be at least " +
                                   std::to_string(format::kSegmentBytesMin));
  }
  if (options.record_payload_bytes_max == 0 ||
      options.record_payload_bytes_max > kRecordPayloadBytesMax) {
    return Status::InvalidArgument("wal: record_payload_bytes_max must be in [1, " +
                                   std::to_string(kRecordPayloadBytesMax) + "]");
  }
  if (options.queue_bytes_max == 0)
    return Status::InvalidArgument("wal: queue_bytes_max must be positive");
  Env* env = options.env != nullptr ? options.env : Env::Posix();
  auto impl = std::make_unique<Impl>(options, dir, env);
  DTX_RETURN_IF_ERROR(impl->Recover(replay));
  impl->Start();
  return std::unique_ptr<Log>(new Log(std::move(impl)));
}

Log::Log(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Log::~Log() = default;

Result<Lsn> Log::Append(uint8_t type, std::string_view payload, DurableFn on_durable) {
  return impl_->Append(type, payload, std::move(on_durable), /*block=*/true);
}
Result<Lsn> Log::TryAppend(uint8_t type, std::string_view payload, DurableFn on_durable) {
  return impl_->Append(type, payload, std::move(on_durable), /*block=*/false);
}
Status Log::WaitDurable(Lsn lsn) { return impl_->WaitDurable(lsn); }
Lsn Log::durable_lsn() const { return impl_->durable_lsn(); }
Lsn Log::last_lsn() const { return impl_->last_lsn(); }
Status Log::health() const { return impl_->health(); }
Status Log::TruncateBefore(Lsn lsn) { return impl_->TruncateBefore(lsn); }
Stats Log::stats() const { return impl_->stats(); }
uint64_t Log::queued_bytes() const { return impl_->queued_bytes(); }

}  // namespace dtx::wal
