// Vectorised row loops of the attention_scores CPU kernel (see row_math.h).
#include "cpu/row_math.h"

#include <algorithm>
#include <cstring>
#include <limits>

#if defined(__GNUC__)
#define VTPRUNE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define VTPRUNE_ALWAYS_INLINE inline
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define VTPRUNE_X86_DISPATCH 1
#endif

namespace vtprune::cpu {
namespace {

VTPRUNE_ALWAYS_INLINE float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

VTPRUNE_ALWAYS_INLINE uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// exp(x) in float32, branch-free so that loops calling it vectorise: x = n ln2 + r with
// |r| <= ln2/2 (two-part ln2), exp(r) by the Cephes expf polynomial (~1 ulp), times 2^n built in
// the exponent bits. Results below e^-86.9 (~2e-38) flush to 0; above ln(FLT_MAX) -> inf; NaN -> NaN.
VTPRUNE_ALWAYS_INLINE float exp_f32(float x) {
  constexpr float kLo = -86.9f;         // n >= -125, so 2^(n-1) is a normal float
  constexpr float kHi = 88.72283905f;   // ln(FLT_MAX): n <= 128, 2^(n-1) <= 2^127
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float xc = std::min(std::max(x, kLo), kHi);  // a NaN passes through
  const float shifted = xc * 1.44269504088896341f + kRound;
  const float n = shifted - kRound;  // round(x / ln2)
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  // n as an integer from the rounding's low mantissa bits; 2^n = 2 * 2^(n-1) in the exponent field
  const uint32_t n_int = float_to_bits(shifted) - float_to_bits(kRound);
  const float res = (y * 2.0f) * bits_to_float((n_int + 126u) << 23);
  return x < kLo ? 0.0f : (x > kHi ? std::numeric_limits<float>::infinity() : res);
}

VTPRUNE_ALWAYS_INLINE float max_scaled_body(const float* x, int64_t n, float scale) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) {
    const float v = scale * x[j];
    m = v > m ? v : m;
  }
  return m;
}

VTPRUNE_ALWAYS_INLINE float exp_shift_body(float* x, int64_t n, float scale, float shift) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp_f32(scale * x[j] - shift);
    x[j] = e;
    sum += e;
  }
  return sum;
}

VTPRUNE_ALWAYS_INLINE void add_scaled_body(float* __restrict acc, const float* __restrict x, int64_t n, float a) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) acc[j] += a * x[j];
}

VTPRUNE_ALWAYS_INLINE void max_into_body(float* __restrict acc, const float* __restrict x, int64_t n, float a) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float v = a * x[j];
    const float c = acc[j];
    acc[j] = (v > c || v != v) ? v : c;  // a NaN already in acc stays (v > NaN is false)
  }
}


// One copy of the loops per instruction set, chosen once from the running CPU.
struct RowMath {
  float (*max_scaled)(const float*, int64_t, float);
  float (*exp_shift)(float*, int64_t, float, float);
  void (*add_scaled)(float*, const float*, int64_t, float);
  void (*max_into)(float*, const float*, int64_t, float);
};

#define VTPRUNE_ROW_MATH_VARIANT(NAME, TARGET)                                                                   \
  TARGET float NAME##_max_scaled(const float* x, int64_t n, float s) { return max_scaled_body(x, n, s); }         \
  TARGET float NAME##_exp_shift(float* x, int64_t n, float s, float t) { return exp_shift_body(x, n, s, t); }     \
  TARGET void NAME##_add_scaled(float* acc, const float* x, int64_t n, float a) { add_scaled_body(acc, x, n, a); } \
  TARGET void NAME##_max_into(float* acc, const float* x, int64_t n, float a) { max_into_body(acc, x, n, a); }    \
  constexpr RowMath NAME##_row_math{NAME##_max_scaled, NAME##_exp_shift, NAME##_add_scaled, NAME##_max_into};

VTPRUNE_ROW_MATH_VARIANT(generic, )
#ifdef VTPRUNE_X86_DISPATCH
VTPRUNE_ROW_MATH_VARIANT(avx2, __attribute__((target("avx2,fma"))))
VTPRUNE_ROW_MATH_VARIANT(avx512, __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))))
#endif

const RowMath& row_math() {
  static const RowMath chosen = [] {
#ifdef VTPRUNE_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      return avx512_row_math;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2_row_math;
#endif
    return generic_row_math;
  }();
  return chosen;
}

}  // namespace

float max_scaled(const float* x, int64_t n, float scale) { return row_math().max_scaled(x, n, scale); }
float exp_shift_inplace(float* x, int64_t n, float scale, float shift) { return row_math().exp_shift(x, n, scale, shift); }
void add_scaled(float* acc, const float* x, int64_t n, float a) { row_math().add_scaled(acc, x, n, a); }
void max_into_scaled(float* acc, const float* x, int64_t n, float a) { row_math().max_into(acc, x, n, a); }

}  // namespace vtprune::cpu
