#include "common/log.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace dtx::log {

Status Init(const Options& options) {
  auto level = spdlog::level::from_str(options.level);
  if (level == spdlog::level::off && options.level != "off") {
    return Status::InvalidArgument("unknown log level '" + options.level +
                                   "' (trace, debug, info, warn, error, critical, off)");
  }
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (options.file.empty()) {
      logger = spdlog::stderr_color_mt(options.node);
    } else {
      logger = spdlog::rotating_logger_mt(options.node, options.file, options.file_bytes_max,
                                          options.files_max);
    }
  } catch (const spdlog::spdlog_ex& e) {
    return Status::IOError(std::string("log init: ") + e.what());
  }
  // time level node message
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l node=%n %v", spdlog::pattern_time_type::utc);
  logger->set_level(level);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  spdlog::flush_every(std::chrono::seconds(1));
  return Status::OK();
}

void Flush() { spdlog::default_logger()->flush(); }

}  // namespace dtx::log
