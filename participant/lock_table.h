// Lock table of a participant: shared and exclusive locks per key, held per
// transaction, try-lock only (a conflict fails at once: no lock waits, so no
// deadlocks), plus read waiters parked on exclusively locked keys.
//
// Built on Boost.Intrusive: a lock entry (one per locked key) sits in a hash
// table; each grant sits on two lists at once (its key's holders and its
// transaction's grants); read waiters sit on their key's waiter list. Entries,
// grants and per-transaction records are recycled through free lists, so once
// the table is warm, locking and releasing allocate nothing (a key longer than
// a recycled entry's string capacity may still allocate).
//
// Ownership: the table owns entries, grants and per-transaction records.
// LockWaiter objects are owned by the caller; a waiter unlinks itself when
// destroyed (auto_unlink), so a caller may free a waiter at any time (e.g. on
// a timeout). Waiters handed back by ReleaseAll are already unlinked.
//
// Determinism: no iteration order depends on hashing. ReleaseAll visits the
// transaction's grants in the order they were taken and returns each key's
// waiters in arrival order.
//
// Thread-safety: none; one thread (the participant core's) uses it.
#pragma once

#include <boost/intrusive/list.hpp>
#include <boost/intrusive/unordered_set.hpp>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/types.h"

namespace dtx::participant {

enum class LockMode : uint8_t { kShared, kExclusive };

// A parked read, owned by the caller. Derive from it; the table links it on
// the waiter list of an exclusively locked key.
class LockWaiter {
 public:
  LockWaiter() = default;
  LockWaiter(const LockWaiter&) = delete;
  LockWaiter& operator=(const LockWaiter&) = delete;
  virtual ~LockWaiter() = default;
  bool is_parked() const { return hook_.is_linked(); }

 private:
  friend class LockTable;
  boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>
      hook_;
};

class LockTable {
 public:
  enum class Result : uint8_t {
    kGranted,   // newly granted, or upgraded shared -> exclusive
    kHeld,      // the transaction already held it in this (or a stronger) mode
    kConflict,  // another transaction holds it incompatibly; nothing changed
  };

  // `initial_buckets` is rounded up to a power of two; the table doubles its
  // bucket array when the number of locked keys exceeds it.
  explicit LockTable(size_t initial_buckets = 1024);
  ~LockTable();
  LockTable(const LockTable&) = delete;
  LockTable& operator=(const LockTable&) = delete;

  // Takes `mode` on `key` for `tx`, or fails at once. Shared is compatible
  // with shared; exclusive with nothing held by another transaction. A
  // transaction holding shared alone may upgrade to exclusive.
  Result TryLock(const TxId& tx, std::string_view key, LockMode mode);

  // Releases every lock of `tx` (no-op for a transaction holding none).
  // Waiters of keys no longer exclusively locked are unlinked and appended
  // to `*woken` (may be null: then they are just unlinked).
  void ReleaseAll(const TxId& tx, std::vector<LockWaiter*>* woken);

  // The transaction holding `key` exclusively, if any.
  std::optional<TxId> ExclusiveHolder(std::string_view key) const;

  // If some transaction holds `key` incompatibly with `mode` for `tx`, that
  // transaction (the first such holder); else nothing.
  std::optional<TxId> ConflictingHolder(const TxId& tx, std::string_view key, LockMode mode) const;

  // Parks `w` on `key`, which must be exclusively locked (checked).
  void Park(std::string_view key, LockWaiter* w);

  size_t key_count() const { return entries_.size(); }  // keys with a lock
  size_t grant_count() const { return grant_count_; }   // (key, tx) grants
  size_t tx_count() const { return txs_.size(); }       // transactions holding locks
  bool Holds(const TxId& tx, std::string_view key, LockMode mode) const;

 private:
  struct Entry;
  struct TxLocks;
  struct Grant;

  using BaseHook = boost::intrusive::unordered_set_base_hook<>;
  using GrantKeyHook = boost::intrusive::list_member_hook<>;
  using GrantTxHook = boost::intrusive::list_member_hook<>;

  struct Grant {
    GrantKeyHook key_hook;
    GrantTxHook tx_hook;
    Entry* entry = nullptr;
    TxLocks* owner = nullptr;
    LockMode mode = LockMode::kShared;
  };
  using KeyGrants =
      boost::intrusive::list<Grant,
                             boost::intrusive::member_hook<Grant, GrantKeyHook, &Grant::key_hook>>;
  using TxGrants =
      boost::intrusive::list<Grant,
                             boost::intrusive::member_hook<Grant, GrantTxHook, &Grant::tx_hook>>;
  using Waiters = boost::intrusive::list<
      LockWaiter,
      boost::intrusive::member_hook<LockWaiter, decltype(LockWaiter::hook_), &LockWaiter::hook_>,
      boost::intrusive::constant_time_size<false>>;

  struct Entry : public BaseHook {
    std::string key;
    KeyGrants holders;
    Waiters waiters;
    int exclusive = 0;  // 1 when one holder holds it exclusively
  };
  struct TxLocks : public BaseHook {
    TxId txid;
    TxGrants grants;
  };

  struct EntryKey {
    const std::string& operator()(const Entry& e) const { return e.key; }
    using type = std::string;
  };
  struct TxKey {
    const TxId& operator()(const TxLocks& t) const { return t.txid; }
    using type = TxId;
  };
  struct StringHash {
    size_t operator()(std::string_view s) const;
  };

  using EntrySet = boost::intrusive::unordered_set<Entry, boost::intrusive::key_of_value<EntryKey>,
                                                   boost::intrusive::hash<StringHash>,
                                                   boost::intrusive::power_2_buckets<true>>;
  using TxSet = boost::intrusive::unordered_set<TxLocks, boost::intrusive::key_of_value<TxKey>,
                                                boost::intrusive::hash<TxIdHash>,
                                                boost::intrusive::power_2_buckets<true>>;

  Entry* Find(std::string_view key) const;
  TxLocks* FindTx(const TxId& tx) const;
  Entry* NewEntry(std::string_view key);
  TxLocks* NewTx(const TxId& tx);
  Grant* NewGrant();
  void MaybeGrowEntries();
  void MaybeGrowTxs();

  std::vector<EntrySet::bucket_type> entry_buckets_;
  EntrySet entries_;
  std::vector<TxSet::bucket_type> tx_buckets_;
  TxSet txs_;
  size_t grant_count_ = 0;

  // Free lists: recycled objects, owned here.
  std::vector<std::unique_ptr<Entry>> free_entries_;
  std::vector<std::unique_ptr<TxLocks>> free_txs_;
  std::vector<std::unique_ptr<Grant>> free_grants_;
};

}  // namespace dtx::participant
