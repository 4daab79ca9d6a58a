#include "wal/fault_env.h"

#include <algorithm>
#include <iterator>

namespace dtx::wal {
namespace {

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

class FaultInjectionEnv::TrackedFile final : public File {
 public:
  TrackedFile(FaultInjectionEnv* env, std::unique_ptr<File> base)
      : env_(env), base_(std::move(base)) {}

  Status ReadAt(uint64_t offset, size_t n, char* dst, size_t* got) override {
    MutexLock lock(&env_->mu_);
    DTX_RETURN_IF_ERROR(env_->Before(Op::kRead, path()));
    return base_->ReadAt(offset, n, dst, got);
  }
  Status WriteAt(uint64_t offset, std::string_view data) override {
    MutexLock lock(&env_->mu_);
    DTX_RETURN_IF_ERROR(env_->Before(Op::kWrite, path()));
    DTX_RETURN_IF_ERROR(env_->RecordChange(base_.get(), path(), offset, data.size()));
    return base_->WriteAt(offset, data);
  }
  Status Append(std::string_view data) override {
    MutexLock lock(&env_->mu_);
    DTX_RETURN_IF_ERROR(env_->Before(Op::kAppend, path()));
    auto size = base_->Size();
    if (!size.ok()) return size.status();
    DTX_RETURN_IF_ERROR(env_->RecordChange(base_.get(), path(), *size, data.size()));
    return base_->WriteAt(*size, data);
  }
  Status Sync() override {
    MutexLock lock(&env_->mu_);
    Status s = env_->Before(Op::kSync, path());
    if (s.ok() && env_->real_sync_) s = base_->Sync();
    if (!s.ok()) {
      env_->SyncFailed(path());
      return s;
    }
    env_->files_[path()].undo.clear();  // `lost` stays lost: this sync does not write it
    return Status::OK();
  }
  Status DropCache() override {
    MutexLock lock(&env_->mu_);
    DTX_RETURN_IF_ERROR(env_->Before(Op::kDropCache, path()));
    // Dirty pages stay (undo); clean ones are read again from the medium,
    // which never got the lost changes.
    auto it = env_->files_.find(path());
    if (it != env_->files_.end() && !it->second.lost.empty()) {
      DTX_RETURN_IF_ERROR(env_->Revert(path(), it->second.lost));
      it->second.lost.clear();
    }
    if (env_->real_sync_) return base_->DropCache();
    return Status::OK();
  }
  Status Truncate(uint64_t size) override {
    MutexLock lock(&env_->mu_);
    DTX_RETURN_IF_ERROR(env_->Before(Op::kTruncate, path()));
    auto cur = base_->Size();
    if (!cur.ok()) return cur.status();
    if (size < *cur)
      DTX_RETURN_IF_ERROR(env_->RecordChange(base_.get(), path(), size, *cur - size));
    else DTX_RETURN_IF_ERROR(env_->RecordChange(base_.get(), path(), *cur, 0));
    return base_->Truncate(size);
  }
  Status Allocate(uint64_t offset, uint64_t len) override {
    MutexLock lock(&env_->mu_);
    DTX_RETURN_IF_ERROR(env_->Before(Op::kAllocate, path()));
    // Allocation does not change existing bytes; only the size can grow.
    auto cur = base_->Size();
    if (!cur.ok()) return cur.status();
    DTX_RETURN_IF_ERROR(env_->RecordChange(base_.get(), path(), *cur, 0));
    return base_->Allocate(offset, len);
  }
  Result<uint64_t> Size() override {
    MutexLock lock(&env_->mu_);
    DTX_RETURN_IF_ERROR(env_->Before(Op::kSize, path()));
    return base_->Size();
  }
  const std::string& path() const override { return base_->path(); }

