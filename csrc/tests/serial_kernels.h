// Serial versions of the block-level building blocks of the CUDA kernels, for the host simulation
// (sim_selection.cpp): the same loop nests and shared decisions (csrc/common/*.h), one thread at a
// time. A barrier of the kernel is the end of a loop here.
#pragma once

#include <cstdint>
#include <vector>

#include "common/bitonic.h"
#include "common/radix_select.h"

namespace vtprune_sim {

// block_bitonic_sort of cosine_dedup_mask.cu: sorts (keys[i], indices[i]), i < n, ascending by key
// then index, after padding to next_pow2(n) with (~0, ~0u). keys/indices hold >= next_pow2(n).
inline void bitonic_sort_pairs(std::vector<uint64_t>& keys, std::vector<uint32_t>& indices, int64_t n) {
  const int64_t P = vtprune::next_pow2(n);
  for (int64_t i = n; i < P; ++i) {
    keys[i] = ~0ull;
    indices[i] = ~0u;
  }
  for (int64_t k = 2; k <= P; k <<= 1) {
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      for (int64_t t = 0; t < P / 2; ++t) {
        int64_t lo, hi;
        bool ascending;
        vtprune::bitonic_pair(t, j, k, &lo, &hi, &ascending);
        vtprune::bitonic_compare_exchange(keys[lo], indices[lo], keys[hi], indices[hi], ascending);
      }
    }
  }
}

// The radix selection of region_topk_select_kernel over one segment's keys (rank_key values of a row
// of n_indices tokens). Returns the final state; `pivots_ok` turns false if a pass did not find
// exactly one pivot digit (the kernel relies on it: one thread writes the next state) or the
// selection did not finish. `passes` (optional) counts the histogram passes.
inline vtprune::RadixSelectState radix_select(const std::vector<uint64_t>& keys, int64_t k, int64_t n_indices,
                                              bool* pivots_ok, int* passes = nullptr) {
  using namespace vtprune;
  if (passes != nullptr) *passes = 0;
  RadixSelectState state = radix_select_start(static_cast<int64_t>(keys.size()), k);
  for (int shift = radix_select_next_shift(-1, n_indices); shift >= 0 && !radix_select_done(state);
       shift = radix_select_next_shift(shift, n_indices)) {
    if (passes != nullptr) ++*passes;
    int64_t hist[kRadixBins] = {};
    for (const uint64_t key : keys) {
      if (radix_select_is_candidate(state, key)) ++hist[radix_digit(key, shift)];
    }
    int64_t below = 0;
    int pivots = 0;
    RadixSelectState next = state;
    for (int d = 0; d < kRadixBins; ++d) {
      if (radix_select_is_pivot_digit(state, below, hist[d])) {
        ++pivots;
        radix_select_advance(next, shift, d, below, hist[d]);
      }
      below += hist[d];
    }
    if (pivots != 1) *pivots_ok = false;
    state = next;
  }
  if (!radix_select_done(state)) *pivots_ok = false;
  return state;
}

}  // namespace vtprune_sim
