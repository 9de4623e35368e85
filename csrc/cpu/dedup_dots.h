// The float64 dot product of cosine_dedup_mask's fast cosines (dedup_cosines.h), one copy per
// instruction set: dedup_dots.cpp is one of setup.py's CPU_DISPATCHED_SOURCES (compiled for
// default, AVX2 and AVX-512, the copy the CPU supports picked at run time by
// cpu/capability/dispatch.h), so a build with default flags still sums in AVX2 / AVX-512 lanes.
#pragma once

#include <cstdint>

#include "cpu/capability/dispatch.h"

namespace vtprune::cpu {

struct DedupDotLoops {
  // sum over k < C of x[k] * y[k] in float64 (products exact), in an order of this copy's
  // choosing: within gamma_C(2^-53) * sum_k |x[k] y[k]| of the true dot (dedup_cosines.h).
  double (*fast_dot)(const float* x, const float* y, int64_t C);
};

VTPRUNE_DECLARE_CPU_DISPATCH(DedupDotLoops, dedup_dot_loops)

}  // namespace vtprune::cpu
