// Bookkeeping of an MSD radix selection of the k smallest of n UNIQUE 64-bit keys (rank_key of
// common/sort_keys.h), 8 bits per pass. A backend owns the histogram passes (a CUDA block with
// shared-memory atomics, or a serial loop in the host tests); this header owns the decisions.
//
// State after some passes: `prefix`/`mask` are the key bits fixed so far. Keys with
// (key & mask) < prefix are selected, keys with (key & mask) == prefix are the candidates
// (`n_candidates` of them), of which the `k_left` smallest are still to be selected. Because
// keys are unique, the candidates shrink until all of them are wanted (`done`); then
// `selected(key)` is exactly "key among the k smallest".
#pragma once

#include <cstdint>

#include "common/hd.h"

namespace vtprune {

constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;

struct RadixSelectState {
  uint64_t prefix;
  uint64_t mask;
  int64_t k_left;       // how many candidates are still to be selected
  int64_t n_candidates; // keys matching prefix under mask
};

// k is clamped to [0, n] (memory safety; callers validate k elsewhere).
VTPRUNE_HD RadixSelectState radix_select_start(int64_t n, int64_t k) {
  const int64_t kk = k < 0 ? 0 : (k > n ? n : k);
  return RadixSelectState{0u, 0u, kk, n};
}

// Nothing is left to decide: no candidate is wanted (k == 0), or every candidate is.
VTPRUNE_HD bool radix_select_done(const RadixSelectState& s) { return s.k_left == 0 || s.k_left == s.n_candidates; }

VTPRUNE_HD bool radix_select_is_candidate(const RadixSelectState& s, uint64_t key) {
  return (key & s.mask) == s.prefix;
}

VTPRUNE_HD int radix_digit(uint64_t key, int shift) { return static_cast<int>((key >> shift) & (kRadixBins - 1)); }

// Shifts of the passes, most significant first: the 4 bytes of the value key, then the bytes of
// the index that can be non-zero for indices < n_indices. Returns -1 after the last pass.
VTPRUNE_HD int radix_select_next_shift(int shift, int64_t n_indices) {
  if (shift < 0) return 56;  // first pass
  if (shift > 32) return shift - kRadixBits;
  int index_bits = 0;  // bit width of the largest index, n_indices - 1
  for (int64_t m = n_indices - 1; m > 0; m >>= 1) ++index_bits;
  const int top = index_bits == 0 ? -1 : ((index_bits - 1) / kRadixBits) * kRadixBits;
  const int next = shift == 32 ? top : shift - kRadixBits;
  return next < 0 ? -1 : next;  // -1: done (no index byte left that can differ)
}

// Given the histogram of the candidates' digits at `shift` and its exclusive prefix sum, the digit
// holding the k_left-th candidate is the one with below < k_left <= below + count.
VTPRUNE_HD bool radix_select_is_pivot_digit(const RadixSelectState& s, int64_t below, int64_t count) {
  return below < s.k_left && s.k_left <= below + count;
}

// Fix the pivot digit found at `shift` (below = candidates in smaller digits, count = in it).
VTPRUNE_HD void radix_select_advance(RadixSelectState& s, int shift, int digit, int64_t below, int64_t count) {
  s.prefix |= static_cast<uint64_t>(digit) << shift;
  s.mask |= static_cast<uint64_t>(kRadixBins - 1) << shift;
  s.k_left -= below;
  s.n_candidates = count;
}

// Valid once radix_select_done: the key is among the k smallest.
VTPRUNE_HD bool radix_select_selected(const RadixSelectState& s, uint64_t key) {
  const uint64_t bits = key & s.mask;
  return bits < s.prefix || (s.k_left > 0 && bits == s.prefix);
}

}  // namespace vtprune
