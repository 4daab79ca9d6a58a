// The fingerprint of a transaction's content (common/types.h Fingerprint),
// computed by the coordinator from the Commit request it received, so that
// clients need not change and cannot lie about it (docs/design.md
// "Transaction identity").
//
// Canonical form: the read set sorted by key (key, version read) and the
// write set sorted by key (key, put or delete, value), each with its count,
// every length-prefixed, after a domain tag; SHA-256 (OpenSSL libcrypto) of
// that, truncated to 128 bits. So the order in which a client lists its
// reads and writes does not matter; any other difference does.
//
// Thread-safety: a pure function; safe from any thread.
#pragma once

#include <vector>

#include "common/types.h"
#include "coordinator/core.h"

namespace dtx::coordinator {

Fingerprint TxFingerprint(const std::vector<ReadItem>& reads, const std::vector<WriteItem>& writes);

}  // namespace dtx::coordinator
