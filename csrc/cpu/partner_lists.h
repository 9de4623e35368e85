// Partner lists of cosine_dedup_mask's CPU kernel (cosine_dedup_mask.cpp): for rows with many b near
// their maximum, the best partners ranked by exact cosine.
//
// A cluster of near-copies (rows equal up to float32 rounding) has cosines within the filter bound,
// and within the fast bound, of one another: every round would re-check every near partner of every
// such row in A. A row's list instead holds S = every b still in R with G[a, b] >= floor, ranked by
// exact cosine (the best kLength kept). No token re-enters R, so S holds every such b of
// every later round, and any b outside S has exact cos < floor + eps_filter (= proven_from). So the
// first partner in B (the best of S in B: entries past the kept prefix are no better) holds the
// maximum over B whenever its cosine reaches proven_from; otherwise the list proves nothing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/dedup_cosines.h"

namespace vtprune::cpu {

class PartnerLists {
 public:
  static constexpr size_t kFrom = 16;    // near candidates that make a row build its list
  static constexpr size_t kLength = 64;  // partners kept per list

  explicit PartnerLists(int64_t n) : list_of_(n, -1) {}

  // Row a's exact maximum over B (mask[b] == 0) from its list, or NaN (no list, or it proves nothing).
  // r_mask: 0 for positions still in R (entries that left R are passed over for good).
  template <typename G>
  double max_over(int32_t a, const G* mask, const G* r_mask) {
    if (list_of_[a] < 0) return std::numeric_limits<double>::quiet_NaN();
    List& list = lists_[list_of_[a]];
    for (size_t t = list.head; t < list.best.size(); ++t) {
      const int32_t b = list.best[t].second;
      if (r_mask[b] != G(0)) {
        if (t == list.head) ++list.head;
        continue;
      }
      if (mask[b] == G(0)) {
        return list.best[t].first >= list.proven_from ? list.best[t].first : std::numeric_limits<double>::quiet_NaN();
      }
    }
    return std::numeric_limits<double>::quiet_NaN();
  }

  // (Re)builds row a's list from every b in R with rows' G[a, b] >= floor_value (r_mask: 0 in R).
  template <typename Rows, typename G>
  void build(int32_t a, double floor_value, double eps_filter, const Rows& rows, const G* r_mask,
             const CandidateFeatures& f, PairCosines& cosine) {
    if (list_of_[a] < 0) {
      list_of_[a] = static_cast<int32_t>(lists_.size());
      lists_.emplace_back();
    }
    List& list = lists_[list_of_[a]];
    partners_.clear();
    rows.masked_at_least(a, r_mask, floor_value, partners_);
    pair_a_.clear();
    pair_b_.clear();
    for (const int32_t b : partners_) {
      if (b != a && f.finite[b]) {  // a non-finite b in B makes the round's maxima NaN: no runs
        pair_a_.push_back(a);
        pair_b_.push_back(b);
      }
    }
    cosine.prepare_exact(pair_a_, pair_b_);
    list.best.clear();
    for (const int32_t b : pair_b_) list.best.emplace_back(cosine.exact(a, b), b);
    const size_t kept = std::min(kLength, list.best.size());
    std::partial_sort(list.best.begin(), list.best.begin() + kept, list.best.end(), [](const auto& x, const auto& y) {
      return x.first > y.first || (x.first == y.first && x.second < y.second);
    });
    list.best.resize(kept);
    list.head = 0;
    list.proven_from = floor_value + eps_filter;
  }

 private:
  struct List {
    std::vector<std::pair<double, int32_t>> best;  // (exact cosine, position), best first
    size_t head = 0;                                // entries before head have left R
    double proven_from = 0.0;
  };

  std::vector<int32_t> list_of_;  // [n] the position's list, or -1
  std::vector<List> lists_;
  std::vector<int32_t> partners_, pair_a_, pair_b_;  // scratch of build
};

}  // namespace vtprune::cpu
