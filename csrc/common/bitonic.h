// Index arithmetic of a bitonic sorting network (ascending) over P = 2^p keys, shared by the CUDA
// block sorts (one thread per pair, a barrier after each step) and the host unit tests (serial).
// Steps: for k = 2, 4, ..., P; for j = k/2, ..., 1: the P/2 pairs t = 0 .. P/2-1 compare-exchange.
#pragma once

#include <cstdint>

#include "common/hd.h"

namespace vtprune {

// Smallest power of two >= n (1 for n <= 1).
VTPRUNE_HD int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Pair t of step (k, j): positions lo < hi = lo + j, and whether that pair sorts ascending.
VTPRUNE_HD void bitonic_pair(int64_t t, int64_t j, int64_t k, int64_t* lo, int64_t* hi, bool* ascending) {
  *lo = ((t & ~(j - 1)) << 1) | (t & (j - 1));  // 2*j*(t/j) + t%j
  *hi = *lo + j;
  *ascending = (*lo & k) == 0;
}

// Put a and b in the pair's order.
template <typename K>
VTPRUNE_HD void bitonic_compare_exchange(K& a, K& b, bool ascending) {
  if ((a > b) == ascending) {
    const K t = a;
    a = b;
    b = t;
  }
}

// The same for entries (key, index) kept in two arrays, ordered by key, then index.
VTPRUNE_HD void bitonic_compare_exchange(uint64_t& key_a, uint32_t& index_a, uint64_t& key_b, uint32_t& index_b,
                                         bool ascending) {
  const bool a_after_b = key_a > key_b || (key_a == key_b && index_a > index_b);
  if (a_after_b == ascending) {
    const uint64_t k = key_a;
    key_a = key_b;
    key_b = k;
    const uint32_t i = index_a;
    index_a = index_b;
    index_b = i;
  }
}

}  // namespace vtprune
