// The fast float64 dot of cosine_dedup_mask (dedup_dots.h), compiled once per instruction set
// (setup.py: CPU_DISPATCHED_SOURCES), everything inside this copy's namespace.
//
// Each copy sums the exact float64 products in lane-wise partial sums (4 vectors of float64
// lanes), adds the vectors, then the lanes, then the scalar tail: a summation order like any
// other, so the fast cosine's bound (dedup_cosines.h: fast_error_bound, gamma_C for any order of
// C terms) covers it. A fused multiply-add is a multiply then an add here: the product of two
// widened float32 values is exact in float64.
#include "cpu/dedup_dots.h"

#include "cpu/capability/vec.h"  // the capability's flags are checked there

namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS {
namespace {

double scalar_tail(const float* x, const float* y, int64_t k, int64_t C) {
  double sum = 0.0;
  for (; k < C; ++k) sum += static_cast<double>(x[k]) * static_cast<double>(y[k]);
  return sum;
}

#if VTPRUNE_CPU_CAPABILITY_ID == 2
// 4 x 8 float64 lanes (zmm), 32 products a step.
double fast_dot_body(const float* x, const float* y, int64_t C) {
  __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
  int64_t k = 0;
  for (; k + 32 <= C; k += 32) {
    for (int l = 0; l < 4; ++l) {
      const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + k + 8 * l));
      const __m512d b = _mm512_cvtps_pd(_mm256_loadu_ps(y + k + 8 * l));
      acc[l] = _mm512_fmadd_pd(a, b, acc[l]);
    }
  }
  for (; k + 8 <= C; k += 8) {
    acc[0] = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + k)), _mm512_cvtps_pd(_mm256_loadu_ps(y + k)), acc[0]);
  }
  const __m512d total = _mm512_add_pd(_mm512_add_pd(acc[0], acc[1]), _mm512_add_pd(acc[2], acc[3]));
  return scalar_tail(x, y, k, C) + _mm512_reduce_add_pd(total);
}

#elif VTPRUNE_CPU_CAPABILITY_ID == 1
// 4 x 4 float64 lanes (ymm), 16 products a step.
double fast_dot_body(const float* x, const float* y, int64_t C) {
  __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  int64_t k = 0;
  for (; k + 16 <= C; k += 16) {
    for (int l = 0; l < 4; ++l) {
      const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + k + 4 * l));
      const __m256d b = _mm256_cvtps_pd(_mm_loadu_ps(y + k + 4 * l));
      acc[l] = _mm256_fmadd_pd(a, b, acc[l]);
    }
  }
  for (; k + 4 <= C; k += 4) {
    acc[0] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + k)), _mm256_cvtps_pd(_mm_loadu_ps(y + k)), acc[0]);
  }
  const __m256d total = _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3]));
  const __m128d half = _mm_add_pd(_mm256_castpd256_pd128(total), _mm256_extractf128_pd(total, 1));
  return scalar_tail(x, y, k, C) + _mm_cvtsd_f64(_mm_add_sd(half, _mm_unpackhi_pd(half, half)));
}

#else
// 8 partial sums, in pairs of lanes (SSE2 / NEON with GCC / Clang; plain scalars elsewhere).
double fast_dot_body(const float* x, const float* y, int64_t C) {
  double acc[8] = {};
  int64_t k = 0;
  for (; k + 8 <= C; k += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(x[k + l]) * static_cast<double>(y[k + l]);
  }
  const double total = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
  return scalar_tail(x, y, k, C) + total;
}
#endif

}  // namespace

const DedupDotLoops dedup_dot_loops{fast_dot_body};

}  // namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS
