#include "node/disk_guard.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/log.h"

namespace dtx::node {

namespace {

constexpr uint64_t kMiB = 1u << 20;

std::string Mib(uint64_t bytes) { return std::to_string(bytes / kMiB) + " MiB"; }

}  // namespace

Status DiskBytesFromFlags(uint64_t free_min_mb, uint64_t ballast_mb, uint64_t* free_min_bytes,
                          uint64_t* ballast_bytes) {
  constexpr uint64_t kMbMax = uint64_t{1} << 30;
  if (free_min_mb > kMbMax || ballast_mb > kMbMax) {
    return Status::InvalidArgument("--disk-free-min-mb and --disk-ballast-mb must be at most " +
                                   std::to_string(kMbMax));
  }
  *free_min_bytes = free_min_mb << 20;
  *ballast_bytes = ballast_mb << 20;
  return Status::OK();
}

DiskGuard::DiskGuard(DiskGuardOptions options) : options_(std::move(options)) {}

std::string DiskGuard::BallastPath() const { return options_.dir + "/" + kBallastFileName; }

Result<uint64_t> DiskGuard::Measure() const {
  if (options_.free_bytes) return options_.free_bytes();
  struct statvfs st {};
  if (::statvfs(options_.dir.c_str(), &st) != 0) {
    return Status::IOError("statvfs " + options_.dir + ": " + std::strerror(errno));
  }
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

Result<std::unique_ptr<DiskGuard>> DiskGuard::Open(const std::string& dir, uint64_t free_min_bytes,
                                                   uint64_t ballast_bytes) {
  auto guard = std::make_unique<DiskGuard>(DiskGuardOptions{.dir = dir,
                                                            .free_min_bytes = free_min_bytes,
                                                            .ballast_bytes = ballast_bytes,
                                                            .free_bytes = {}});
  DTX_RETURN_IF_ERROR(guard->Start());
  return guard;
}

Status DiskGuard::Start() {
  Result<uint64_t> free = Measure();
  if (!free.ok()) return free.status();
  free_ = *free;
  // A ballast left by the previous run is ours: keep it.
  ballast_present_ = ::access(BallastPath().c_str(), F_OK) == 0;
  Check();
  return Status::OK();
}

bool DiskGuard::Check() {
  Result<uint64_t> free = Measure();
  if (!free.ok()) {
    DTX_LOG_WARN("disk guard: {}; keeping the last state ({})", free.status().ToString(),
                 low_ ? "low" : "normal");
    return false;
  }
  free_ = *free;
  const bool was_low = low_;
  const uint64_t min = options_.free_min_bytes;
  // Once low, the node stays low until the ballast fits again: the space the
  // ballast gave back is for what was promised, not for new writes.
  const uint64_t resume_at = min + options_.ballast_bytes;
  if (min > 0 && (free_ < min || (low_ && free_ < resume_at))) {
    low_ = true;
    if (ballast_present_) ReleaseBallast();
  } else {
    low_ = false;
    if (!ballast_present_ && options_.ballast_bytes > 0 && free_ >= resume_at) MakeBallast();
  }
  if (low_ != was_low) {
    if (low_) {
      DTX_LOG_ERROR("{}", Describe());
    } else {
      DTX_LOG_WARN(
          "disk space back: {} free in {} (watermark {}, plus {} of ballast); new "
          "writes accepted again",
          Mib(free_), options_.dir, Mib(min), Mib(options_.ballast_bytes));
    }
  }
  return low_ != was_low;
}

void DiskGuard::MakeBallast() {
  const std::string tmp = BallastPath() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    DTX_LOG_WARN("disk guard: cannot make the ballast file {}: {}", tmp, std::strerror(errno));
    return;
  }
  // posix_fallocate returns the error number (it does not set errno).
  int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(options_.ballast_bytes));
  if (rc == 0 && ::fsync(fd) != 0) rc = errno;
  ::close(fd);
  if (rc != 0 || ::rename(tmp.c_str(), BallastPath().c_str()) != 0) {
    if (rc == 0) rc = errno;
    ::unlink(tmp.c_str());
    DTX_LOG_WARN("disk guard: cannot make the ballast file {} ({}): {}", BallastPath(),
                 Mib(options_.ballast_bytes), std::strerror(rc));
    return;
  }
  ballast_present_ = true;
  DTX_LOG_INFO("disk guard: ballast file {} holds {} in reserve", BallastPath(),
               Mib(options_.ballast_bytes));
  Result<uint64_t> free = Measure();
  if (free.ok()) free_ = *free;
}

void DiskGuard::ReleaseBallast() {
  if (::unlink(BallastPath().c_str()) != 0 && errno != ENOENT) {
    DTX_LOG_ERROR("disk guard: cannot delete the ballast file {}: {}", BallastPath(),
                  std::strerror(errno));
    return;
  }
  ballast_present_ = false;
  DTX_LOG_WARN("disk guard: deleted the ballast file {}: {} for what this node already promised",
               BallastPath(), Mib(options_.ballast_bytes));
  Result<uint64_t> free = Measure();
  if (free.ok()) free_ = *free;
}

void DiskGuard::AddStatusCounters(std::map<std::string, int64_t>* counters) const {
  (*counters)["disk_low"] = low_ ? 1 : 0;
  (*counters)["disk_free_bytes"] = static_cast<int64_t>(free_);
  (*counters)["disk_ballast_present"] = ballast_present_ ? 1 : 0;
  (*counters)["disk_low_refusals"] = static_cast<int64_t>(refusals_);
}

DiskMetrics::DiskMetrics(prometheus::Registry& registry)
    : low_(prometheus::BuildGauge()
               .Name("dtx_disk_low")
               .Help("1 while the free space is below the watermark (--disk-free-min-mb): new "
                     "writes are refused.")
               .Register(registry)
               .Add({})),
      free_(prometheus::BuildGauge()
                .Name("dtx_disk_free_bytes")
                .Help("Free bytes in the node directory's filesystem, as last measured.")
                .Register(registry)
                .Add({})) {}

void DiskMetrics::Update(const DiskGuard& guard) {
  low_.Set(guard.low() ? 1 : 0);
  free_.Set(static_cast<double>(guard.free_bytes()));
}

std::string DiskGuard::Describe() const {
  const uint64_t min = options_.free_min_bytes;
  const uint64_t ballast = options_.ballast_bytes;
  std::string why = "disk space low: " + Mib(free_) + " free in " + options_.dir +
                    "; new writes are refused until " + Mib(min + ballast) + " are free (the " +
                    Mib(min) + " watermark, --disk-free-min-mb";
  if (ballast > 0) why += ", plus the " + Mib(ballast) + " ballast, --disk-ballast-mb";
  return why + "); reads, and transactions already prepared, go on";
}

}  // namespace dtx::node
