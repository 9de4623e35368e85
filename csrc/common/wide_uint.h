// Unsigned integers wider than 64 bits, for the exact arithmetic of allocate_budget (common/budget.h),
// shared by the CPU kernel, the CUDA kernel and the host tests.
//
// A number is `n` little-endian 32-bit limbs (value = sum limb[i] * 2^(32 i)) in caller-provided
// storage; every number of one computation uses the same `n`, chosen by the caller large enough for
// every value it forms (nothing here grows or checks the width). 32-bit limbs with 64-bit
// intermediates keep the code the same on every compiler and on the GPU.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hd.h"

namespace vtprune {

VTPRUNE_HD void wide_zero(uint32_t* a, int n) {
  for (int i = 0; i < n; ++i) a[i] = 0u;
}

VTPRUNE_HD void wide_copy(uint32_t* dst, const uint32_t* src, int n) {
  for (int i = 0; i < n; ++i) dst[i] = src[i];
}

VTPRUNE_HD bool wide_is_zero(const uint32_t* a, int n) {
  for (int i = 0; i < n; ++i) {
    if (a[i] != 0u) return false;
  }
  return true;
}

// a += value * 2^shift (shift >= 0; the sum must fit in n limbs).
VTPRUNE_HD void wide_add_shifted(uint32_t* a, int n, uint64_t value, int shift) {
  int limb = shift / 32;
  const int bit = shift % 32;
  // value << bit spans three limbs
  uint32_t part[3] = {static_cast<uint32_t>(value << bit),
                      static_cast<uint32_t>(bit == 0 ? value >> 32 : value >> (32 - bit)),
                      static_cast<uint32_t>(bit == 0 ? 0u : value >> (64 - bit))};
  uint64_t carry = 0;
  for (int j = 0; limb < n && (j < 3 || carry != 0); ++j, ++limb) {
    const uint64_t sum = static_cast<uint64_t>(a[limb]) + (j < 3 ? part[j] : 0u) + carry;
    a[limb] = static_cast<uint32_t>(sum);
    carry = sum >> 32;
  }
}

// a = value * factor * 2^shift (shift >= 0; must fit in n limbs).
VTPRUNE_HD void wide_set_product(uint32_t* a, int n, uint64_t value, uint64_t factor, int shift) {
  wide_zero(a, n);
  const uint64_t v[2] = {value & 0xFFFFFFFFu, value >> 32};
  const uint64_t f[2] = {factor & 0xFFFFFFFFu, factor >> 32};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      if (v[i] != 0 && f[j] != 0) wide_add_shifted(a, n, v[i] * f[j], shift + 32 * (i + j));
    }
  }
}

// out = a * factor (out may not alias a; the product must fit in n limbs).
VTPRUNE_HD void wide_mul(uint32_t* out, const uint32_t* a, int n, uint64_t factor) {
  const uint64_t f0 = factor & 0xFFFFFFFFu, f1 = factor >> 32;
  uint64_t carry = 0;
  for (int i = 0; i < n; ++i) {  // out = a * f0
    const uint64_t t = static_cast<uint64_t>(a[i]) * f0 + carry;
    out[i] = static_cast<uint32_t>(t);
    carry = t >> 32;
  }
  if (f1 == 0) return;
  carry = 0;
  for (int i = 0; i + 1 < n; ++i) {  // out += (a * f1) << 32
    const uint64_t t = static_cast<uint64_t>(a[i]) * f1 + out[i + 1] + carry;
    out[i + 1] = static_cast<uint32_t>(t);
    carry = t >> 32;
  }
}

// -1, 0, 1 as a < b, a == b, a > b.
VTPRUNE_HD int wide_compare(const uint32_t* a, const uint32_t* b, int n) {
  for (int i = n - 1; i >= 0; --i) {
    if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return 0;
}

// out = x - y (requires x >= y; out may be x or y).
VTPRUNE_HD void wide_difference(uint32_t* out, const uint32_t* x, const uint32_t* y, int n) {
  int64_t borrow = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t d = static_cast<int64_t>(x[i]) - y[i] - borrow;
    out[i] = static_cast<uint32_t>(d);
    borrow = d < 0 ? 1 : 0;
  }
}

