#include "participant/lock_table.h"

#include "common/check.h"

namespace dtx::participant {

namespace {

// Recycled objects kept per kind; beyond this, released objects are freed so
// a burst does not pin memory forever.
constexpr size_t kFreeListObjectsMax = 4096;

size_t RoundUpPow2(size_t n) {
  size_t p = 16;
  while (p < n) p <<= 1;
  return p;
}

struct StringViewEqual {
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return std::string_view(a) == std::string_view(b);
  }
};

}  // namespace

size_t LockTable::StringHash::operator()(std::string_view s) const {
  return static_cast<size_t>(ShardHash(s) * 0x9E3779B97F4A7C15ull >> 7);
}

LockTable::LockTable(size_t initial_buckets)
    : entry_buckets_(RoundUpPow2(initial_buckets)),
      entries_(EntrySet::bucket_traits(entry_buckets_.data(), entry_buckets_.size())),
      tx_buckets_(RoundUpPow2(initial_buckets)),
      txs_(TxSet::bucket_traits(tx_buckets_.data(), tx_buckets_.size())) {}

LockTable::~LockTable() {
  // Unlink waiters first: they belong to the caller and outlive nothing here.
  for (auto& e : entries_) {
    e.waiters.clear();
    e.holders.clear();
  }
  for (auto& t : txs_) {
    t.grants.clear_and_dispose([](Grant* g) { delete g; });
  }
  entries_.clear_and_dispose([](Entry* e) { delete e; });
  txs_.clear_and_dispose([](TxLocks* t) { delete t; });
}

LockTable::Entry* LockTable::Find(std::string_view key) const {
  auto it = entries_.find(key, StringHash(), StringViewEqual());
  return it == entries_.end() ? nullptr : const_cast<Entry*>(&*it);
}

LockTable::TxLocks* LockTable::FindTx(const TxId& tx) const {
  auto it = txs_.find(tx);
  return it == txs_.end() ? nullptr : const_cast<TxLocks*>(&*it);
}

void LockTable::MaybeGrowEntries() {
  if (entries_.size() < entry_buckets_.size()) return;
  std::vector<EntrySet::bucket_type> bigger(entry_buckets_.size() * 2);
  entries_.rehash(EntrySet::bucket_traits(bigger.data(), bigger.size()));
  entry_buckets_.swap(bigger);
}

void LockTable::MaybeGrowTxs() {
  if (txs_.size() < tx_buckets_.size()) return;
  std::vector<TxSet::bucket_type> bigger(tx_buckets_.size() * 2);
  txs_.rehash(TxSet::bucket_traits(bigger.data(), bigger.size()));
  tx_buckets_.swap(bigger);
}

LockTable::Entry* LockTable::NewEntry(std::string_view key) {
  MaybeGrowEntries();
  Entry* e;
  if (!free_entries_.empty()) {
    e = free_entries_.back().release();
    free_entries_.pop_back();
  } else {
    e = new Entry();
  }
  e->key.assign(key);
  e->exclusive = 0;
  entries_.insert(*e);
  return e;
}

LockTable::TxLocks* LockTable::NewTx(const TxId& tx) {
  MaybeGrowTxs();
  TxLocks* t;
  if (!free_txs_.empty()) {
    t = free_txs_.back().release();
    free_txs_.pop_back();
  } else {
    t = new TxLocks();
  }
  t->txid = tx;
  txs_.insert(*t);
  return t;
}

LockTable::Grant* LockTable::NewGrant() {
  if (!free_grants_.empty()) {
    Grant* g = free_grants_.back().release();
    free_grants_.pop_back();
    return g;
  }
  return new Grant();
}

std::optional<TxId> LockTable::ConflictingHolder(const TxId& tx, std::string_view key,
                                                 LockMode mode) const {
  const Entry* e = Find(key);
  if (e == nullptr) return std::nullopt;
  for (const Grant& g : e->holders) {
    if (g.owner->txid == tx) continue;
    if (mode == LockMode::kExclusive || g.mode == LockMode::kExclusive) return g.owner->txid;
  }
  return std::nullopt;
}

