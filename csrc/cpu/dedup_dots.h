// The float64 row loops of cosine_dedup_mask (dedup_cosines.h): the fast cosines' dot, the norms with
// the identical-row fingerprint, the unit rows. One copy per
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
  // One pass over x: *norm2 = dot(x, x) and *fingerprint = dot(x, weights), each in float64 (products
  // exact) in this copy's order; bitwise-identical rows get bitwise-identical results.
  void (*norm_and_fingerprint)(const float* x, const float* weights, int64_t C, double* norm2, double* fingerprint);
  // out[k] = float(double(x[k]) * scale), k < C (the unit rows of the filter Gram matrix).
  void (*scaled_row)(const float* x, double scale, int64_t C, float* out);
};

VTPRUNE_DECLARE_CPU_DISPATCH(DedupDotLoops, dedup_dot_loops)

}  // namespace vtprune::cpu
