// A float32 SIMD vector for the CPU kernels compiled once per instruction set (see dispatch.h).
//
// The implementation follows the compiler's target flags of the translation unit that includes
// it, which setup.py sets per capability: AVX-512 (__m512, 16 lanes), AVX2 + FMA (__m256, 8
// lanes) or a portable array of 8 floats that any compiler turns into SSE2 / NEON code. The
// operations are the few the kernels need, each a single instruction on AVX2/AVX-512, so hot
// loops are vectorised by construction rather than left to the auto-vectoriser.
//
// Include only from dispatched sources: everything is declared inside the capability's own
// namespace (no inline function compiled with AVX-512 may be shared with the baseline code).
#pragma once

#include "cpu/capability/dispatch.h"

#ifndef VTPRUNE_CPU_CAPABILITY
#error "vec.h is for sources compiled once per CPU capability (setup.py: CPU_DISPATCHED_SOURCES)"
#endif

#include <cstdint>
#include <cstring>

#if VTPRUNE_CPU_CAPABILITY_ID > 0
#include <immintrin.h>
#endif

// The capability's flags must reach the compiler: a missing flag would otherwise silently
// produce a slower or (for AVX-512) miscompiled kernel.
#if VTPRUNE_CPU_CAPABILITY_ID == 2 && !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__))
#error "the avx512 capability needs -mavx512f -mavx512bw -mavx512vl -mavx512dq (or /arch:AVX512)"
#endif
#if VTPRUNE_CPU_CAPABILITY_ID == 1 && !defined(__AVX2__)
#error "the avx2 capability needs -mavx2 -mfma -mf16c (or /arch:AVX2)"
#endif

#if defined(__GNUC__)
#define VTPRUNE_INLINE inline __attribute__((always_inline))
#define VTPRUNE_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define VTPRUNE_INLINE __forceinline
#define VTPRUNE_NOINLINE __declspec(noinline)
#else
#define VTPRUNE_INLINE inline
#define VTPRUNE_NOINLINE
#endif

#if defined(__GNUC__)
#define VTPRUNE_PREFETCH(p) __builtin_prefetch(p)
#define VTPRUNE_PREFETCH_L2(p) __builtin_prefetch(p, 0, 2)
#else
#define VTPRUNE_PREFETCH(p) ((void)(p))
#define VTPRUNE_PREFETCH_L2(p) ((void)(p))
#endif

namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS {

VTPRUNE_INLINE float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

constexpr float kInf = __builtin_huge_valf();

// What is one intrinsic of the same name on AVX2 (P = _mm256, R = __m256) and AVX-512 (_mm512).
#define VTPRUNE_VEC_SIMPLE_OPS(P, R, LANES)                                                     \
  struct Vec {                                                                                  \
    static constexpr int kSize = LANES;                                                         \
    R v;                                                                                        \
    static VTPRUNE_INLINE Vec load(const float* p) { return {P##_loadu_ps(p)}; }                  \
    /* lanes [0, n) from p, the others 0 (nothing is read past p + n) */                        \
    static VTPRUNE_INLINE Vec load_first(const float* p, int n);                                \
    static VTPRUNE_INLINE Vec broadcast(float x) { return {P##_set1_ps(x)}; }                     \
    static VTPRUNE_INLINE Vec zero() { return {P##_setzero_ps()}; }                               \
    VTPRUNE_INLINE void store(float* p) const { P##_storeu_ps(p, v); }                            \
  };                                                                                            \
  VTPRUNE_INLINE Vec operator+(Vec a, Vec b) { return {P##_add_ps(a.v, b.v)}; }                   \
  VTPRUNE_INLINE Vec operator-(Vec a, Vec b) { return {P##_sub_ps(a.v, b.v)}; }                   \
  VTPRUNE_INLINE Vec operator*(Vec a, Vec b) { return {P##_mul_ps(a.v, b.v)}; }                   \
  VTPRUNE_INLINE Vec fmadd(Vec a, Vec b, Vec c) { return {P##_fmadd_ps(a.v, b.v, c.v)}; }         \
  /* max(a, b) as the hardware does it: b when either is NaN */                                 \
  VTPRUNE_INLINE Vec max_hw(Vec a, Vec b) { return {P##_max_ps(a.v, b.v)}; }                    \
  /* the first two steps of a transpose: u[4g + m] <- column 4L + m of rows 4g..4g+3, inside */ \
  /* each 128-bit lane L, for the `rows` (a multiple of 4) vectors of r */                      \
  VTPRUNE_INLINE void transpose_in_lanes(const Vec* r, R* u, int rows) {                         \
    for (int g = 0; g < rows; g += 4) {                                                         \
      const auto t0 = P##_castps_pd(P##_unpacklo_ps(r[g].v, r[g + 1].v));                        \
      const auto t1 = P##_castps_pd(P##_unpackhi_ps(r[g].v, r[g + 1].v));                        \
      const auto t2 = P##_castps_pd(P##_unpacklo_ps(r[g + 2].v, r[g + 3].v));                    \
      const auto t3 = P##_castps_pd(P##_unpackhi_ps(r[g + 2].v, r[g + 3].v));                    \
      u[g] = P##_castpd_ps(P##_unpacklo_pd(t0, t2));                                            \
      u[g + 1] = P##_castpd_ps(P##_unpackhi_pd(t0, t2));                                        \
      u[g + 2] = P##_castpd_ps(P##_unpacklo_pd(t1, t3));                                        \
      u[g + 3] = P##_castpd_ps(P##_unpackhi_pd(t1, t3));                                        \
    }                                                                                           \
  }

#if VTPRUNE_CPU_CAPABILITY_ID == 2
// ------------------------------------------------------------------------------ AVX-512
VTPRUNE_VEC_SIMPLE_OPS(_mm512, __m512, 16)

VTPRUNE_INLINE Vec Vec::load_first(const float* p, int n) {
  return {_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p)};
}
// max(a, b) where a NaN on either side wins (torch.amax).
VTPRUNE_INLINE Vec max_nan(Vec a, Vec b) {
  const __mmask16 pick_b = _mm512_cmp_ps_mask(b.v, a.v, _CMP_NLE_UQ);  // b > a, or unordered
  const __mmask16 a_nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
  return {_mm512_mask_blend_ps(pick_b & ~a_nan, a.v, b.v)};
}
// Lanes i >= n (as ints, n may be <= 0 or >= kSize) replaced by `fill`.
VTPRUNE_INLINE Vec keep_first(Vec a, int64_t n, float fill) {
  const uint32_t bits = n >= 16 ? 0xffffu : (n <= 0 ? 0u : (1u << n) - 1u);
  return {_mm512_mask_blend_ps(static_cast<__mmask16>(bits), _mm512_set1_ps(fill), a.v)};
}
VTPRUNE_INLINE float reduce_add(Vec a) { return _mm512_reduce_add_ps(a.v); }
VTPRUNE_INLINE float reduce_max(Vec a) { return _mm512_reduce_max_ps(a.v); }

// r[i] lane j <- r[j] lane i (a 16 x 16 transpose in registers).
VTPRUNE_INLINE void transpose(Vec (&r)[16]) {
  __m512 u[16];
  transpose_in_lanes(r, u, 16);
  for (int m = 0; m < 4; ++m) {  // then 128-bit lanes across groups
    const __m512 v = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), w = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88), w2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
    r[m].v = _mm512_shuffle_f32x4(v, v2, 0x88);
    r[8 + m].v = _mm512_shuffle_f32x4(v, v2, 0xdd);
    r[4 + m].v = _mm512_shuffle_f32x4(w, w2, 0x88);
    r[12 + m].v = _mm512_shuffle_f32x4(w, w2, 0xdd);
  }
}

#elif VTPRUNE_CPU_CAPABILITY_ID == 1
// ------------------------------------------------------------------------------ AVX2 + FMA
VTPRUNE_VEC_SIMPLE_OPS(_mm256, __m256, 8)

VTPRUNE_INLINE Vec Vec::load_first(const float* p, int n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return {_mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane))};
}
VTPRUNE_INLINE Vec max_nan(Vec a, Vec b) {
  const __m256 pick_b = _mm256_andnot_ps(_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q), _mm256_cmp_ps(b.v, a.v, _CMP_NLE_UQ));
  return {_mm256_blendv_ps(a.v, b.v, pick_b)};
}
VTPRUNE_INLINE Vec keep_first(Vec a, int64_t n, float fill) {
  const int n32 = n >= 8 ? 8 : (n <= 0 ? 0 : static_cast<int>(n));
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return {_mm256_blendv_ps(_mm256_set1_ps(fill), a.v, _mm256_castsi256_ps(keep))};
}
VTPRUNE_INLINE float reduce_add(Vec a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
VTPRUNE_INLINE float reduce_max(Vec a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

// r[i] lane j <- r[j] lane i (an 8 x 8 transpose in registers).
VTPRUNE_INLINE void transpose(Vec (&r)[8]) {
  __m256 u[8];
  transpose_in_lanes(r, u, 8);
  for (int m = 0; m < 4; ++m) {  // then 128-bit lanes across the two groups
    r[m].v = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
    r[4 + m].v = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
  }
}

#else
// ------------------------------------------------------------------------------ portable
// Four floats: one SSE2 register on x86-64, one NEON register on AArch64. With GCC/Clang they are
// a vector extension type, so every operation is one vector instruction of the baseline ISA;
// other compilers get plain lane loops.
#if defined(__GNUC__)
typedef float Lanes __attribute__((vector_size(16)));
typedef int32_t LaneMask __attribute__((vector_size(16)));  // a comparison: all ones or zeros

struct Vec {
  static constexpr int kSize = 4;
  Lanes v;

  static VTPRUNE_INLINE Vec load(const float* p) {
    Vec r;
    std::memcpy(&r.v, p, sizeof(r.v));
    return r;
  }
  static VTPRUNE_INLINE Vec load_first(const float* p, int n) {
    Vec r = zero();
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static VTPRUNE_INLINE Vec broadcast(float x) { return {Lanes{x, x, x, x}}; }
  static VTPRUNE_INLINE Vec zero() { return {Lanes{0.0f, 0.0f, 0.0f, 0.0f}}; }
  VTPRUNE_INLINE void store(float* p) const { std::memcpy(p, &v, sizeof(v)); }
};

// a where m is set, else b (bitwise, so NaNs pass untouched)
VTPRUNE_INLINE Vec select(LaneMask m, Vec a, Vec b) {
  return {reinterpret_cast<Lanes>((m & reinterpret_cast<LaneMask>(a.v)) | (~m & reinterpret_cast<LaneMask>(b.v)))};
}
VTPRUNE_INLINE Vec operator+(Vec a, Vec b) { return {a.v + b.v}; }
VTPRUNE_INLINE Vec operator-(Vec a, Vec b) { return {a.v - b.v}; }
VTPRUNE_INLINE Vec operator*(Vec a, Vec b) { return {a.v * b.v}; }
VTPRUNE_INLINE Vec fmadd(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
VTPRUNE_INLINE Vec max_hw(Vec a, Vec b) { return select(a.v > b.v, a, b); }
VTPRUNE_INLINE Vec max_nan(Vec a, Vec b) { return select(((b.v > a.v) | (b.v != b.v)) & (a.v == a.v), b, a); }
VTPRUNE_INLINE Vec keep_first(Vec a, int64_t n, float fill) {
  const int32_t n32 = n >= 4 ? 4 : (n <= 0 ? 0 : static_cast<int32_t>(n));
  return select(LaneMask{0, 1, 2, 3} < n32, a, Vec::broadcast(fill));
}
#else
struct Vec {
  static constexpr int kSize = 4;
  float v[4];

  static VTPRUNE_INLINE Vec load(const float* p) { return load_first(p, 4); }
  static VTPRUNE_INLINE Vec load_first(const float* p, int n) {
    Vec r = zero();
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static VTPRUNE_INLINE Vec broadcast(float x) { return {{x, x, x, x}}; }
  static VTPRUNE_INLINE Vec zero() { return broadcast(0.0f); }
  VTPRUNE_INLINE void store(float* p) const {
    for (int i = 0; i < 4; ++i) p[i] = v[i];
  }
};

#define VTPRUNE_VEC_LANEWISE(NAME, EXPR)      \
  VTPRUNE_INLINE Vec NAME(Vec a, Vec b) {     \
    Vec r;                                    \
    for (int i = 0; i < 4; ++i) {             \
      const float x = a.v[i], y = b.v[i];     \
      r.v[i] = (EXPR);                        \
    }                                         \
    return r;                                 \
  }
VTPRUNE_VEC_LANEWISE(operator+, x + y)
VTPRUNE_VEC_LANEWISE(operator-, x - y)
VTPRUNE_VEC_LANEWISE(operator*, x * y)
VTPRUNE_VEC_LANEWISE(max_hw, x > y ? x : y)
VTPRUNE_VEC_LANEWISE(max_nan, (y > x || y != y) && x == x ? y : x)
#undef VTPRUNE_VEC_LANEWISE

VTPRUNE_INLINE Vec fmadd(Vec a, Vec b, Vec c) { return a * b + c; }
VTPRUNE_INLINE Vec keep_first(Vec a, int64_t n, float fill) {
  Vec r;
  for (int i = 0; i < 4; ++i) r.v[i] = i < n ? a.v[i] : fill;
  return r;
}
#endif

VTPRUNE_INLINE float reduce_add(Vec a) { return (a.v[0] + a.v[2]) + (a.v[1] + a.v[3]); }
VTPRUNE_INLINE float reduce_max(Vec a) {
  const float m01 = a.v[1] > a.v[0] ? a.v[1] : a.v[0], m23 = a.v[3] > a.v[2] ? a.v[3] : a.v[2];
  return m23 > m01 ? m23 : m01;
}
VTPRUNE_INLINE void transpose(Vec (&r)[4]) {
  for (int i = 0; i < 4; ++i) {
    for (int j = i + 1; j < 4; ++j) {
      const float x = r[i].v[j];
      r[i].v[j] = r[j].v[i];
      r[j].v[i] = x;
    }
  }
}
#endif

// exp(x) in three steps: clamp x (per instruction set), reduce it (common: exp_reduced) and
// scale by 2^n (per instruction set). Reduction: x = n ln2 + r with n = round(x / ln2) (adding
// 1.5 * 2^23 rounds to an integer and leaves n in the low mantissa bits of `shifted`), |r| <=
// ln2/2 from a two-part ln2, and exp(r) = y by the Cephes expf polynomial (~1 ulp).
struct ExpReduced {
  Vec shifted, n, y;
};

VTPRUNE_INLINE ExpReduced exp_reduced(Vec xc) {
  const Vec round = Vec::broadcast(12582912.0f);
  const Vec shifted = fmadd(xc, Vec::broadcast(1.44269504088896341f), round);
  const Vec n = shifted - round;
  Vec r = fmadd(n, Vec::broadcast(-0.693359375f), xc);
  r = fmadd(n, Vec::broadcast(2.12194440e-4f), r);
  Vec p = Vec::broadcast(1.9875691500e-4f);
  p = fmadd(p, r, Vec::broadcast(1.3981999507e-3f));
  p = fmadd(p, r, Vec::broadcast(8.3334519073e-3f));
  p = fmadd(p, r, Vec::broadcast(4.1665795894e-2f));
  p = fmadd(p, r, Vec::broadcast(1.6666665459e-1f));
  p = fmadd(p, r, Vec::broadcast(5.0000001201e-1f));
  return {shifted, n, fmadd(p, r * r, r + Vec::broadcast(1.0f))};
}

#if VTPRUNE_CPU_CAPABILITY_ID == 2
// 2^n by vscalefps, which overflows to inf on its own. Results below 2^-126 (x < -87.34) flush to
// 0 so that no denormal reaches later arithmetic; NaN stays NaN (the clamps keep a NaN x:
// vmaxps/vminps return their second operand on NaN). kNonPositive: x <= 0 or NaN is promised (a
// logit minus its row's maximum), so the upper clamp is skipped.
template <bool kNonPositive = false>
VTPRUNE_INLINE Vec exp(Vec x) {
  __m512 xc = _mm512_max_ps(_mm512_set1_ps(-88.0f), x.v);
  if (!kNonPositive) xc = _mm512_min_ps(_mm512_set1_ps(89.0f), xc);
  const ExpReduced e = exp_reduced({xc});
  const __mmask16 normal = _mm512_cmp_ps_mask(x.v, _mm512_set1_ps(-87.33654475f), _CMP_NLT_UQ);  // or NaN
  return {_mm512_maskz_scalef_ps(normal, e.y.v, e.n.v)};
}

#elif VTPRUNE_CPU_CAPABILITY_ID == 1
// 2^n built in the exponent bits: `shifted` << 23 plus the bits of 1.0. kNonPositive (x <= 0 or
// NaN): x is clamped below at -88, so n >= -127, and n = -127 gives 2^n = +0 (x below ~-87.7
// flushes to 0); nothing can overflow. Otherwise the result is 2y * 2^(n-1) with x clamped to
// [-87.3, ln(FLT_MAX)]: n - 1 = -127 gives +0 (x below ~-87 flushes to 0, results above ~1.6e-38
// are exact), larger x give inf. NaN stays NaN.
template <bool kNonPositive = false>
VTPRUNE_INLINE Vec exp(Vec x) {
  const __m256 hi = _mm256_set1_ps(88.72283905f);
  __m256 xc = _mm256_max_ps(_mm256_set1_ps(kNonPositive ? -88.0f : -87.3f), x.v);
  if (!kNonPositive) xc = _mm256_min_ps(hi, xc);
  const ExpReduced e = exp_reduced({xc});
  const __m256i n_bits = _mm256_slli_epi32(_mm256_castps_si256(e.shifted.v), 23);
  if (kNonPositive) return {_mm256_mul_ps(e.y.v, _mm256_castsi256_ps(_mm256_add_epi32(n_bits, _mm256_set1_epi32(0x3f800000))))};
  const __m256 half_pow2 = _mm256_castsi256_ps(_mm256_add_epi32(n_bits, _mm256_set1_epi32(0x3f000000)));
  const __m256 res = _mm256_mul_ps(_mm256_add_ps(e.y.v, e.y.v), half_pow2);
  return {_mm256_blendv_ps(res, _mm256_set1_ps(kInf), _mm256_cmp_ps(x.v, hi, _CMP_GT_OQ))};
}

#else
// The AVX2 algorithm (general form only): 2y * 2^(n-1) from the exponent bits, x clamped to
// [-87.3, ln(FLT_MAX)]; below -87.3 -> 0, above -> inf, NaN stays NaN (it fails every comparison).
template <bool kNonPositive = false>
VTPRUNE_INLINE Vec exp(Vec x) {
  constexpr float kLo = -87.3f, kHi = 88.72283905f;
#if defined(__GNUC__)
  const Vec lo = Vec::broadcast(kLo), hi = Vec::broadcast(kHi);
  const ExpReduced e = exp_reduced(select(x.v > hi.v, hi, select(x.v < lo.v, lo, x)));
  const LaneMask half_pow2 = (reinterpret_cast<LaneMask>(e.shifted.v) << 23) + 0x3f000000;
  const Vec res = (e.y + e.y) * Vec{reinterpret_cast<Lanes>(half_pow2)};
  return select(x.v < lo.v, Vec::zero(), select(x.v > hi.v, Vec::broadcast(kInf), res));
#else
  Vec xc, out;
  for (int i = 0; i < 4; ++i) xc.v[i] = x.v[i] < kLo ? kLo : (x.v[i] > kHi ? kHi : x.v[i]);
  const ExpReduced e = exp_reduced(xc);
  for (int i = 0; i < 4; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &e.shifted.v[i], sizeof(bits));
    const float res = (e.y.v[i] * 2.0f) * bits_to_float((bits << 23) + 0x3f000000u);
    out.v[i] = x.v[i] < kLo ? 0.0f : (x.v[i] > kHi ? kInf : res);
  }
  return out;
#endif
}
#endif

constexpr int kLanes = Vec::kSize;

// out lane j = the sum of the lanes of p[j] (a transpose, then vertical adds).
VTPRUNE_INLINE Vec sum_each(const Vec (&p)[kLanes]) {
  Vec t[kLanes];
  for (int i = 0; i < kLanes; ++i) t[i] = p[i];
  transpose(t);
  Vec sum = t[0];
  for (int i = 1; i < kLanes; ++i) sum = sum + t[i];
  return sum;
}

}  // namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS
