// allocate_budget for one row (docs/design.md 2.5), shared by the CPU kernel and the CUDA kernel (one
// thread per row), in exact integer arithmetic: mathematically equal fractional parts compare equal
// (weights [8, 5, 2], total 5: every fractional part is 2/3, so the lower indices win), and no sum
// overflows (capacities near 2^63 are fine).
//
// Every weight is a binary float, w_i = m_i * 2^e_i with an integer m_i < 2^53, so with
// e_min = min e_i over the row's non-zero weights, W_i = m_i * 2^(e_i - e_min) is an integer and
// the shares are rationals with one denominator:
//   share_i = rem * W_i / Wsum,  Wsum = sum of W_i over the regions not fixed yet;
//   (all of those weights zero: W_i = 1, Wsum = their count: equal shares).
// rem = total - (capacities fixed so far) is an integer, so every comparison is between integers:
//   share_i >= cap_i       <=>  rem * W_i >= cap_i * Wsum
//   floor(share_i)         =    q_i = floor(rem * W_i / Wsum)
//   fractional parts       <->  remainders r_i = rem * W_i - q_i * Wsum (same denominator Wsum).
// The integers are wide (wide_uint.h): a row of float32 weights spanning 2^-149 .. 2^127 needs
// ~430 bits, float64 ~2250; a row's width follows the exponent span it actually has (typical
// softmax weights: 5 limbs).
//
// Invalid values (the CUDA kernel does not check them) stay memory-safe and terminate: negative
// total or capacities count as 0, negative or non-finite weights as 0; the counts then need not
// sum to total.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/hd.h"
#include "common/wide_uint.h"

namespace vtprune {

// Limbs for the widest row of each weight type: 117 bits (products of a 63-bit integer with a
// 53-bit mantissa, plus a bit) + the exponent span + 32 bits of region count.
template <typename W>
struct BudgetLimbs {
  static constexpr int value = 14;  // float32, bfloat16, float16: exponents -149 .. 127
};
template <>
struct BudgetLimbs<double> {
  static constexpr int value = 71;  // float64: exponents -1074 .. 1023
};

// w = mantissa * 2^exponent with an odd mantissa (< 2^53); mantissa 0 for zero, negative or
// non-finite weights.
struct WeightParts {
  uint64_t mantissa;
  int exponent;
};

VTPRUNE_HD int count_trailing_zeros(uint64_t v) {
#if defined(__CUDA_ARCH__)
  return __ffsll(static_cast<long long>(v)) - 1;
#else
  return __builtin_ctzll(v);
#endif
}

VTPRUNE_HD WeightParts weight_parts(double w) {
  if (!(w > 0.0) || !(w <= 1.7976931348623157e308)) return WeightParts{0, 0};  // zero, negative, NaN, inf
  int e = 0;
  const double fraction = frexp(w, &e);  // w = fraction * 2^e, fraction in [0.5, 1)
  uint64_t m = static_cast<uint64_t>(ldexp(fraction, 53));
  e -= 53;
  const int tz = count_trailing_zeros(m);
  return WeightParts{m >> tz, e + tz};
}

// Per-row state of the exact water-filling: the width, the common exponent and the current
// rem / Wsum (Wsum in limbs; `uniform` when every free weight is zero).
template <int kLimbs>
struct BudgetRow {
  int n;              // limbs in use
  int e_min;          // smallest exponent of a non-zero weight
  uint64_t rem;       // total minus the capacities fixed so far
  bool uniform;       // equal shares: W_i = 1 for every free region
  uint32_t wsum[kLimbs];
};

// product = rem * W_i (in row.n limbs).
template <int kLimbs>
VTPRUNE_HD void budget_numerator(const BudgetRow<kLimbs>& row, WeightParts p, uint32_t* product) {
  if (row.uniform) {
    wide_set_product(product, row.n, row.rem, 1u, 0);
  } else if (p.mantissa == 0) {
    wide_zero(product, row.n);
  } else {
    wide_set_product(product, row.n, row.rem, p.mantissa, p.exponent - row.e_min);
  }
}

// What the rounding knows of a region (scratch of allocate_budget_row).
enum BudgetRegionState : uint8_t { kRegionFree = 0, kRegionFixed = 1, kRegionFreePlusOne = 2 };

// The row in float64 arithmetic, when that provably gives the exact result: every comparison the
// algorithm makes (share >= capacity, the floors, which fractional parts are the `left` largest) is
// decided only if the two sides are further apart than the bound on the shares' rounding error,
// |computed share - share| <= share * (n_free + 4) u + 2^-1000 (the weight sum's n_free - 1
// additions, a quotient and two products; u = 2^-53), else it gives up (returns false) and the caller
// runs the exact routine. Equal shares of all-zero weights are exact integer arithmetic here. Equal
// weights, exact ties (weights [8, 5, 2], total 5) and integers beyond 2^53 take the exact path;
// rows of distinct float weights almost never do. Same arguments as allocate_budget_row; out[] is
// only meaningful when it returns true.
template <typename Weights>
VTPRUNE_HD bool allocate_budget_row_float64(const Weights& w, int64_t w_stride, const int64_t* cap,
                                            int64_t cap_stride, int64_t total, int64_t S, uint8_t* state,
                                            uint64_t* key, int64_t* out, int64_t out_stride) {
  const double kExact = 9007199254740992.0;    // 2^53: integers below it are exact in float64
  const double u = 1.1102230246251565e-16;     // 2^-53
  const double tiny = 9.332636185032189e-302;  // 2^-1000: absolute slack for underflow
  if (!(total >= 0 && static_cast<double>(total) < kExact) || S >= (int64_t{1} << 31)) return false;
  for (int64_t i = 0; i < S; ++i) {
    const double wi = static_cast<double>(w[i * w_stride]);
    const int64_t c = cap[i * cap_stride];
    if (!(wi >= 0.0 && wi <= 1.7976931348623157e308) || c < 0 || !(static_cast<double>(c) < kExact)) return false;
    state[i] = kRegionFree;
  }
  uint64_t rem = static_cast<uint64_t>(total), n_free = static_cast<uint64_t>(S);
  double wsum = 0.0, slack = 0.0;  // slack: relative error bound of a computed share
  // share_i = rem * w_i * (1 / wsum), kept in key[i] (float64 bits) for the floors
  auto set_share = [&](int64_t i, double share) { memcpy(&key[i], &share, sizeof share); };
  auto share_at = [&](int64_t i) {
    double share;
    memcpy(&share, &key[i], sizeof share);
    return share;
  };
  while (n_free > 0) {
    wsum = 0.0;
    for (int64_t i = 0; i < S; ++i) wsum += state[i] == kRegionFree ? static_cast<double>(w[i * w_stride]) : 0.0;
    slack = static_cast<double>(n_free + 4) * u * 1.01;
    const double scale = wsum == 0.0 ? 0.0 : static_cast<double>(rem) / wsum;
    uint64_t fixed_now = 0, fixed_capacity = 0;
    for (int64_t i = 0; i < S; ++i) {
      if (state[i] != kRegionFree) continue;
      const uint64_t c = static_cast<uint64_t>(cap[i * cap_stride]);
      const double share = scale * static_cast<double>(w[i * w_stride]);
      set_share(i, share);
      bool full;
      if (wsum == 0.0) {
        full = rem / n_free >= c;  // equal shares: rem / n_free >= c, in integers
      } else if (share == 0.0 && static_cast<double>(w[i * w_stride]) == 0.0) {
        full = c == 0;  // a zero share, exactly
      } else {
        if (fabs(share - static_cast<double>(c)) <= share * slack + tiny) return false;  // too close to call
        full = share > static_cast<double>(c);
      }
      if (full) {
        state[i] = kRegionFixed;
        ++fixed_now;
        fixed_capacity += c;
      }
    }
    if (fixed_now == 0) break;
    n_free -= fixed_now;
    rem -= fixed_capacity;  // the fixed shares sum to at most rem
  }
  // Floors; key[i] becomes the fractional part (float64 bits) of each free region.
  const bool uniform = wsum == 0.0;
  uint64_t assigned = 0;
  for (int64_t i = 0; i < S; ++i) {
    if (state[i] == kRegionFixed) {
      out[i * out_stride] = cap[i * cap_stride];
      continue;
    }
    double fraction = 0.0;  // equal shares: every fraction equal, and exactly known
    if (uniform) {
      out[i * out_stride] = static_cast<int64_t>(rem / n_free);
    } else {
      const double share = share_at(i), q = floor(share), err = share * slack + tiny;
      if (share != 0.0 && (share - q <= err || q + 1.0 - share <= err)) return false;  // near an integer
      out[i * out_stride] = static_cast<int64_t>(q);
      fraction = share - q;
    }
    set_share(i, fraction);
    assigned += static_cast<uint64_t>(out[i * out_stride]);
  }
  const uint64_t left = rem - assigned;
  if (left == 0) return true;
  // The `left` largest fractional parts (ties -> lower index): sort free regions by a key of the
  // fraction's top 33 bits (descending) and the index (ascending); fixed regions sort last. The set
  // is certain when the smallest chosen fraction exceeds the largest other one by more than both
  // error bounds (which also rejects any pair the truncated key could have misordered).
  const double scale = uniform ? 0.0 : static_cast<double>(rem) / wsum;
  for (int64_t i = 0; i < S; ++i) {
    uint64_t bits;
    memcpy(&bits, &key[i], sizeof bits);  // a fraction in [0, 1): bit patterns order like values
    key[i] = state[i] == kRegionFixed ? ~0ull : ((0x1FFFFFFFFull - (bits >> 31)) << 31) | static_cast<uint64_t>(i);
  }
  for (int64_t i = 1; i < S; ++i) {  // insertion sort: rows have few regions
    const uint64_t v = key[i];
    int64_t j = i - 1;
    for (; j >= 0 && key[j] > v; --j) key[j + 1] = key[j];
    key[j + 1] = v;
  }
  double chosen_low = 2.0, other_high = -1.0;
  for (uint64_t t = 0; t < n_free; ++t) {
    const int64_t i = static_cast<int64_t>(key[t] & 0x7FFFFFFFull);
    const double share = scale * static_cast<double>(w[i * w_stride]), q = static_cast<double>(out[i * out_stride]);
    const double f = uniform ? 0.0 : share - q, err = uniform ? 0.0 : share * slack + tiny;
    if (t < left) {
      state[i] = kRegionFreePlusOne;
      chosen_low = f - err < chosen_low ? f - err : chosen_low;
    } else {
      other_high = f + err > other_high ? f + err : other_high;
    }
  }
  if (!uniform && !(chosen_low > other_high)) return false;
  for (int64_t i = 0; i < S; ++i) {
    if (state[i] == kRegionFreePlusOne) out[i * out_stride] += 1;
  }
  return true;
}

// The exact routine (wide integers), for any row. Same arguments as allocate_budget_row.
template <int kLimbs, typename Weights>
VTPRUNE_HD void allocate_budget_row_exact(const Weights& w, int64_t w_stride, const int64_t* cap, int64_t cap_stride,
                                          int64_t total, int64_t S, uint8_t* state, uint64_t* key, int64_t* out,
                                          int64_t out_stride) {
  BudgetRow<kLimbs> row;
  uint32_t product[kLimbs], scaled[kLimbs], scratch[kLimbs];
  auto parts = [&](int64_t i) { return weight_parts(static_cast<double>(w[i * w_stride])); };
  auto capacity = [&](int64_t i) { return cap[i * cap_stride] > 0 ? static_cast<uint64_t>(cap[i * cap_stride]) : 0u; };

  // Width: 117 bits + exponent span + bit length of S, rounded up to limbs.
  int e_min = 0, e_max = 0;
  bool any = false;
  for (int64_t i = 0; i < S; ++i) {
    const WeightParts p = parts(i);
    if (p.mantissa == 0) continue;
    e_min = any && e_min < p.exponent ? e_min : p.exponent;
    e_max = any && e_max > p.exponent ? e_max : p.exponent;
    any = true;
  }
  int s_bits = 0;
  for (int64_t s = S; s > 0; s >>= 1) ++s_bits;
  const int bits = 117 + (e_max - e_min) + s_bits;
  row.n = (bits + 31) / 32 < kLimbs ? (bits + 31) / 32 : kLimbs;
  row.e_min = e_min;
  row.rem = total > 0 ? static_cast<uint64_t>(total) : 0u;

  // Water-filling: fix every region whose share reaches its capacity, re-share, until none does.
  auto fixed = [&](int64_t i) { return state[i] == kRegionFixed; };
  for (int64_t i = 0; i < S; ++i) state[i] = kRegionFree;
  uint64_t n_free = static_cast<uint64_t>(S);
  while (n_free > 0) {
    wide_zero(row.wsum, row.n);
    for (int64_t i = 0; i < S; ++i) {
      const WeightParts p = fixed(i) ? WeightParts{0, 0} : parts(i);
      if (p.mantissa != 0) wide_add_shifted(row.wsum, row.n, p.mantissa, p.exponent - row.e_min);
    }
    row.uniform = wide_is_zero(row.wsum, row.n);
    if (row.uniform) wide_set_product(row.wsum, row.n, n_free, 1u, 0);
    uint64_t fixed_now = 0, fixed_capacity = 0;
    for (int64_t i = 0; i < S; ++i) {  // every test of a pass uses the pass's rem and Wsum
      if (fixed(i)) continue;
      budget_numerator(row, parts(i), product);
      wide_mul(scaled, row.wsum, row.n, capacity(i));
      if (wide_compare(product, scaled, row.n) >= 0) {
        state[i] = kRegionFixed;
        ++fixed_now;
        fixed_capacity += capacity(i);  // <= rem for valid input: fixed shares sum to <= rem
      }
    }
    if (fixed_now == 0) break;
    n_free -= fixed_now;
    row.rem -= fixed_capacity < row.rem ? fixed_capacity : row.rem;
  }

  // Rounding: floors q_i, then one unit each to the `left` largest remainders r_i (ties -> lower
  // index). key[i] = r_i >> shift orders remainders except where the keys are equal; then the
  // exact remainders decide (recomputed: a key is exact, shift == 0, whenever Wsum fits in 64 bits).
  const int shift = n_free == 0 ? 0 : (wide_bit_length(row.wsum, row.n) > 64 ? wide_bit_length(row.wsum, row.n) - 64 : 0);
  uint64_t left = row.rem;
  for (int64_t i = 0; i < S; ++i) {
    if (fixed(i)) {
      out[i * out_stride] = static_cast<int64_t>(capacity(i));
      continue;
    }
    budget_numerator(row, parts(i), product);
    const uint64_t q = wide_divide(product, row.wsum, row.n, row.rem, scratch);  // product: remainder
    out[i * out_stride] = static_cast<int64_t>(q);
    left -= q < left ? q : left;
    key[i] = wide_bits_from(product, row.n, shift);
  }
  if (left == 0) return;
  // The remainder of a free region i, exactly: rem * W_i - q_i * Wsum (into `product`).
  auto remainder = [&](int64_t i, uint32_t* r) {
    budget_numerator(row, parts(i), r);
    wide_mul(scratch, row.wsum, row.n, static_cast<uint64_t>(out[i * out_stride]));
    wide_sub(r, scratch, row.n);
  };
  for (int64_t i = 0; i < S; ++i) {
    if (fixed(i)) continue;
    uint64_t ahead = 0;  // free regions ranking before i
    for (int64_t j = 0; j < S && ahead < left; ++j) {
      if (fixed(j) || j == i) continue;
      bool before = key[j] > key[i];
      if (key[j] == key[i]) {
        if (shift == 0) {
          before = j < i;
        } else {
          remainder(i, product);
          remainder(j, scaled);
          const int c = wide_compare(scaled, product, row.n);
          before = c > 0 || (c == 0 && j < i);
        }
      }
      ahead += before ? 1 : 0;
    }
    if (ahead < left) state[i] = kRegionFreePlusOne;  // applied below: q_i must not move yet
  }
  for (int64_t i = 0; i < S; ++i) {
    if (state[i] == kRegionFreePlusOne) out[i * out_stride] += 1;
  }
}

// weights w[i * w_stride], i < S (a pointer, or any accessor whose w[i] converts to double exactly),
// cap[S], total: one row, exactly. Scratch: state[S], key[S]. Writes out[S] (sums to total with
// out[i] <= cap[i] for valid input). kLimbs: BudgetLimbs of the weight type. Tries the float64
// routine first; rows it cannot decide run in wide integers.
template <int kLimbs, typename Weights>
VTPRUNE_HD void allocate_budget_row(const Weights& w, int64_t w_stride, const int64_t* cap, int64_t cap_stride,
                                    int64_t total, int64_t S, uint8_t* state, uint64_t* key, int64_t* out,
                                    int64_t out_stride) {
  if (allocate_budget_row_float64(w, w_stride, cap, cap_stride, total, S, state, key, out, out_stride)) return;
  allocate_budget_row_exact<kLimbs>(w, w_stride, cap, cap_stride, total, S, state, key, out, out_stride);
}

}  // namespace vtprune
