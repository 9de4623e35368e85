// The bitonic network index arithmetic (common/bitonic.h), run serially, sorts any padded input.
#include <algorithm>
#include <random>
#include <vector>

#include "check.h"
#include "common/bitonic.h"
#include "serial_kernels.h"

// The same loop nest as the CUDA block sort, one pair at a time.
static void serial_bitonic_sort(std::vector<uint64_t>& keys, int64_t n) {
  const int64_t P = vtprune::next_pow2(n);
  keys.resize(static_cast<size_t>(P), ~0ull);
  for (int64_t k = 2; k <= P; k <<= 1) {
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      std::vector<bool> touched(static_cast<size_t>(P), false);
      for (int64_t t = 0; t < P / 2; ++t) {
        int64_t lo, hi;
        bool ascending;
        vtprune::bitonic_pair(t, j, k, &lo, &hi, &ascending);
        // Pairs of one step are disjoint: the threads of a step never race.
        CHECK(lo >= 0 && hi < P && hi == lo + j);
        CHECK(!touched[lo] && !touched[hi]);
        touched[lo] = touched[hi] = true;
        vtprune::bitonic_compare_exchange(keys[lo], keys[hi], ascending);
      }
    }
  }
}

int main() {
  CHECK_EQ(vtprune::next_pow2(0), 1);
  CHECK_EQ(vtprune::next_pow2(1), 1);
  CHECK_EQ(vtprune::next_pow2(2), 2);
  CHECK_EQ(vtprune::next_pow2(3), 4);
  CHECK_EQ(vtprune::next_pow2(577), 1024);
  CHECK_EQ(vtprune::next_pow2(4096), 4096);

  std::mt19937_64 rng(7);
  std::vector<int64_t> sizes;
  for (int64_t n = 0; n <= 70; ++n) sizes.push_back(n);
  for (int64_t n : {127, 128, 129, 255, 577, 1025, 3000}) sizes.push_back(n);
  for (int64_t n : sizes) {
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<uint64_t> keys(static_cast<size_t>(n));
      for (auto& key : keys) {
        // variant 0: distinct random keys; 1: few distinct values; 2: already descending
        key = variant == 1 ? rng() % 4 : rng();
      }
      if (variant == 2) std::sort(keys.begin(), keys.end(), [](uint64_t a, uint64_t b) { return a > b; });
      std::vector<uint64_t> expected = keys;
      std::sort(expected.begin(), expected.end());
      serial_bitonic_sort(keys, n);
      keys.resize(static_cast<size_t>(n));
      CHECK(keys == expected);
    }
  }
  // Pairs: heavy key ties (and the all-ones key a NaN gets) must come out ordered by index.
  for (int64_t n : sizes) {
    std::vector<uint64_t> keys(static_cast<size_t>(n));
    std::vector<uint32_t> indices(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      keys[i] = rng() % 3 == 0 ? ~0ull : rng() % 5;
      indices[i] = static_cast<uint32_t>(i);
    }
    std::shuffle(indices.begin(), indices.end(), rng);
    std::vector<std::pair<uint64_t, uint32_t>> expected;
    for (int64_t i = 0; i < n; ++i) expected.emplace_back(keys[i], indices[i]);
    std::sort(expected.begin(), expected.end());
    keys.resize(static_cast<size_t>(vtprune::next_pow2(n)));  // the kernel's padded buffers
    indices.resize(keys.size());
    vtprune_sim::bitonic_sort_pairs(keys, indices, n);  // the de-dup kernels' (key, index) variant
    for (int64_t i = 0; i < n; ++i) {
      CHECK_EQ(keys[i], expected[i].first);
      CHECK_EQ(indices[i], expected[i].second);
    }
  }
  return vtprune_test::check_exit_code("test_bitonic");
}
