// Structured logging over spdlog: one line per event, with time, node and
// level; put "txid=<hex>" and "phase=<name>" fields in the message where there
// is one. Init once per process; before Init, logs go to stderr.
//
// Thread-safety: all functions and macros are thread-safe.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "common/status.h"

namespace dtx::log {

struct Options {
  std::string node = "dtx";  // node name printed on every line
  std::string file;          // empty: stderr; else a size-rotated file
  size_t file_bytes_max = 64u << 20;
  size_t files_max = 3;
  std::string level = "info";  // trace, debug, info, warn, error, critical, off
};

// Sets up the process logger. InvalidArgument for an unknown level.
Status Init(const Options& options);
// Flushes buffered lines (call before a controlled exit).
void Flush();

}  // namespace dtx::log

#define DTX_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define DTX_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define DTX_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define DTX_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
