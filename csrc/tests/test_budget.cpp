// allocate_budget_row (common/budget.h): hand-worked allocations and the invariants of docs/design.md 2.5.
#include <cmath>
#include <random>
#include <vector>

#include "check.h"
#include "common/budget.h"

static std::vector<int64_t> allocate(const std::vector<double>& w, const std::vector<int64_t>& cap, int64_t total) {
  const int64_t S = static_cast<int64_t>(w.size());
  std::vector<double> share(w.size());
  std::vector<char> fixed_storage(w.size());
  bool* fixed = reinterpret_cast<bool*>(fixed_storage.data());
  std::vector<int64_t> out(w.size(), -1);
  vtprune::allocate_budget_row(w.data(), 1, cap.data(), 1, total, S, share.data(), fixed, out.data(), 1);
  return out;
}

using V = std::vector<int64_t>;

int main() {
  // Equal shares 10/3: floors 3,3,3; the leftover unit goes to the lowest index on a tie.
  CHECK(allocate({1, 1, 1}, {10, 10, 10}, 10) == (V{4, 3, 3}));
  // Water-filling: share 7 >= cap 3 -> fixed at 3; 7 re-shared 2:1 -> 4.67, 2.33 -> 4, 2 + 1 to the larger fraction.
  CHECK(allocate({0.7, 0.2, 0.1}, {3, 10, 10}, 10) == (V{3, 5, 2}));
  // All weights zero: equal shares 5/3 >= cap 1 -> fixed; the other two get 2 each.
  CHECK(allocate({0, 0, 0}, {1, 5, 5}, 5) == (V{1, 2, 2}));
  // A share equal to its capacity is fixed ("reaches").
  CHECK(allocate({1, 1}, {2, 9}, 4) == (V{2, 2}));
  // Two regions reach their capacities in the same pass: 5 >= 1 and 3 >= 3; the rest re-shares 6.
  CHECK(allocate({0.5, 0.3, 0.2}, {1, 3, 100}, 10) == (V{1, 3, 6}));
  // Cascading: shares 5, 3, 2 fix region 0 (cap 1); re-sharing 9 gives region 1 5.4 >= 4, fixed in
  // the next pass; region 2 gets the remaining 5.
  CHECK(allocate({0.5, 0.3, 0.2}, {1, 4, 100}, 10) == (V{1, 4, 5}));
  // Weights need not sum to one; zero-weight regions get nothing while others have weight.
  CHECK(allocate({2, 0, 6}, {10, 10, 10}, 8) == (V{2, 0, 6}));
  // total 0 and total == sum(capacity).
  CHECK(allocate({1, 2, 3}, {4, 4, 4}, 0) == (V{0, 0, 0}));
  CHECK(allocate({1, 2, 3}, {4, 4, 4}, 12) == (V{4, 4, 4}));
  // One region.
  CHECK(allocate({0.3}, {7}, 5) == (V{5}));

  // Invariants on random rows: sums to total, within capacity, no count below its floor share.
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> weight(0.0, 1.0);
  for (int trial = 0; trial < 2000; ++trial) {
    const int S = 1 + static_cast<int>(rng() % 14);
    std::vector<double> w(S);
    std::vector<int64_t> cap(S);
    int64_t cap_sum = 0;
    for (int i = 0; i < S; ++i) {
      w[i] = rng() % 5 == 0 ? 0.0 : weight(rng);
      cap[i] = static_cast<int64_t>(rng() % 300);
      cap_sum += cap[i];
    }
    const int64_t total = cap_sum == 0 ? 0 : static_cast<int64_t>(rng() % (cap_sum + 1));
    const V out = allocate(w, cap, total);
    int64_t sum = 0;
    for (int i = 0; i < S; ++i) {
      CHECK(out[i] >= 0 && out[i] <= cap[i]);
      sum += out[i];
    }
    CHECK_EQ(sum, total);
  }
  // Invalid input (total above the capacities) still terminates and stays in bounds.
  const V over = allocate({1, 1}, {2, 3}, 100);
  CHECK(over[0] <= 2 && over[1] <= 3);
  return vtprune_test::check_exit_code("test_budget");
}
