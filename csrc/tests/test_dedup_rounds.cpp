// Round bookkeeping of cosine_dedup_mask (common/dedup.h): hand-worked round counts, and a run of
// every round through the helpers against the contract's list slicing (docs/design.md 2.4).
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "common/dedup.h"
#include "common/ranking.h"

using namespace vtprune;

// Sizes of R after each round, by the helpers.
static std::vector<int64_t> survivor_counts(int64_t n, int64_t n_keep, int64_t step) {
  std::vector<int64_t> sizes;
  DedupRound round;
  while (dedup_next_round(n, n_keep, step, &round)) {
    n = dedup_survivors(round);
    sizes.push_back(n);
  }
  return sizes;
}

// The contract literally: vectors, slices, a stable sort of A by m descending with NaN last.
static std::vector<int> contract_rounds(std::vector<int> R, const std::vector<std::vector<float>>& G, int64_t n_keep,
                                        int64_t step) {
  while (true) {
    const int64_t r = std::min<int64_t>(step, static_cast<int64_t>(R.size()) - n_keep);
    if (r <= 0) break;
    std::vector<int> A, B;
    for (size_t i = 0; i < R.size(); ++i) (i % 2 == 0 ? A : B).push_back(R[i]);
    std::vector<float> m(A.size(), -std::numeric_limits<float>::infinity());
    for (size_t i = 0; i < A.size(); ++i)
      for (int b : B) m[i] = (std::isnan(m[i]) || std::isnan(G[A[i]][b])) ? NAN : std::max(m[i], G[A[i]][b]);
    std::vector<size_t> order(A.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      if (std::isnan(m[x]) != std::isnan(m[y])) return std::isnan(m[y]);
      return !std::isnan(m[x]) && m[x] > m[y];
    });
    std::vector<int> next;
    const size_t drop = static_cast<size_t>(std::min<int64_t>(r, static_cast<int64_t>(A.size())));
    for (size_t q = drop; q < order.size(); ++q) next.push_back(A[order[q]]);
    next.insert(next.end(), B.begin(), B.end());
    R = next;
  }
  return R;
}

// The same rounds through the helpers, as the kernels do them: rank A, place by position.
static std::vector<int> helper_rounds(std::vector<int> R, const std::vector<std::vector<float>>& G, int64_t n_keep,
                                      int64_t step) {
  DedupRound round;
  while (dedup_next_round(static_cast<int64_t>(R.size()), n_keep, step, &round)) {
    std::vector<float> m(static_cast<size_t>(round.n_a), -std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < round.n_a; ++i)
      for (int64_t j = 0; j < round.n_b; ++j) m[i] = nan_max(m[i], G[R[2 * i]][R[2 * j + 1]]);
    std::vector<int64_t> rank_order(static_cast<size_t>(round.n_a));
    for (int64_t i = 0; i < round.n_a; ++i) rank_order[i] = i;
    std::sort(rank_order.begin(), rank_order.end(),
              [&](int64_t x, int64_t y) { return ranks_before(m[x], x, m[y], y); });
    std::vector<int> next(static_cast<size_t>(dedup_survivors(round)), -1);
    for (int64_t q = 0; q < round.n_a; ++q) {
      const int64_t pos = dedup_position_of_a(round, q);
      if (pos >= 0) next[pos] = R[2 * rank_order[q]];
    }
    for (int64_t j = 0; j < round.n_b; ++j) next[dedup_position_of_b(round, j)] = R[2 * j + 1];
    CHECK(std::find(next.begin(), next.end(), -1) == next.end());  // every slot filled once
    R = next;
  }
  return R;
}

