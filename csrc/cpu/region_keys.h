// Vectorised loops of region_topk_mask's CPU kernel over one region's 32-bit rank keys
// (descending_key of common/sort_keys.h: the k best scores are the k smallest keys). region_keys.cpp
// is one of setup.py's CPU_DISPATCHED_SOURCES: compiled once per instruction set (default, AVX2,
// AVX-512), the copy the CPU supports picked at run time (cpu/capability/dispatch.h), so no ISA is
// assumed and a build with default flags still uses AVX2 or AVX-512 where the CPU has it.
#pragma once

#include <cstdint>

#include "cpu/capability/dispatch.h"

namespace vtprune::cpu {

// descending_key on float bits without branches, lane-wise on uint32_t (or a vector of it), so
// loops of it vectorise: -0.0 ranks as +0.0, every NaN maps to 0xFFFFFFFF (ranks last).
// static: each translation unit keeps its own copy (the dispatched ones are compiled with
// AVX2/AVX-512 flags, and the linker must not hand their copy to the baseline code).
template <typename U>
static inline U descending_key_of_bits(U bits) {
  const U zero = bits - bits;  // 0 in every lane
  bits = bits == zero + 0x80000000u ? zero : bits;
  const U negative = (bits >> 31) * 0xFFFFFFFFu;  // all ones where the sign bit is set
  const U ascending = (~bits & negative) | ((bits | 0x80000000u) & ~negative);
  const U nan = (bits & 0x7FFFFFFFu) > zero + 0x7F800000u ? zero + 0xFFFFFFFFu : zero;
  return ~ascending | nan;
}

// The k smallest keys, ties to the lower index: a key is selected when (key & mask) < prefix, or
// when (key & mask) == prefix and it is among the first `quota` such keys in index order.
struct Threshold {
  uint32_t prefix = 0, mask = 0;
  int64_t quota = 0;
};

// The loops, one table per instruction set: region_key_loops_for(active_cpu_capability()).
struct RegionKeyLoops {
  // keys[i] = descending_key(scores[i]) for n contiguous float32 scores; *all_and, *all_or: the
  // bitwise AND and OR of the keys.
  void (*float_keys)(const float* scores, int64_t n, uint32_t* keys, uint32_t* all_and, uint32_t* all_or);
  // mask[i] = (keys[i] & key_mask) < prefix, i < n.
  void (*mark_under)(const uint32_t* keys, int64_t n, uint32_t key_mask, uint32_t prefix, bool* mask);
  // Threshold of the k in [1, n - 1] smallest of keys[0..n), whose bitwise AND and OR are all_and,
  // all_or, by bisection of the key range: each step counts the keys under a bound (one vectorised
  // pass over keys in L1), until every key under the bound is wanted or the range is one key value.
  // At most 33 passes, typically log2(n) + a few. Returns mask = all ones.
  Threshold (*bisect_threshold)(const uint32_t* keys, int64_t n, int64_t k, uint32_t all_and, uint32_t all_or);
};

VTPRUNE_DECLARE_CPU_DISPATCH(RegionKeyLoops, region_key_loops)

}  // namespace vtprune::cpu
