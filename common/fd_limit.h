// The process's open-file limit and the connections it affords.
//
// A node's sockets, WAL segments, LevelDB tables, checkpoint files and peer
// channels share one RLIMIT_NOFILE. The soft limit is often 1024 while the
// hard limit is far higher: a node raises the soft limit to the hard one at
// start (RaiseOpenFileLimit), then caps the connections each listener accepts
// so that a reserve stays for its own files (ConnectionsPerListener). A flood
// of connections is then refused at accept (RpcServer's connections_max), and
// never turns into EMFILE where a WAL segment or a checkpoint is opened, which
// would stop the node.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dtx {

// Kept for the node's own files: LevelDB's table cache (1000 files by
// default), WAL segments, the checkpoint, peer channels, the metrics server,
// logs.
inline constexpr uint64_t kFdReserve = 1100;
// Bounds of the per-listener cap: at least this many even when the limit is
// low (a warning says so), at most this many however high it is.
inline constexpr size_t kConnectionsPerListenerMin = 64;
inline constexpr size_t kConnectionsPerListenerMax = 65536;

// Raises the soft RLIMIT_NOFILE to the hard limit (at most 1 << 20); returns
// the soft limit in force afterwards (unchanged when raising failed).
uint64_t RaiseOpenFileLimit();

// (fd_limit - kFdReserve) / listeners, within the bounds above.
size_t ConnectionsPerListener(uint64_t fd_limit, size_t listeners);

}  // namespace dtx