int main() {
  // Hand-worked: n=10, keep 3, step 8: r=7, |A|=5 -> drop 5 -> 5; r=2, |A|=3 -> drop 2 -> 3; r=0.
  CHECK(survivor_counts(10, 3, 8) == (std::vector<int64_t>{5, 3}));
  // n=20, keep 4, step 8: 20 -> 12 (drop 8) -> 6 (r=8, |A|=6: drop 6) -> 4 (r=2) -> stop.
  CHECK(survivor_counts(20, 4, 8) == (std::vector<int64_t>{12, 6, 4}));
  // keep 0 keeps nothing: 5 -> 2 -> 1 -> 0.
  CHECK(survivor_counts(5, 0, 8) == (std::vector<int64_t>{2, 1, 0}));
  // keep >= n: no round.
  CHECK(survivor_counts(7, 7, 8).empty());
  CHECK(survivor_counts(7, 100, 8).empty());
  // step 1 drops one per round.
  CHECK(survivor_counts(4, 1, 1) == (std::vector<int64_t>{3, 2, 1}));
  // Negative n_keep (invalid) acts as 0 so the rounds end.
  CHECK(survivor_counts(3, -5, 8) == survivor_counts(3, 0, 8));

  DedupRound round;
  CHECK(dedup_next_round(9, 2, 3, &round));
  CHECK_EQ(round.n_a, 5);
  CHECK_EQ(round.n_b, 4);
  CHECK_EQ(round.drop, 3);
  CHECK_EQ(dedup_position_of_a(round, 2), -1);
  CHECK_EQ(dedup_position_of_a(round, 3), 0);
  CHECK_EQ(dedup_position_of_b(round, 0), 2);
  CHECK_EQ(dedup_survivors(round), 6);

  // nan_max: NaN anywhere wins, otherwise max.
  CHECK(std::isnan(nan_max(NAN, 1.0f)));
  CHECK(std::isnan(nan_max(1.0f, NAN)));
  CHECK_EQ(nan_max(-std::numeric_limits<float>::infinity(), -2.0f), -2.0f);
  CHECK_EQ(nan_max(0.25f, -0.5f), 0.25f);
  CHECK(std::isnan(nan_max(2.0, std::nan(""))));
  CHECK_EQ(nan_max(-1.0, 1.0 + 1e-15), 1.0 + 1e-15);

  // Hand-worked full run: tokens 0..5 in R order, keep 2, step 8. Round 1: A = {0,2,4}, B = {1,3,5};
  // m(0)=0.9, m(2)=0.1, m(4)=0.5 -> ranking 0,4,2; r = min(8, 4) = 4 >= |A| -> all of A drop -> R = 1,3,5.
  // Round 2: r = 1, A = {1,5}, B = {3}: m(1)=G[1][3]=0.2, m(5)=G[5][3]=0.7 -> 5 drops -> R = 1,3.
  std::vector<std::vector<float>> G(6, std::vector<float>(6, 0.0f));
  G[0][1] = 0.9f, G[2][3] = 0.1f, G[4][5] = 0.5f, G[1][3] = 0.2f, G[5][3] = 0.7f;
  CHECK(helper_rounds({0, 1, 2, 3, 4, 5}, G, 2, 8) == (std::vector<int>{1, 3}));
  CHECK(contract_rounds({0, 1, 2, 3, 4, 5}, G, 2, 8) == (std::vector<int>{1, 3}));

  // Random Gram matrices with ties and NaN: the helpers reproduce the contract's slicing.
  std::mt19937 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = static_cast<int>(rng() % 60);
    std::vector<std::vector<float>> g(static_cast<size_t>(n), std::vector<float>(static_cast<size_t>(n)));
    for (auto& row : g)
      for (float& v : row) {
        const unsigned pick = rng() % 20;
        v = pick == 0 ? NAN : (trial % 2 ? static_cast<float>(rng() % 4) / 4.0f : static_cast<float>(rng()) / 4e9f);
      }
    std::vector<int> R(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) R[i] = i;
    std::shuffle(R.begin(), R.end(), rng);
    const int64_t keep = static_cast<int64_t>(rng() % (n + 2));
    const int64_t step = 1 + static_cast<int64_t>(rng() % 9);
    CHECK(helper_rounds(R, g, keep, step) == contract_rounds(R, g, keep, step));
  }
  // m(a) from a sorted row (the CUDA path): NaN stored as the +inf marker, the row sorted
  // descending with equal values in any order; the first column in the set gives the NaN-propagating
  // max over the set, -inf for an empty set.
  CHECK(std::isnan(dedup_gram_entry(std::numeric_limits<double>::infinity())));
  CHECK_EQ(dedup_gram_entry(-std::numeric_limits<double>::infinity()), -std::numeric_limits<double>::infinity());
  CHECK_EQ(dedup_gram_entry(0.25), 0.25);
  for (int trial = 0; trial < 500; ++trial) {
    const int n_cols = 1 + static_cast<int>(rng() % 70);
    std::vector<double> row(static_cast<size_t>(n_cols));
    for (double& v : row) {
      const unsigned pick = rng() % 12;
      v = pick == 0 ? std::nan("") : pick == 1 ? -std::nan("") : static_cast<double>(rng() % 5) / 4.0 - 0.5;
      if (pick == 2) v = -0.0;
    }
    std::vector<uint32_t> bits(static_cast<size_t>((n_cols + 31) / 32), 0u);
    std::vector<int> members;
    for (int c = 0; c < n_cols; ++c) {
      if (rng() % (1 + trial % 6) == 0) {
        bits[c >> 5] |= 1u << (c & 31);
        members.push_back(c);
      }
    }
    double expected = -std::numeric_limits<double>::infinity();
    for (int c : members) expected = nan_max(expected, row[c]);
    // The binding's layout: NaN -> +inf, then descending with ties in a random order.
    std::vector<int32_t> columns(static_cast<size_t>(n_cols));
    for (int c = 0; c < n_cols; ++c) columns[c] = c;
    std::shuffle(columns.begin(), columns.end(), rng);
    const auto stored = [&](int32_t c) { return row[c] != row[c] ? std::numeric_limits<double>::infinity() : row[c]; };
    std::stable_sort(columns.begin(), columns.end(), [&](int32_t a, int32_t b) { return stored(a) > stored(b); });
    std::vector<double> values(static_cast<size_t>(n_cols));
    for (int j = 0; j < n_cols; ++j) values[j] = stored(columns[j]);
    for (int c = 0; c < n_cols; ++c) CHECK_EQ(dedup_in_set(bits.data(), c), (bits[c >> 5] >> (c & 31)) & 1u);
    const double got = dedup_max_over_set_sorted(values.data(), columns.data(), n_cols, bits.data());
    CHECK((std::isnan(got) && std::isnan(expected)) || got == expected);
  }
  return vtprune_test::check_exit_code("test_dedup_rounds");
}
