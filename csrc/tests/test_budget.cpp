// allocate_budget_row (common/budget.h): hand-worked allocations, exact ties, huge capacities, the
// invariants of docs/design.md 2.5, and the float64 routine agreeing with the exact one wherever it
// decides; wide_divide (common/wide_uint.h) against 128-bit division.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "check.h"
#include "common/budget.h"

using V = std::vector<int64_t>;
constexpr int kLimbs = vtprune::BudgetLimbs<double>::value;

enum class Routine { kDefault, kExact, kFloat64 };

// One row through a routine of common/budget.h; the float64 routine's answer is empty when it
// does not decide.
static V run(Routine routine, const std::vector<double>& w, const V& cap, int64_t total) {
  const int64_t S = static_cast<int64_t>(w.size());
  std::vector<uint8_t> state(w.size());
  std::vector<uint64_t> key(w.size());
  V out(w.size(), -1);
  const double* wp = w.data();
  if (routine == Routine::kDefault) {
    vtprune::allocate_budget_row<kLimbs>(wp, 1, cap.data(), 1, total, S, state.data(), key.data(), out.data(), 1);
  } else if (routine == Routine::kExact) {
    vtprune::allocate_budget_row_exact<kLimbs>(wp, 1, cap.data(), 1, total, S, state.data(), key.data(), out.data(), 1);
  } else if (!vtprune::allocate_budget_row_float64(wp, 1, cap.data(), 1, total, S, state.data(), key.data(),
                                                   out.data(), 1)) {
    return {};
  }
  return out;
}

static V allocate(const std::vector<double>& w, const V& cap, int64_t total) { return run(Routine::kDefault, w, cap, total); }
static V allocate_exact(const std::vector<double>& w, const V& cap, int64_t total) { return run(Routine::kExact, w, cap, total); }
static V allocate_float64(const std::vector<double>& w, const V& cap, int64_t total) {
  return run(Routine::kFloat64, w, cap, total);
}

static void check_wide_divide() {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 20000; ++trial) {
    const int n = 5;
    uint32_t num[n] = {}, den[n] = {}, scratch[n];
    const uint64_t d = (rng() >> (rng() % 63)) | 1u;
    const uint64_t q_max = rng() >> 1;
    const uint64_t q = q_max == 0 ? 0 : rng() % q_max;
    vtprune::wide_set_product(den, n, d, 1u, 0);
    vtprune::wide_set_product(num, n, d, q, 0);             // num = d * q + r, r < d
    vtprune::wide_add_shifted(num, n, rng() % d, 0);
    const uint64_t got = vtprune::wide_divide(num, den, n, q_max, scratch);
    CHECK_EQ(got, q);
    CHECK(vtprune::wide_compare(num, den, n) < 0);
  }
}

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
  // Exact ties of the fractional parts: 5 * [8, 5, 2] / 15 = 2 2/3, 1 2/3, 2/3: every fraction 2/3, so
  // the two leftover units go to the lowest indices (float64 rounding would say [2, 2, 1]).
  CHECK(allocate({8, 5, 2}, {100, 3, 3}, 5) == (V{3, 2, 0}));
  CHECK(allocate_float64({8, 5, 2}, {100, 3, 3}, 5).empty());  // the float64 routine leaves it to the exact one
  CHECK(allocate({0.1, 0.2, 0.3}, {10, 10, 10}, 6) == (V{1, 2, 3}));  // 6 * 0.1 / 0.6 is exactly 1
  // Capacities near 2^62: their int64 sum overflows, the allocation does not.
  const int64_t big = int64_t{1} << 62;
  CHECK(allocate({1e-300, 1e300, 1}, {big, big, 5}, big + 3) == (V{0, big, 3}));
  CHECK(allocate({1, 1}, {big, big}, big) == (V{big / 2, big / 2}));
  CHECK(allocate({1, 2}, {INT64_MAX, INT64_MAX}, INT64_MAX) == (V{INT64_MAX / 3, INT64_MAX / 3 * 2 + 1}));
  // Weights spanning the whole float64 range (wide integers of ~2200 bits).
  CHECK(allocate({4.9406564584124654e-324, 1.7976931348623157e308}, {10, 10}, 10) == (V{0, 10}));

  // Random rows: invariants, and the float64 routine (when it decides) equal to the exact one.
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> weight(0.0, 1.0);
  int decided = 0, trials = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const int S = 1 + static_cast<int>(rng() % 14);
    std::vector<double> w(S);
    V cap(S);
    int64_t cap_sum = 0;
    const bool ties = trial % 4 == 0;  // weights from a few levels: many equal shares and fractions
    for (int i = 0; i < S; ++i) {
      w[i] = rng() % 5 == 0 ? 0.0 : (ties ? static_cast<double>(1 + rng() % 3) : weight(rng));
      cap[i] = static_cast<int64_t>(rng() % 300);
      cap_sum += cap[i];
    }
    const int64_t total = cap_sum == 0 ? 0 : static_cast<int64_t>(rng() % (cap_sum + 1));
    const V out = allocate(w, cap, total);
    CHECK(out == allocate_exact(w, cap, total));
    const V fast = allocate_float64(w, cap, total);
    ++trials;
    if (!fast.empty()) {
      ++decided;
      CHECK(fast == out);
    }
    int64_t sum = 0;
    for (int i = 0; i < S; ++i) {
      CHECK(out[i] >= 0 && out[i] <= cap[i]);
      sum += out[i];
    }
    CHECK_EQ(sum, total);
  }
  CHECK(decided > trials / 2);  // the float64 routine decides most rows
  // Invalid input (total above the capacities) still terminates and stays in bounds.
  const V over = allocate({1, 1}, {2, 3}, 100);
  CHECK(over[0] <= 2 && over[1] <= 3);
  check_wide_divide();
  return vtprune_test::check_exit_code("test_budget");
}
