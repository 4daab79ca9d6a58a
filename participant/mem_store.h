// In-memory Store for the core's tests and the simulator. Ordered maps, so
// iteration is deterministic. data() holds live keys; tombstones() deleted
// ones with their version. Thread-safety: none.
#pragma once

#include <map>
#include <string>
#include <utility>

#include "participant/core.h"

namespace dtx::participant {

class MemStore final : public Store {
 public:
  Result<Item> Get(std::string_view key) override {
    ++gets_;
    if (!fail_get_.ok()) return fail_get_;
    auto it = data_.find(std::string(key));
    if (it != data_.end()) return Item{true, it->second.second, it->second.first};
    auto t = tombstones_.find(std::string(key));
    if (t != tombstones_.end()) return Item{false, std::string(), t->second};
    return Item{};
  }

  Status Apply(const std::vector<WriteOp>& writes, Version version) override {
    if (!fail_apply_.ok()) return fail_apply_;
    for (const WriteOp& w : writes) {
      auto it = data_.find(w.key);
      if (it != data_.end() && it->second.first >= version) continue;
      auto t = tombstones_.find(w.key);
      if (t != tombstones_.end() && t->second >= version) continue;
      if (w.value.has_value()) {
        data_[w.key] = {version, *w.value};
        if (t != tombstones_.end()) tombstones_.erase(t);
      } else {
        if (it != data_.end()) data_.erase(it);
        tombstones_[w.key] = version;
      }
    }
    ++applies_;
    return Status::OK();
  }

  Status ApplyBatch(const std::vector<Commit>& commits) override {
    ++batches_;
    return Store::ApplyBatch(commits);
  }

  // version -> value per key.
  const std::map<std::string, std::pair<Version, std::string>>& data() const { return data_; }
  // deleted key -> the version of its delete.
  const std::map<std::string, Version>& tombstones() const { return tombstones_; }
  void FailApplyWith(Status s) { fail_apply_ = std::move(s); }
  void FailGetWith(Status s) { fail_get_ = std::move(s); }
  int applies() const { return applies_; }
  int batches() const { return batches_; }
  int gets() const { return gets_; }

 private:
  std::map<std::string, std::pair<Version, std::string>> data_;
  std::map<std::string, Version> tombstones_;
  Status fail_apply_;
  Status fail_get_;
  int applies_ = 0;
  int batches_ = 0;
  int gets_ = 0;
};

}  // namespace dtx::participant
