// allocate_budget for one row (docs/design.md 2.5), shared by the CPU kernel and the CUDA kernel
// (one thread per row). Float64 water-filling, then one largest-fraction rounding. The order
// of every floating-point operation is fixed so that all backends agree bit for bit:
//   share_i = rem * w_i / wsum   (wsum summed over unfixed regions in index order)
//   share_i = rem / n_free       (when wsum == 0)
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hd.h"

namespace vtprune {

// w[S] weights (>= 0), cap[S] capacities (>= 0), total <= sum(cap). Scratch: share[S], fixed[S].
// Writes out[S], which sums to total with out[i] <= cap[i].
template <typename W>
VTPRUNE_HD void allocate_budget_row(const W* w, int64_t w_stride, const int64_t* cap, int64_t cap_stride,
                                    int64_t total, int64_t S, double* share, bool* fixed, int64_t* out,
                                    int64_t out_stride) {
  for (int64_t i = 0; i < S; ++i) fixed[i] = false;
  double rem = static_cast<double>(total);
  while (true) {
    double wsum = 0.0;
    int64_t n_free = 0;
    for (int64_t i = 0; i < S; ++i) {
      if (!fixed[i]) {
        wsum += static_cast<double>(w[i * w_stride]);
        ++n_free;
      }
    }
    bool any_full = false;
    for (int64_t i = 0; i < S; ++i) {
      if (fixed[i]) continue;
      share[i] = wsum > 0.0 ? rem * static_cast<double>(w[i * w_stride]) / wsum : rem / static_cast<double>(n_free);
      if (share[i] >= static_cast<double>(cap[i * cap_stride])) any_full = true;
    }
    if (!any_full) break;
    for (int64_t i = 0; i < S; ++i) {
      if (!fixed[i] && share[i] >= static_cast<double>(cap[i * cap_stride])) {
        fixed[i] = true;
        rem -= static_cast<double>(cap[i * cap_stride]);
      }
    }
  }
  int64_t assigned = 0;
  for (int64_t i = 0; i < S; ++i) {
    const int64_t c = fixed[i] ? cap[i * cap_stride] : static_cast<int64_t>(floor(share[i]));
    out[i * out_stride] = c;
    assigned += c;
    if (!fixed[i]) share[i] -= floor(share[i]);  // share now holds the fractional part
  }
  // Leftover units, one each, to the largest fractional parts; ties -> lower index.
  for (int64_t left = total - assigned; left > 0; --left) {
    int64_t best = -1;
    for (int64_t i = 0; i < S; ++i) {
      if (fixed[i]) continue;
      if (best < 0 || share[i] > share[best]) best = i;
    }
    if (best < 0) break;  // unreachable for valid input (total <= sum(cap))
    out[best * out_stride] += 1;
    fixed[best] = true;  // one unit each at most
  }
}

}  // namespace vtprune
