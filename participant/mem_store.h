// In-memory Store for the core's tests and the simulator. Ordered map, so
// Dump() is deterministic. Thread-safety: none.
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
    auto it = data_.find(std::string(key));
    if (it == data_.end()) return Item{};
    return Item{true, it->second.second, it->second.first};
  }

  Status Apply(const std::vector<WriteOp>& writes, Version version) override {
    if (!fail_apply_.ok()) return fail_apply_;
    for (const WriteOp& w : writes) {
      auto it = data_.find(w.key);
      if (it != data_.end() && it->second.first >= version) continue;
      if (w.value.has_value()) {
        data_[w.key] = {version, *w.value};
      } else if (it != data_.end()) {
        data_.erase(it);
      }
    }
    ++applies_;
    return Status::OK();
  }

  // version -> value per key.
  const std::map<std::string, std::pair<Version, std::string>>& data() const { return data_; }
  void FailApplyWith(Status s) { fail_apply_ = std::move(s); }
  int applies() const { return applies_; }
  int gets() const { return gets_; }

 private:
  std::map<std::string, std::pair<Version, std::string>> data_;
  Status fail_apply_;
  int applies_ = 0;
  int gets_ = 0;
};

}  // namespace dtx::participant
