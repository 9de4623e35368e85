// The radix selection bookkeeping (common/radix_select.h), driven by a serial histogram exactly as
// the CUDA block does it, selects the same k tokens as a sort under the tie rule (common/ranking.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "check.h"
#include "common/radix_select.h"
#include "common/ranking.h"
#include "common/sort_keys.h"
#include "serial_kernels.h"

using namespace vtprune;

// Tokens `members` (indices into scores) of a row of n_indices tokens; returns the selected mask.
static std::vector<bool> radix_select(const std::vector<float>& scores, const std::vector<int>& members, int64_t k,
                                      int* passes) {
  const int64_t n_indices = static_cast<int64_t>(scores.size());
  std::vector<uint64_t> keys;
  for (int i : members) keys.push_back(rank_key(scores[i], static_cast<uint32_t>(i)));
  bool pivots_ok = true;
  const RadixSelectState state = vtprune_sim::radix_select(keys, k, n_indices, &pivots_ok, passes);
  CHECK(pivots_ok);  // every pass found exactly one pivot bin, and the selection finished
  std::vector<bool> mask(scores.size(), false);
  for (uint64_t key : keys)
    if (radix_select_selected(state, key)) mask[rank_key_index(key)] = true;
  return mask;
}

// The plain definition: sort the members by the comparator, take the first k.
static std::vector<bool> sort_select(const std::vector<float>& scores, std::vector<int> members, int64_t k) {
  std::sort(members.begin(), members.end(), [&](int a, int b) { return ranks_before(scores[a], a, scores[b], b); });
  std::vector<bool> mask(scores.size(), false);
  for (int64_t i = 0; i < k && i < static_cast<int64_t>(members.size()); ++i) mask[members[i]] = true;
  return mask;
}

static float draw(std::mt19937& rng, int style) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  switch (style) {
    case 0:
      return uniform(rng);  // distinct values
    case 1:
      return static_cast<float>(rng() % 3);  // heavy ties
    case 2: {                                // specials mixed in
      const float inf = std::numeric_limits<float>::infinity();
      const float choices[] = {std::nanf(""), -inf, inf, 0.0f, -0.0f, 1.0f, uniform(rng)};
      return choices[rng() % 7];
    }
    default:
      return 1.0f / 3.0f;  // all equal
  }
}

int main() {
  // Pass schedule: 4 value bytes, then only the index bytes that can be non-zero.
  CHECK_EQ(radix_select_next_shift(-1, 100), 56);
  CHECK_EQ(radix_select_next_shift(56, 100), 48);
  CHECK_EQ(radix_select_next_shift(40, 100), 32);
  CHECK_EQ(radix_select_next_shift(32, 100), 0);      // indices < 100: one byte
  CHECK_EQ(radix_select_next_shift(0, 100), -1);
  CHECK_EQ(radix_select_next_shift(32, 257), 8);      // index 256 needs a second byte
  CHECK_EQ(radix_select_next_shift(8, 257), 0);
  CHECK_EQ(radix_select_next_shift(32, 1), -1);       // a single index: no index pass
  CHECK_EQ(radix_select_next_shift(32, 1 << 24), 16);
  CHECK_EQ(radix_select_next_shift(32, (1 << 24) + 1), 24);

  // k outside [0, n] is clamped (memory safety of the kernels).
  CHECK_EQ(radix_select_start(10, -3).k_left, 0);
  CHECK_EQ(radix_select_start(10, 11).k_left, 10);
  CHECK(radix_select_done(radix_select_start(10, 0)));
  CHECK(radix_select_done(radix_select_start(10, 10)));
  CHECK(!radix_select_done(radix_select_start(10, 5)));

  std::mt19937 rng(42);
  for (int trial = 0; trial < 400; ++trial) {
    const int n_tokens = 1 + static_cast<int>(rng() % (trial < 300 ? 70 : 3000));
    const int style = trial % 4;
    std::vector<float> scores(static_cast<size_t>(n_tokens));
    for (float& v : scores) v = draw(rng, style);
    // A region: a random subset of the row (members in shuffled order, as the CUDA scatter leaves them).
    std::vector<int> members;
    for (int i = 0; i < n_tokens; ++i)
      if (rng() % 3 != 0) members.push_back(i);
    std::shuffle(members.begin(), members.end(), rng);
    const int64_t n = static_cast<int64_t>(members.size());
    for (int64_t k : {int64_t{0}, int64_t{1}, n / 2, n - 1, n, static_cast<int64_t>(rng() % (n + 1))}) {
      if (k < 0) continue;
      int passes = 0;
      CHECK(radix_select(scores, members, k, &passes) == sort_select(scores, members, k));
      CHECK(passes <= 4 + 4);
    }
  }
  return vtprune_test::check_exit_code("test_radix_select");
}
