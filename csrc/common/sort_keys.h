// The contract's tie rule (common/ranking.h) as unsigned integer keys, for radix selection and
// sorting networks: sorting rank_key(v_i, i) ascending ranks values exactly like ranks_before.
//
//   descending_key(v): higher v -> smaller key; -0.0 and +0.0 share one key (they compare equal);
//                      every NaN maps to 0xFFFFFFFF, above every number (so NaN ranks last).
//   rank_key(v, i):    descending_key(v) in the high 32 bits, the index i in the low 32 bits, so
//                      equal values (and NaNs) rank by the lower index. Keys are unique per index.
//   descending_key64(d): the same encoding for float64 values (a float widened to double keeps its
//                      rank); ties are then broken by a separate index (see common/bitonic.h).
//
// Half and bfloat16 scores are widened to float first (exact), so one encoding serves all dtypes.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/hd.h"

namespace vtprune {

VTPRUNE_HD uint32_t float_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
#endif
}

// IEEE bits of a non-NaN number -> key, higher value first: the order-preserving map to unsigned
// (flip every bit of a negative, the sign bit of a positive), reversed. Never all-ones for a
// number: that would need bits == all-ones, a NaN.
template <typename U>
VTPRUNE_HD U descending_key_from_bits(U bits) {
  const U sign = static_cast<U>(U{1} << (8 * sizeof(U) - 1));
  const U ascending = (bits & sign) ? static_cast<U>(~bits) : static_cast<U>(bits | sign);
  return static_cast<U>(~ascending);
}

// Smaller key = better rank under the tie rule (value only; see rank_key for the index).
VTPRUNE_HD uint32_t descending_key(float v) {
  if (v != v) return 0xFFFFFFFFu;  // NaN: below every number
  if (v == 0.0f) v = 0.0f;         // -0.0 == +0.0: one key
  return descending_key_from_bits(float_bits(v));
}

VTPRUNE_HD uint64_t double_bits(double v) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(v));
#else
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
#endif
}

// Smaller key = better rank (float64 value only; NaN -> 0xFFFF...FF, -0.0 -> +0.0).
VTPRUNE_HD uint64_t descending_key64(double v) {
  if (v != v) return ~0ull;
  if (v == 0.0) v = 0.0;
  return descending_key_from_bits(double_bits(v));
}

// Unique 64-bit key: ascending order of rank_key == ranking order of the tie rule.
VTPRUNE_HD uint64_t rank_key(float v, uint32_t index) {
  return (static_cast<uint64_t>(descending_key(v)) << 32) | index;
}

// The index stored in the low half of a rank_key.
VTPRUNE_HD uint32_t rank_key_index(uint64_t key) { return static_cast<uint32_t>(key & 0xFFFFFFFFu); }

}  // namespace vtprune
