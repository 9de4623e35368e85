// The cosine of cosine_dedup_mask (docs/design.md 2.4), one formula for every backend (CPU kernel, CUDA
// kernel, host tests; vtprune_kernels.reference.cosine_gram is its PyTorch twin):
//
//   dot(x, y)  = sum over k = 0, 1, ..., C-1 of x[k] * y[k], accumulated in float64 in that order,
//                from 0.0, on the features widened to float64 (exact). A product of two widened
//                float32 / float16 / bfloat16 values is exact in float64, so a fused multiply-add
//                and a multiply-then-add give the same sum.
//   cos(x, y)  = dot(x, y) / sqrt(max(dot(x, x), eps2) * max(dot(y, y), eps2)),   eps2 = 1e-24,
//                each operation rounded once (IEEE float64).
//
// This is F.normalize's cosine (x / max(||x||, 1e-12)) in exact arithmetic, but computed so that it
// depends only on the two vectors: identical feature vectors get bitwise-identical cosines whatever
// their positions (a GEMM's blocking would round them differently), the Gram matrix is exactly
// symmetric, and a vector's cosine with an identical one is exactly 1 (sqrt(q * q) == q in binary
// floating point, so q / sqrt(q * q) == 1), 0 for a zero vector. A NaN or inf feature makes every
// cosine of that vector NaN.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hd.h"

namespace vtprune {

constexpr double kCosineEps2 = 1e-24;  // (F.normalize's eps = 1e-12) squared
constexpr int kCosineGramTile = 64;     // output rows and columns per block of cosine_gram.cu

// cos from dot(x, y) and the squared norms dot(x, x), dot(y, y).
VTPRUNE_HD double cosine_from_dots(double xy, double xx, double yy) {
  const double nx = xx > kCosineEps2 ? xx : kCosineEps2;
  const double ny = yy > kCosineEps2 ? yy : kCosineEps2;
  const double n2 = nx * ny;  // separate statements: no contraction can fuse these
  const double n = sqrt(n2);
  return xy / n;
}

// dot(x, y) over C float64 values, in index order (the specification; the kernels interleave
// several of these sums, never reorder one).
VTPRUNE_HD double sequential_dot(const double* x, const double* y, int64_t C) {
  double acc = 0.0;
  for (int64_t k = 0; k < C; ++k) acc += x[k] * y[k];
  return acc;
}

// Pair t of the tiles on and above the diagonal of an n x n grid of tiles, row by row:
// t = 0 .. n (n + 1) / 2 - 1 -> (row, column) with row <= column (cosine_gram.cu's blocks).
VTPRUNE_HD void upper_triangle_pair(int64_t t, int64_t n, int64_t* row, int64_t* column) {
  int64_t r = 0;
  while (t >= n - r) {  // n is small (tiles per side): a short loop
    t -= n - r;
    ++r;
  }
  *row = r;
  *column = r + t;
}

}  // namespace vtprune
