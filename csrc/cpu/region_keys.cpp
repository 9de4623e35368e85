// Vectorised loops over a region's rank keys (see region_keys.h); compiled once per instruction
// set (setup.py: CPU_DISPATCHED_SOURCES), everything inside this copy's namespace.
#include "cpu/region_keys.h"

#include <cstring>

namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS {
namespace {

void float_keys_body(const float* __restrict scores, int64_t n, uint32_t* __restrict keys,
                                           uint32_t* all_and, uint32_t* all_or) {
  uint32_t a = ~0u, o = 0u;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, scores + i, sizeof bits);
    const uint32_t key = descending_key_of_bits(bits);
    keys[i] = key;
    a &= key;
    o |= key;
  }
  *all_and = a;
  *all_or = o;
}

void mark_under_body(const uint32_t* __restrict keys, int64_t n, uint32_t key_mask,
                                           uint32_t prefix, bool* __restrict mask) {
  // signed compares after flipping the sign bit: one instruction on every x86 vector ISA
  const int32_t bound = static_cast<int32_t>(prefix ^ 0x80000000u);
  for (int64_t i = 0; i < n; ++i) mask[i] = static_cast<int32_t>((keys[i] & key_mask) ^ 0x80000000u) < bound;
}

// How many of keys[0..n) are < bound, counted in 32-bit lanes.
inline int64_t count_below(const uint32_t* keys, int64_t n, uint32_t bound) {
  const int32_t b = static_cast<int32_t>(bound ^ 0x80000000u);
  int32_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += static_cast<int32_t>(keys[i] ^ 0x80000000u) < b;
  return count;
}

// The k-th smallest key lies in [lo, lo + width), with `below` keys under lo and `upto` keys under
// lo + width. Halve the range until every key in it is wanted (upto == k: the keys under
// lo + width are the k smallest) or it is one key value (the first k - below keys equal to it).
Threshold bisect_body(const uint32_t* keys, int64_t n, int64_t k, uint32_t all_and,
                                            uint32_t all_or) {
  Threshold t;
  t.mask = ~0u;
  const uint32_t differing = all_and ^ all_or;
  if (differing == 0) {  // one key value: the first k keys
    t.prefix = all_and;
    t.quota = k;
    return t;
  }
  int top = 31;  // the keys agree above bit `top`
  while (((differing >> top) & 1u) == 0) --top;
  const uint64_t low_bits = (uint64_t{2} << top) - 1;                    // bits 0..top
  uint64_t lo = all_and & ~low_bits, width = low_bits + 1;
  int64_t below = 0, upto = n;
  while (upto != k && width > 1) {
    const uint64_t half = width / 2;
    const int64_t count = count_below(keys, n, static_cast<uint32_t>(lo + half));
    const bool lower = count >= k;  // the k-th smallest key is under lo + half
    upto = lower ? count : upto;
    below = lower ? below : count;
    lo = lower ? lo : lo + half;
    width = lower ? half : width - half;
  }
  if (upto == k) {  // lo + width < 2^32: upto < n only after a step that lowered the top
    t.prefix = static_cast<uint32_t>(lo + width);
  } else {
    t.prefix = static_cast<uint32_t>(lo);
    t.quota = k - below;
  }
  return t;
}

}  // namespace

const RegionKeyLoops region_key_loops{float_keys_body, mark_under_body, bisect_body};

}  // namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS
