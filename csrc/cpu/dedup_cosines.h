// The cosines the CPU kernel of cosine_dedup_mask ranks by, at three costs (cosine_dedup_mask.cpp):
//
//   exact   cos of common/cosine.h (sequential float64 sums): the values every backend ranks by.
//   fast    the same formula with the dot product summed in any order (vectorised): within
//           fast_error_bound(C) (~2e-13 at C = 1024) of exact.
//   filter  a float32 Gram matrix of the unit rows from sgemms over slices of 256 channels: within
//           filter_error_bound (~1.6e-5 at C = 1024) of exact, whatever order each GEMM sums in.
//
// The bounds are proven below; a ranking by a filter value is exact wherever two values are further
// apart than twice its bound. Features are kept as float32 rows (float16 / bfloat16 widen exactly);
// every product of two of them is exact in float64.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <vector>

#include "common/cosine.h"
#include "common/sort_keys.h"
#include "cpu/dedup_dots.h"
#include "cpu/identical_rows.h"

namespace vtprune::cpu {

// The ranked candidates of one image: row i is the float32 feature row of candidate i (float16 /
// bfloat16 features are widened into a copy; float32 ones are read in place), with its fast squared
// norm (any order), finiteness and class of identical rows. Exact squared norms are computed when
// first needed.
struct CandidateFeatures {
  int64_t n = 0, C = 0;
  const float* base = nullptr;       // row i at base + index[i] * row_stride
  int64_t row_stride = 0;
  std::vector<int64_t> index;
  at::Tensor storage;                // the widened copy, when there is one
  std::vector<double> fast_norm2;    // dot(x, x) in any order
  std::vector<double> exact_norm2;   // dot(x, x) in the cosine's order; NaN until computed
  std::vector<uint8_t> finite;       // 0: the row holds a NaN or inf (every cosine of it is NaN)
  IdenticalRows identical;           // classes of bitwise-identical rows: equal cosines with everything
  const DedupDotLoops* dots = nullptr;  // the fast dot of the active CPU capability (dedup_dots.h)

  double fast_dot(int64_t i, int64_t j) const { return dots->fast_dot(row(i), row(j), C); }

  const float* row(int64_t i) const { return base + index[i] * row_stride; }
};

// dot(x[d], y[d]) for kDots pairs, each summed in index order (the exact cosine's dot), the sums
// interleaved so that they proceed in parallel.
template <int kDots>
void sequential_dots(const float* const* x, const float* const* y, int64_t C, double* out) {
  double acc[kDots] = {};
  for (int64_t k = 0; k < C; ++k) {
    for (int d = 0; d < kDots; ++d) acc[d] += static_cast<double>(x[d][k]) * static_cast<double>(y[d][k]);
  }
  for (int d = 0; d < kDots; ++d) out[d] = acc[d];
}

// 1 / sqrt(max(norm2, eps2)) in float64: a unit row is x * unit_scale(dot(x, x)).
inline double unit_scale(double norm2) { return 1.0 / std::sqrt(std::max(norm2, kCosineEps2)); }

// gamma_n = n u / (1 - n u): the classic bound on the relative error of a sum of n terms.
inline double gamma(int64_t n, double u) { return static_cast<double>(n) * u / (1.0 - static_cast<double>(n) * u); }

// |fast - exact| <= 3 gamma_C(u_d) + 6 u_d: the two dots are each within gamma_C(u_d) sum_k |x_k y_k|
// of the true dot (a sum of C exact products in ANY order, e.g. the lane-wise partial sums of
// dedup_dots.cpp's copies, has that error: each term passes through at most C - 1 additions,
// each rounding relatively by at most u_d), and sum_k |x_k y_k| <= the denominator (Cauchy-Schwarz); the two denominators
// (from norms summed in different orders) differ by gamma_C(u_d) relative, and each side rounds
// three times. 1% on top for the products of small terms left out.
inline double fast_error_bound(int64_t C) {
  const double u_d = std::ldexp(1.0, -53);
  return 1.01 * (3.0 * gamma(C, u_d) * (1.0 + gamma(C, u_d)) + 6.0 * u_d);
}

// A bound on |G[i, j] - exact cos(x_i, x_j)| for G = U U^T computed in a type of unit roundoff u_g
// where each product U_ik U_jk passes through at most `chain` roundings (u_d: float64): any order of
// one GEMM has chain = C; slices summed apart (filter_gram) chain = ceil(C / parts) + parts.
// U_ik = round_g(x_ik * round(1 / round(sqrt(max(dot(x_i, x_i), eps2))))) carries a relative error
// eta <= u_g + 3 u_d + gamma_C(u_d) (the norm summed in any order; 1.01 for the higher terms); with
// Cauchy-Schwarz (sum_k |U_ik U_jk| <= ||U_i|| ||U_j||):
//   |G - sum_k U_ik U_jk|          <= gamma_chain(u_g) (1 + eta)^2 (1 + gamma_C(u_d))
//   |sum_k U_ik U_jk - true cos|   <= (2 eta + eta^2) (1 + gamma_C(u_d))
//   |true cos - exact cos|         <= 2 gamma_C(u_d) + 3 u_d (the dot and the norms' sums, then three
//                                     roundings)
// plus C * 2^-147 for products and units that underflow in float32; 1% on top. The code counts
// gamma_C(u_d) once in the last line: the norms' share of it is already in eta, which the middle
// line counts in full where the square root halves it.
inline double filter_error_bound(int64_t C, int64_t chain, double u_g) {
  const double u_d = std::ldexp(1.0, -53);
  const double eta = u_g + 3.01 * u_d + gamma(C, u_d);
  const double g_d = gamma(C, u_d);
  const double bound = gamma(chain, u_g) * (1.0 + eta) * (1.0 + eta) * (1.0 + g_d) +
                       (2.0 * eta + eta * eta) * (1.0 + g_d) + g_d + 3.0 * u_d;
  return 1.01 * bound + static_cast<double>(C) * std::ldexp(1.0, -147);
}

// Fast and exact cosines of position pairs (i, j) of one image, computed on request and kept per
// pair of classes of identical rows (the cosines depend on the rows' values alone).
class PairCosines {
 public:
  explicit PairCosines(CandidateFeatures& f) : f_(f) {}

  double fast(int32_t i, int32_t j) {
    const auto [it, added] = fast_.emplace(key(i, j), 0.0);
    if (added) {
      it->second = cosine_from_dots(f_.fast_dot(i, j), f_.fast_norm2[i], f_.fast_norm2[j]);
    }
    return it->second;
  }

  // Computes the exact cosines of the pairs (a[p], b[p]) not known yet, 8 sums at a time.
  void prepare_exact(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    todo_a_.clear();
    todo_b_.clear();
    for (size_t p = 0; p < a.size(); ++p) {
      if (exact_.emplace(key(a[p], b[p]), 0.0).second) {
        todo_a_.push_back(a[p]);
        todo_b_.push_back(b[p]);
      }
    }
    std::vector<double> dots(todo_a_.size());
    dot_rows(todo_a_.data(), todo_b_.data(), static_cast<int64_t>(todo_a_.size()), dots.data());
    for (size_t p = 0; p < todo_a_.size(); ++p) {
      const int32_t i = todo_a_[p], j = todo_b_[p];
      exact_[key(i, j)] = cosine_from_dots(dots[p], exact_norm2(i), exact_norm2(j));
    }
  }

  // An exact cosine prepared before.
  double exact(int32_t i, int32_t j) const { return exact_.at(key(i, j)); }

  // dot(x_i, x_i) in the cosine's order, computed once per class (kept at its first row).
  double exact_norm2(int32_t i) {
    i = f_.identical.first[f_.identical.class_of[i]];
    if (std::isnan(f_.exact_norm2[i])) dot_rows(&i, &i, 1, &f_.exact_norm2[i]);
    return f_.exact_norm2[i];
  }

  // out[p] = the sequential dot of rows a[p] and b[p], p < count.
  void dot_rows(const int32_t* a, const int32_t* b, int64_t count, double* out) const {
    constexpr int kDots = 8;
    int64_t p = 0;
    for (; p + kDots <= count; p += kDots) {
      const float* x[kDots];
      const float* y[kDots];
      for (int d = 0; d < kDots; ++d) {
        x[d] = f_.row(a[p + d]);
        y[d] = f_.row(b[p + d]);
      }
      sequential_dots<kDots>(x, y, f_.C, out + p);
    }
    for (; p < count; ++p) {
      const float* x[1] = {f_.row(a[p])};
      const float* y[1] = {f_.row(b[p])};
      sequential_dots<1>(x, y, f_.C, out + p);
    }
  }

 private:
  uint64_t key(int32_t i, int32_t j) const {
    i = f_.identical.class_of[i];
    j = f_.identical.class_of[j];
    return i < j ? (static_cast<uint64_t>(i) << 32) | static_cast<uint32_t>(j)
                 : (static_cast<uint64_t>(j) << 32) | static_cast<uint32_t>(i);
  }

  CandidateFeatures& f_;
  std::unordered_map<uint64_t, double> fast_, exact_;
  std::vector<int32_t> todo_a_, todo_b_;
};

// Fixed pseudo-random weights in [-1, 1) (a 32-bit LCG, the same on every call): the fingerprint
// dot of the identical-row lookup.
inline std::vector<float> fingerprint_weights(int64_t C) {
  std::vector<float> w(C);
  uint32_t state = 0x9E3779B9u;
  for (int64_t k = 0; k < C; ++k) {
    state = state * 1664525u + 1013904223u;
    w[k] = static_cast<float>(static_cast<int32_t>(state)) * 0x1p-31f;
  }
  return w;
}

// The candidates' rows of one image x_b [N, C] (ranked: candidate indices), their fast squared norms,
// finiteness and classes of identical rows, in one pass over the rows (`weights`: C floats of
// fingerprint_weights). With `unit` (float [n, C]), also the unit rows of the filter Gram matrix
// (zero for non-finite rows), while each row is in cache.
inline CandidateFeatures candidate_features(const at::Tensor& x_b, const std::vector<int64_t>& ranked,
                                            const DedupDotLoops& dots, const float* weights, float* unit = nullptr) {
  CandidateFeatures f;
  f.dots = &dots;
  f.n = static_cast<int64_t>(ranked.size());
  f.C = x_b.size(1);
  if (x_b.scalar_type() == at::kFloat && x_b.stride(1) == 1) {
    f.base = x_b.const_data_ptr<float>();
    f.row_stride = x_b.stride(0);
    f.index = ranked;
  } else {  // widen (exactly) the candidates' rows into a copy
    const at::Tensor index = at::tensor(at::IntArrayRef(ranked), at::TensorOptions().dtype(at::kLong));
    f.storage = x_b.index_select(0, index).to(at::kFloat).contiguous();
    f.base = f.storage.const_data_ptr<float>();
    f.row_stride = f.C;
    f.index.resize(f.n);
    for (int64_t i = 0; i < f.n; ++i) f.index[i] = i;
  }
  f.fast_norm2.resize(f.n);
  f.exact_norm2.assign(f.n, std::numeric_limits<double>::quiet_NaN());
  f.finite.resize(f.n);
  std::vector<uint64_t> keys(f.n);
  for (int64_t i = 0; i < f.n; ++i) {
    double fingerprint;
    dots.norm_and_fingerprint(f.row(i), weights, f.C, &f.fast_norm2[i], &fingerprint);
    f.finite[i] = std::isfinite(f.fast_norm2[i]);  // inf or NaN anywhere makes the sum so
    uint64_t norm_bits, fingerprint_bits;
    std::memcpy(&norm_bits, &f.fast_norm2[i], 8);
    std::memcpy(&fingerprint_bits, &fingerprint, 8);
    // non-finite rows (their cosines are all NaN, grouping them gains nothing) get keys of their own:
    // their NaN / inf norms would otherwise put them all under one key, one memcmp walk each
    keys[i] = f.finite[i] ? (fingerprint_bits * 0x9E3779B97F4A7C15ull) ^ norm_bits : ~static_cast<uint64_t>(i);
    if (unit != nullptr) {
      float* out = unit + i * f.C;
      if (f.finite[i]) {
        dots.scaled_row(f.row(i), unit_scale(f.fast_norm2[i]), f.C, out);
      } else {
        std::fill(out, out + f.C, 0.0f);
      }
    }
  }
  f.identical = identical_rows(
      f.n, static_cast<size_t>(f.C) * sizeof(float), [&f](int64_t i) { return f.row(i); },
      [&keys](int64_t i) { return keys[i]; });
  return f;
}

// The filter Gram matrix is summed in slices of kGramSliceWidth channels: each slice's product from
// one GEMM (summed in the BLAS's order, whatever it is), the slices' products then added one after
// another. A product of two unit entries passes through at most ceil(C / parts) roundings in its
// slice's GEMM and parts - 1 additions after it, so the GEMM's part of the filter bound is
// gamma_(ceil(C / parts) + parts) instead of gamma_C: 4x tighter at C = 1024 (1.6e-5 instead of
// 6.1e-5), which leaves ~3x fewer rows of each round to re-check, for ~10% more GEMM time.
constexpr int64_t kGramSliceWidth = 256;

inline int64_t gram_parts(int64_t C) { return std::max<int64_t>(1, (C + kGramSliceWidth - 1) / kGramSliceWidth); }

inline int64_t gram_rounding_chain(int64_t C, int64_t parts) { return (C + parts - 1) / parts + parts; }

// The unit rows of G = double ([n, C], written into `unit`); the float ones come from candidate_features.
inline void double_unit_rows(const CandidateFeatures& f, const at::Tensor& unit) {
  double* u = unit.mutable_data_ptr<double>();
  for (int64_t i = 0; i < f.n; ++i) {
    const float* x = f.row(i);
    double* out = u + i * f.C;
    const double scale = f.finite[i] ? unit_scale(f.fast_norm2[i]) : 0.0;
    for (int64_t k = 0; k < f.C; ++k) out[k] = f.finite[i] ? static_cast<double>(x[k]) * scale : 0.0;
  }
}

// The filter Gram matrix G [n, n] = U U^T in type G (float, or double when torch runs float32
// matmuls in reduced precision) of the unit rows `unit` ([n, C], zero for non-finite rows), written
// into `gram` (contiguous [n, n]); `slice` is scratch (resized). Only the blocks on and above the
// diagonal are multiplied (2/3 of one GEMM), straight into `gram`; the blocks below are their
// transposes.
template <typename G>
void filter_gram(const CandidateFeatures& f, int64_t parts, const at::Tensor& unit, at::Tensor& slice, at::Tensor gram) {
  if (f.C == 0) {  // zero-length rows: every cosine is 0
    gram.zero_();
    return;
  }
  constexpr int64_t kBlocks = 3;
  const int64_t step = std::max<int64_t>(1, (f.n + kBlocks - 1) / kBlocks);
  const int64_t width = (f.C + parts - 1) / parts;
  for (int64_t r0 = 0; r0 < f.n; r0 += step) {
    const int64_t rows = std::min(step, f.n - r0), rest = f.n - r0 - rows;
    at::Tensor upper = gram.narrow(0, r0, rows).narrow(1, r0, f.n - r0);  // row stride n: BLAS writes it in place
    for (int64_t k0 = 0; k0 < f.C; k0 += width) {
      const int64_t k = std::min(width, f.C - k0);
      const at::Tensor left = unit.narrow(0, r0, rows).narrow(1, k0, k);
      const at::Tensor right = unit.narrow(0, r0, f.n - r0).narrow(1, k0, k).t();
      if (k0 == 0) {
        at::mm_out(upper, left, right);
      } else {
        slice.resize_({rows, f.n - r0});
        at::mm_out(slice, left, right);
        upper.add_(slice);  // one rounding per entry
      }
    }
    if (rest > 0) gram.narrow(0, r0 + rows, rest).narrow(1, r0, rows).copy_(upper.narrow(1, rows, rest).t());
  }
}

// The filter Gram matrix's rows cut into chunks of 16 columns, each row's chunks ordered by their
// maximum (built once per image): a masked maximum over a row then opens chunks best-first and
// stops at the first chunk whose maximum cannot beat what it has (typically 2 or 3 of 35 at n = 560),
// and the entries near the maximum are found in the same chunks.
template <typename G>
class ChunkedRows {
 public:
  static constexpr int64_t kChunk = 16;
  static constexpr float kInfinityF = std::numeric_limits<float>::infinity();