 private:
  FaultInjectionEnv* const env_;
  const std::unique_ptr<File> base_;
};

FaultInjectionEnv::FaultInjectionEnv(Env* base, bool real_sync)
    : base_(base), real_sync_(real_sync) {}
FaultInjectionEnv::~FaultInjectionEnv() = default;

void FaultInjectionEnv::SetFaultHook(FaultHook hook) {
  MutexLock lock(&mu_);
  hook_ = std::move(hook);
}

void FaultInjectionEnv::SetSyncErrorsLoseData(bool on) {
  MutexLock lock(&mu_);
  sync_errors_lose_data_ = on;
}

bool FaultInjectionEnv::powered() const {
  MutexLock lock(&mu_);
  return powered_;
}

uint64_t FaultInjectionEnv::count(Op op) const {
  MutexLock lock(&mu_);
  auto it = counts_.find(op);
  return it == counts_.end() ? 0 : it->second;
}

Status FaultInjectionEnv::Before(Op op, const std::string& path) {
  counts_[op]++;
  if (!powered_) return Status::IOError("fault env: powered off (" + path + ")");
  if (hook_) return hook_(op, path);
  return Status::OK();
}

Status FaultInjectionEnv::RecordChange(File* f, const std::string& path, uint64_t offset,
                                       uint64_t len) {
  auto known = files_.find(path);
  if (known != files_.end() && !known->second.lost.empty()) {
    return Status::IOError("fault env: " + path +
                           " changed after a failed sync and before DropCache: not modelled");
  }
  auto size = f->Size();
  if (!size.ok()) return size.status();
  Undo u;
  u.offset = offset;
  u.old_size = *size;
  if (offset < *size && len > 0) {
    uint64_t n = std::min<uint64_t>(len, *size - offset);
    u.old_bytes.resize(n);
    size_t got = 0;
    DTX_RETURN_IF_ERROR(f->ReadAt(offset, n, u.old_bytes.data(), &got));
    u.old_bytes.resize(got);
  }
  files_[path].undo.push_back(std::move(u));
  return Status::OK();
}

void FaultInjectionEnv::SyncFailed(const std::string& path) {
  if (!sync_errors_lose_data_) return;
  auto it = files_.find(path);
  if (it == files_.end()) return;
  FileState& state = it->second;
  state.lost.insert(state.lost.end(), std::make_move_iterator(state.undo.begin()),
                    std::make_move_iterator(state.undo.end()));
  state.undo.clear();
}

Status FaultInjectionEnv::Revert(const std::string& path, const std::vector<Undo>& changes) {
  if (changes.empty()) return Status::OK();
  auto f = base_->OpenFile(path, OpenMode::kExisting);
  if (!f.ok()) {
    if (f.status().IsNotFound()) return Status::OK();  // deleted since
    return f.status();
  }
  for (auto it = changes.rbegin(); it != changes.rend(); ++it) {
    auto cur = (*f)->Size();
    if (!cur.ok()) return cur.status();
    if (*cur < it->offset + it->old_bytes.size() || *cur < it->old_size) {
      DTX_RETURN_IF_ERROR(
          (*f)->Truncate(std::max<uint64_t>(it->old_size, it->offset + it->old_bytes.size())));
    }
    if (!it->old_bytes.empty()) DTX_RETURN_IF_ERROR((*f)->WriteAt(it->offset, it->old_bytes));
    DTX_RETURN_IF_ERROR((*f)->Truncate(it->old_size));
  }
  return Status::OK();
}

Status FaultInjectionEnv::LosePower() {
  MutexLock lock(&mu_);
  powered_ = false;
  for (auto& [path, state] : files_) {
    // Newest first: the dirty changes, then the lost ones (all older).
    DTX_RETURN_IF_ERROR(Revert(path, state.undo));
    DTX_RETURN_IF_ERROR(Revert(path, state.lost));
    state.undo.clear();
    state.lost.clear();
  }
  for (auto& [dir, renames] : renamed_since_dir_sync_) {
    for (auto it = renames.rbegin(); it != renames.rend(); ++it) {
      DTX_RETURN_IF_ERROR(base_->RenameFile(it->second, it->first));
      if (files_.count(it->second)) {
        files_[it->first] = std::move(files_[it->second]);
        files_.erase(it->second);
      }
    }
  }
  renamed_since_dir_sync_.clear();
  for (auto& [dir, paths] : created_since_dir_sync_) {
    for (const std::string& p : paths) {
      Status s = base_->DeleteFile(p);
      if (!s.ok()) return s;
      files_.erase(p);
    }
  }
  created_since_dir_sync_.clear();
  return Status::OK();
}

void FaultInjectionEnv::PowerOn() {
  MutexLock lock(&mu_);
  powered_ = true;
}

Result<std::unique_ptr<File>> FaultInjectionEnv::OpenFile(const std::string& path, OpenMode mode) {
  MutexLock lock(&mu_);
  DTX_RETURN_IF_ERROR(Before(mode == OpenMode::kCreate ? Op::kCreate : Op::kOpen, path));
  if (mode == OpenMode::kCreate) {
    auto existing = base_->OpenFile(path, OpenMode::kExisting);
    if (existing.ok()) {
      // Truncating an existing file is a data change like any other.
      auto size = (*existing)->Size();
      if (!size.ok()) return size.status();
      DTX_RETURN_IF_ERROR(RecordChange(existing->get(), path, 0, *size));
    } else {
      created_since_dir_sync_[DirOf(path)].insert(path);
    }
  }
  auto f = base_->OpenFile(path, mode);
  if (!f.ok()) return f.status();
  return std::unique_ptr<File>(new TrackedFile(this, std::move(f.value())));
}

Status FaultInjectionEnv::CreateDir(const std::string& path) {
  MutexLock lock(&mu_);
  DTX_RETURN_IF_ERROR(Before(Op::kCreateDir, path));
  return base_->CreateDir(path);
}

Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  MutexLock lock(&mu_);
  DTX_RETURN_IF_ERROR(Before(Op::kRename, from));
  DTX_RETURN_IF_ERROR(base_->RenameFile(from, to));
  const std::string dir = DirOf(from);
  auto& created = created_since_dir_sync_[dir];
  if (created.erase(from)) {
    created.insert(to);  // still not durable: it goes away as a whole
  } else {
    renamed_since_dir_sync_[dir].emplace_back(from, to);
  }
  if (files_.count(from)) {
    files_[to] = std::move(files_[from]);
    files_.erase(from);
  }
  return Status::OK();
}

Status FaultInjectionEnv::DeleteFile(const std::string& path) {
  MutexLock lock(&mu_);
  DTX_RETURN_IF_ERROR(Before(Op::kDelete, path));
  DTX_RETURN_IF_ERROR(base_->DeleteFile(path));
  files_.erase(path);
  created_since_dir_sync_[DirOf(path)].erase(path);
  return Status::OK();
}

Result<std::vector<std::string>> FaultInjectionEnv::ListDir(const std::string& dir) {
  MutexLock lock(&mu_);
  DTX_RETURN_IF_ERROR(Before(Op::kListDir, dir));
  return base_->ListDir(dir);
}

Status FaultInjectionEnv::SyncDir(const std::string& dir) {
  MutexLock lock(&mu_);
  DTX_RETURN_IF_ERROR(Before(Op::kSyncDir, dir));
  if (real_sync_) DTX_RETURN_IF_ERROR(base_->SyncDir(dir));
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  created_since_dir_sync_.erase(d);
  renamed_since_dir_sync_.erase(d);
  return Status::OK();
}

Result<std::unique_ptr<FileLock>> FaultInjectionEnv::LockFile(const std::string& path) {
  MutexLock lock(&mu_);
  DTX_RETURN_IF_ERROR(Before(Op::kLock, path));
  return base_->LockFile(path);
}

}  // namespace dtx::wal