LockTable::Result LockTable::TryLock(const TxId& tx, std::string_view key, LockMode mode) {
  Entry* e = Find(key);
  Grant* mine = nullptr;
  if (e != nullptr) {
    for (Grant& g : e->holders) {
      if (g.owner->txid == tx) {
        mine = &g;
      } else if (mode == LockMode::kExclusive || g.mode == LockMode::kExclusive) {
        return Result::kConflict;
      }
    }
    if (mine != nullptr) {
      if (mine->mode == LockMode::kExclusive || mode == LockMode::kShared) return Result::kHeld;
      // Upgrade: the loop above proved no one else holds the key.
      mine->mode = LockMode::kExclusive;
      e->exclusive = 1;
      return Result::kGranted;
    }
  } else {
    e = NewEntry(key);
  }
  TxLocks* t = FindTx(tx);
  if (t == nullptr) t = NewTx(tx);
  Grant* g = NewGrant();
  g->entry = e;
  g->owner = t;
  g->mode = mode;
  e->holders.push_back(*g);
  t->grants.push_back(*g);
  if (mode == LockMode::kExclusive) e->exclusive = 1;
  ++grant_count_;
  return Result::kGranted;
}

void LockTable::ReleaseAll(const TxId& tx, std::vector<LockWaiter*>* woken) {
  TxLocks* t = FindTx(tx);
  if (t == nullptr) return;
  while (!t->grants.empty()) {
    Grant* g = &t->grants.front();
    t->grants.pop_front();
    Entry* e = g->entry;
    e->holders.erase(e->holders.iterator_to(*g));
    if (g->mode == LockMode::kExclusive) e->exclusive = 0;
    --grant_count_;
    if (free_grants_.size() < kFreeListObjectsMax) {
      free_grants_.emplace_back(g);
    } else {
      delete g;
    }
    if (e->exclusive == 0) {
      while (!e->waiters.empty()) {
        LockWaiter* w = &e->waiters.front();
        e->waiters.pop_front();
        if (woken != nullptr) woken->push_back(w);
      }
    }
    if (e->holders.empty()) {
      DTX_CHECK(e->waiters.empty());
      entries_.erase(entries_.iterator_to(*e));
      if (free_entries_.size() < kFreeListObjectsMax) {
        free_entries_.emplace_back(e);
      } else {
        delete e;
      }
    }
  }
  txs_.erase(txs_.iterator_to(*t));
  if (free_txs_.size() < kFreeListObjectsMax) {
    free_txs_.emplace_back(t);
  } else {
    delete t;
  }
}

std::optional<TxId> LockTable::ExclusiveHolder(std::string_view key) const {
  const Entry* e = Find(key);
  if (e == nullptr || e->exclusive == 0) return std::nullopt;
  for (const Grant& g : e->holders) {
    if (g.mode == LockMode::kExclusive) return g.owner->txid;
  }
  DTX_CHECK_MSG(false, "lock entry marked exclusive without an exclusive holder");
  return std::nullopt;
}

void LockTable::Park(std::string_view key, LockWaiter* w) {
  Entry* e = Find(key);
  DTX_CHECK_MSG(e != nullptr && e->exclusive != 0, "Park on a key that is not exclusively locked");
  DTX_CHECK(!w->is_parked());
  e->waiters.push_back(*w);
}

bool LockTable::Holds(const TxId& tx, std::string_view key, LockMode mode) const {
  const Entry* e = Find(key);
  if (e == nullptr) return false;
  for (const Grant& g : e->holders) {
    if (g.owner->txid == tx) return mode == LockMode::kShared || g.mode == LockMode::kExclusive;
  }
  return false;
}

}  // namespace dtx::participant