  ChunkedRows(const G* gram, int64_t n) : gram_(gram), n_(n), chunks_((n + kChunk - 1) / kChunk) {
    chunk_max_.resize(n_ * chunks_);
    order_.resize(n_ * chunks_);
    const std::vector<G> no_mask(n_, G(0));
    std::vector<uint64_t> keys(chunks_);
    for (int64_t a = 0; a < n_; ++a) {
      G* maxima = &chunk_max_[a * chunks_];
      uint32_t* order = &order_[a * chunks_];
      for (int64_t c = 0; c < chunks_; ++c) maxima[c] = masked_chunk_max(a, c, no_mask.data());
      if constexpr (std::is_same_v<G, float>) {  // unique 64-bit rank keys: no indirection in the sort
        for (int64_t c = 0; c < chunks_; ++c) keys[c] = rank_key(maxima[c], static_cast<uint32_t>(c));
        std::sort(keys.begin(), keys.end());
        for (int64_t c = 0; c < chunks_; ++c) order[c] = rank_key_index(keys[c]);
      } else {
        std::iota(order, order + chunks_, 0u);
        std::sort(order, order + chunks_, [maxima](uint32_t x, uint32_t y) { return maxima[x] > maxima[y]; });
      }
    }
  }

  // max over columns k of gram[a, k] + mask[k] (mask: 0 for members of B, -inf otherwise).
  G masked_max(int64_t a, const G* mask) const {
    G best = -std::numeric_limits<G>::infinity();
    for (int64_t t = 0; t < chunks_; ++t) {
      const int64_t c = order_[a * chunks_ + t];
      if (!(chunk_max_[a * chunks_ + c] > best)) break;  // no entry of this chunk or a later one beats best
      best = std::max(best, masked_chunk_max(a, c, mask));
    }
    return best;
  }

  // Appends every column k with gram[a, k] + mask[k] >= floor_value (in float64) to `out`.
  void masked_at_least(int64_t a, const G* mask, double floor_value, std::vector<int32_t>& out) const {
    // for float: v >= floor_value exactly when v >= floor_value rounded up to a float
    float floor_float = static_cast<float>(floor_value);
    if (static_cast<double>(floor_float) < floor_value) floor_float = std::nextafter(floor_float, kInfinityF);
    for (int64_t t = 0; t < chunks_; ++t) {
      const int64_t c = order_[a * chunks_ + t];
      if (static_cast<double>(chunk_max_[a * chunks_ + c]) < floor_value) break;
      chunk_at_least(a, c, mask, floor_value, floor_float, out);
    }
  }

 private:
  // Appends the columns k of chunk c with gram[a, k] + mask[k] >= floor_value (floor_float: it rounded up).
  void chunk_at_least(int64_t a, int64_t c, const G* mask, double floor_value, float floor_float,
                      std::vector<int32_t>& out) const {
    const G* row = gram_ + a * n_;
    const int64_t k0 = c * kChunk;
    if constexpr (std::is_same_v<G, float>) {
      if (k0 + kChunk <= n_ && !std::isnan(floor_value)) {  // 4 vectors of 4 lanes, then the set lanes in order
        typedef float f4 __attribute__((vector_size(16)));
        typedef int32_t i4 __attribute__((vector_size(16)));
        const f4 bound = {floor_float, floor_float, floor_float, floor_float};
        i4 hit[4];
        for (int l = 0; l < 4; ++l) {
          f4 r, q;
          std::memcpy(&r, row + k0 + 4 * l, sizeof r);
          std::memcpy(&q, mask + k0 + 4 * l, sizeof q);
          hit[l] = (r + q) >= bound;
        }
        const i4 any = (hit[0] | hit[1]) | (hit[2] | hit[3]);
        if ((any[0] | any[1] | any[2] | any[3]) == 0) return;
        for (int l = 0; l < 4; ++l) {
          for (int e = 0; e < 4; ++e) {
            if (hit[l][e] != 0) out.push_back(static_cast<int32_t>(k0 + 4 * l + e));
          }
        }
        return;
      }
    }
    for (int64_t k = k0; k < std::min(n_, k0 + kChunk); ++k) {
      if (static_cast<double>(row[k] + mask[k]) >= floor_value) out.push_back(static_cast<int32_t>(k));
    }
  }

  G masked_chunk_max(int64_t a, int64_t c, const G* mask) const {
    const G* row = gram_ + a * n_;
    const int64_t k0 = c * kChunk;
    if constexpr (std::is_same_v<G, float>) {
      if (k0 + kChunk <= n_) {  // 4 vectors of 4 lanes (GCC / Clang vector extension: SSE, NEON)
        typedef float f4 __attribute__((vector_size(16)));
        f4 lane[4];
        for (int l = 0; l < 4; ++l) {
          f4 r, q;
          std::memcpy(&r, row + k0 + 4 * l, sizeof r);
          std::memcpy(&q, mask + k0 + 4 * l, sizeof q);
          lane[l] = r + q;
        }
        const f4 x = lane[0] > lane[1] ? lane[0] : lane[1], y = lane[2] > lane[3] ? lane[2] : lane[3];
        const f4 v = x > y ? x : y;
        return std::max(std::max(v[0], v[1]), std::max(v[2], v[3]));
      }
    }
    G m = -std::numeric_limits<G>::infinity();
    for (int64_t k = k0; k < std::min(n_, k0 + kChunk); ++k) {
      const G v = row[k] + mask[k];
      m = v > m ? v : m;
    }
    return m;
  }

  const G* gram_;
  int64_t n_, chunks_;
  std::vector<G> chunk_max_;      // [n, chunks]: the maximum of each chunk of each row
  std::vector<uint32_t> order_;   // [n, chunks]: each row's chunks, largest maximum first
};

}  // namespace vtprune::cpu
