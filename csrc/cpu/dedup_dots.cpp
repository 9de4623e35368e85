// The float64 row loops of cosine_dedup_mask (dedup_dots.h), compiled once per instruction set
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

void scalar_scaled_tail(const float* x, double scale, int64_t k, int64_t C, float* out) {
  for (; k < C; ++k) out[k] = static_cast<float>(static_cast<double>(x[k]) * scale);
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

void norm_and_fingerprint_body(const float* x, const float* w, int64_t C, double* norm2, double* fingerprint) {
  __m512d n0 = _mm512_setzero_pd(), n1 = _mm512_setzero_pd(), f0 = _mm512_setzero_pd(), f1 = _mm512_setzero_pd();
  int64_t k = 0;
  for (; k + 16 <= C; k += 16) {
    const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + k)), b = _mm512_cvtps_pd(_mm256_loadu_ps(x + k + 8));
    n0 = _mm512_fmadd_pd(a, a, n0);
    n1 = _mm512_fmadd_pd(b, b, n1);
    f0 = _mm512_fmadd_pd(a, _mm512_cvtps_pd(_mm256_loadu_ps(w + k)), f0);
    f1 = _mm512_fmadd_pd(b, _mm512_cvtps_pd(_mm256_loadu_ps(w + k + 8)), f1);
  }
  *norm2 = scalar_tail(x, x, k, C) + _mm512_reduce_add_pd(_mm512_add_pd(n0, n1));
  *fingerprint = scalar_tail(x, w, k, C) + _mm512_reduce_add_pd(_mm512_add_pd(f0, f1));
}

void scaled_row_body(const float* x, double scale, int64_t C, float* out) {
  const __m512d s = _mm512_set1_pd(scale);
  int64_t k = 0;
  for (; k + 16 <= C; k += 16) {
    const __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + k)), s));
    const __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + k + 8)), s));
    _mm256_storeu_ps(out + k, lo);
    _mm256_storeu_ps(out + k + 8, hi);
  }
  scalar_scaled_tail(x, scale, k, C, out);
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

double horizontal_sum(__m256d v) {
  const __m128d half = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(half, _mm_unpackhi_pd(half, half)));
}

void norm_and_fingerprint_body(const float* x, const float* w, int64_t C, double* norm2, double* fingerprint) {
  __m256d n0 = _mm256_setzero_pd(), n1 = _mm256_setzero_pd(), f0 = _mm256_setzero_pd(), f1 = _mm256_setzero_pd();
  int64_t k = 0;
  for (; k + 8 <= C; k += 8) {
    const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + k)), b = _mm256_cvtps_pd(_mm_loadu_ps(x + k + 4));
    n0 = _mm256_fmadd_pd(a, a, n0);
    n1 = _mm256_fmadd_pd(b, b, n1);
    f0 = _mm256_fmadd_pd(a, _mm256_cvtps_pd(_mm_loadu_ps(w + k)), f0);
    f1 = _mm256_fmadd_pd(b, _mm256_cvtps_pd(_mm_loadu_ps(w + k + 4)), f1);
  }
  *norm2 = scalar_tail(x, x, k, C) + horizontal_sum(_mm256_add_pd(n0, n1));
  *fingerprint = scalar_tail(x, w, k, C) + horizontal_sum(_mm256_add_pd(f0, f1));
}

void scaled_row_body(const float* x, double scale, int64_t C, float* out) {
  const __m256d s = _mm256_set1_pd(scale);
  int64_t k = 0;
  for (; k + 8 <= C; k += 8) {
    _mm_storeu_ps(out + k, _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + k)), s)));
    _mm_storeu_ps(out + k + 4, _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + k + 4)), s)));
  }
  scalar_scaled_tail(x, scale, k, C, out);
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

void norm_and_fingerprint_body(const float* x, const float* w, int64_t C, double* norm2, double* fingerprint) {
  double n[4] = {}, f[4] = {};
  int64_t k = 0;
  for (; k + 4 <= C; k += 4) {
    for (int l = 0; l < 4; ++l) {
      const double a = static_cast<double>(x[k + l]);
      n[l] += a * a;
      f[l] += a * static_cast<double>(w[k + l]);
    }
  }
  *norm2 = scalar_tail(x, x, k, C) + ((n[0] + n[2]) + (n[1] + n[3]));
  *fingerprint = scalar_tail(x, w, k, C) + ((f[0] + f[2]) + (f[1] + f[3]));
}

void scaled_row_body(const float* x, double scale, int64_t C, float* out) { scalar_scaled_tail(x, scale, 0, C, out); }
#endif

}  // namespace

const DedupDotLoops dedup_dot_loops{fast_dot_body, norm_and_fingerprint_body, scaled_row_body};

}  // namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS
