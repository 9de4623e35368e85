// The contract's tie rule as one comparator: a higher score ranks first; NaN ranks after every
// number; equal scores (or two NaNs) -> the lower index ranks first.
#pragma once

#include <cstdint>

#include "common/hd.h"

namespace vtprune {

template <typename T>
VTPRUNE_HD bool is_nan(T v) {
  return v != v;
}

// True when (a, ia) ranks strictly before (b, ib).
template <typename T>
VTPRUNE_HD bool ranks_before(T a, int64_t ia, T b, int64_t ib) {
  const bool a_nan = is_nan(a), b_nan = is_nan(b);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a != b) return a > b;
  return ia < ib;
}

}  // namespace vtprune