// a -= b (requires a >= b).
VTPRUNE_HD void wide_sub(uint32_t* a, const uint32_t* b, int n) { wide_difference(a, a, b, n); }

// Index of the highest non-zero limb, -1 for zero.
VTPRUNE_HD int wide_top_limb(const uint32_t* a, int n) {
  for (int i = n - 1; i >= 0; --i) {
    if (a[i] != 0u) return i;
  }
  return -1;
}

// Number of significant bits (0 for zero).
VTPRUNE_HD int wide_bit_length(const uint32_t* a, int n) {
  const int top = wide_top_limb(a, n);
  if (top < 0) return 0;
  int bits = 0;
  for (uint32_t v = a[top]; v != 0u; v >>= 1) ++bits;
  return 32 * top + bits;
}

// floor(a / 2^shift) when it fits in 64 bits (the caller guarantees bit_length(a) <= shift + 64).
VTPRUNE_HD uint64_t wide_bits_from(const uint32_t* a, int n, int shift) {
  uint64_t out = 0;
  for (int b = 0; b < 64; b += 32) {  // two 32-bit windows starting at bit shift + b
    const int pos = shift + b, limb = pos / 32, bit = pos % 32;
    uint64_t window = limb < n ? a[limb] >> bit : 0u;
    if (bit != 0 && limb + 1 < n) window |= static_cast<uint64_t>(a[limb + 1]) << (32 - bit);
    out |= (window & 0xFFFFFFFFu) << b;
  }
  return out;
}

// a / 2^(32 * base) as a double, from its top three limbs above `base` (relative error < 2^-52).
VTPRUNE_HD double wide_to_double(const uint32_t* a, int n, int base) {
  const int top = wide_top_limb(a, n);
  if (top < base) return 0.0;
  double v = 0.0;
  const int low = top - 2 > base ? top - 2 : base;
  for (int i = top; i >= low; --i) v = v * 4294967296.0 + static_cast<double>(a[i]);
  return ldexp(v, 32 * (low - base));
}

// q = floor(num / den) for den > 0 when q <= q_max (< 2^63); num becomes the remainder num - q*den.
// A float64 estimate of the quotient, then exact corrections, each moving q toward the exact value
// without passing it (usually none or one). scratch: n limbs.
VTPRUNE_HD uint64_t wide_divide(uint32_t* num, const uint32_t* den, int n, uint64_t q_max, uint32_t* scratch) {
  const int top = wide_top_limb(den, n);
  const int base = top > 2 ? top - 2 : 0;  // num < den * 2^63 keeps both scaled values finite
  const double den_d = wide_to_double(den, n, base);
  // Shrinks a float64 ratio so that its floor never exceeds the exact one (relative error < 2^-50).
  const double shrink = 1.0 - 1.0 / 1099511627776.0;  // 1 - 2^-40
  double estimate = floor(wide_to_double(num, n, base) / den_d);
  uint64_t q = estimate <= 0.0 ? 0 : (estimate >= static_cast<double>(q_max) ? q_max : static_cast<uint64_t>(estimate));
  while (true) {
    wide_mul(scratch, den, n, q);
    const int c = wide_compare(scratch, num, n);
    if (c > 0) {  // q too large by ceil((q*den - num) / den) >= 1
      wide_sub(scratch, num, n);
      const double over = floor(wide_to_double(scratch, n, base) / den_d * shrink);
      q -= over >= 1.0 ? static_cast<uint64_t>(over) : 1;
      continue;
    }
    wide_difference(scratch, num, scratch, n);  // scratch = num - q*den >= 0
    if (wide_compare(scratch, den, n) < 0) {
      wide_copy(num, scratch, n);
      return q;
    }
    const double under = floor(wide_to_double(scratch, n, base) / den_d * shrink);  // q too small
    q += under >= 1.0 ? static_cast<uint64_t>(under) : 1;
  }
}

}  // namespace vtprune
