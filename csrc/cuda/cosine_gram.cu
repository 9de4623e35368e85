// The cosine Gram matrix of cosine_dedup_mask on CUDA: G[b, i, j] = cos(x_bi, x_bj) of
// common/cosine.h for i, j < Np (rows i >= N are zero vectors: cosine 0), float64.
//
// The cosine is defined by one summation order (k = 0, 1, ..., C-1 in float64), which a cuBLAS GEMM
// does not keep, so two kernels compute it here:
// 1. cosine_norms_kernel: dot(x_i, x_i) per row, one thread per row, k in order.
// 2. cosine_gram_kernel: 64 x 64 tiles of dot(x_i, x_j), 256 threads of 4 x 4 outputs, only the tiles
//    on and above the diagonal (the matrix is exactly symmetric; each tile also writes its mirror).
//    Every output is one thread's fma chain over k in order; the products of widened float32 /
//    float16 / bfloat16 values are exact in float64, so fma(a, b, acc) == acc + a * b, the CPU's sum
//    bit for bit. The epilogue is cosine_from_dots, the CPU's formula.
// Inputs are staged through shared memory 16 k at a time, widened to float64.
#include "common/cosine.h"
#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace vtprune {
namespace cuda {
namespace {

constexpr int kTile = kCosineGramTile;  // output rows and columns per block
constexpr int kDepth = 16;     // k per shared-memory stage
constexpr int kThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each
constexpr int kNormThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    cosine_norms_kernel(const T* __restrict__ x, int64_t B, int64_t N, int64_t C, int64_t Np,
                        double* __restrict__ norm2) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kNormThreads + threadIdx.x;
  if (t >= B * Np) return;
  const int64_t b = t / Np, i = t % Np;
  double acc = 0.0;
  if (i < N) {
    const T* row = x + (b * N + i) * C;
    for (int64_t k = 0; k < C; ++k) {
      const double v = to_double(row[k]);
      acc = fma(v, v, acc);
    }
  }
  norm2[t] = acc;
}

// Loads rows [r0, r0 + 64) x k [k0, k0 + kDepth) of image x_b (zero outside N x C) into tile[k][row].
template <typename T>
__device__ __forceinline__ void load_stage(const T* __restrict__ x_b, int64_t N, int64_t C, int64_t r0, int64_t k0,
                                           double (*tile)[kTile + 1]) {
  for (int e = threadIdx.x; e < kTile * kDepth; e += kThreads) {
    const int row = e / kDepth, kk = e % kDepth;  // consecutive threads: consecutive k of one row
    const int64_t r = r0 + row, k = k0 + kk;
    tile[kk][row] = r < N && k < C ? to_double(x_b[r * C + k]) : 0.0;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cosine_gram_kernel(const T* __restrict__ x, const double* __restrict__ norm2, int64_t N, int64_t C, int64_t Np,
                       double* __restrict__ gram) {
  __shared__ double rows_i[kDepth][kTile + 1];
  __shared__ double rows_j[kDepth][kTile + 1];
  const int64_t n_tiles = (Np + kTile - 1) / kTile, n_pairs = n_tiles * (n_tiles + 1) / 2;
  const int64_t b = blockIdx.x / n_pairs;  // one image after the other: blocks [b * n_pairs, (b + 1) * n_pairs)
  int64_t ti, tj;
  upper_triangle_pair(blockIdx.x % n_pairs, n_tiles, &ti, &tj);
  const T* x_b = x + b * N * C;
  const int64_t i0 = ti * kTile, j0 = tj * kTile;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // outputs (ty + 16 a, tx + 16 c)

  double acc[4][4];
#pragma unroll
  for (int a = 0; a < 4; ++a) {
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[a][c] = 0.0;
  }
  for (int64_t k0 = 0; k0 < C; k0 += kDepth) {
    load_stage(x_b, N, C, i0, k0, rows_i);
    load_stage(x_b, N, C, j0, k0, rows_j);
    __syncthreads();
    const int depth = C - k0 < kDepth ? static_cast<int>(C - k0) : kDepth;  // no extra terms past C
    for (int kk = 0; kk < depth; ++kk) {
      double xi[4], xj[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        xi[a] = rows_i[kk][ty + 16 * a];
        xj[a] = rows_j[kk][tx + 16 * a];
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[a][c] = fma(xi[a], xj[c], acc[a][c]);
      }
    }
    __syncthreads();
  }
  double* g = gram + b * Np * Np;
  const double* q = norm2 + b * Np;
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int64_t i = i0 + ty + 16 * a;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t j = j0 + tx + 16 * c;
      if (i < Np && j < Np) {
        const double cosine = cosine_from_dots(acc[a][c], q[i], q[j]);
        g[i * Np + j] = cosine;
        g[j * Np + i] = cosine;
      }
    }
  }
}

}  // namespace

template <typename T>
const char* launch_cosine_gram(const T* x, int64_t B, int64_t N, int64_t C, int64_t Np, double* norm2, double* gram,
                               void* stream) {
  if (B == 0 || Np == 0) return nullptr;
  const cudaStream_t s = as_stream(stream);
  cosine_norms_kernel<T><<<static_cast<unsigned>(ceil_div(B * Np, kNormThreads)), kNormThreads, 0, s>>>(
      x, B, N, C, Np, norm2);
  if (const char* err = launch_status()) return err;
  const int64_t n_tiles = ceil_div(Np, kTile);
  const int64_t blocks = B * n_tiles * (n_tiles + 1) / 2;  // the binding keeps it below 2^31
  cosine_gram_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(x, norm2, N, C, Np, gram);
  return launch_status();
}

#define VTPRUNE_INSTANTIATE(T)                                                                              \
  template const char* launch_cosine_gram<T>(const T*, int64_t, int64_t, int64_t, int64_t, double*, double*, \
                                             void*);
VTPRUNE_FOR_SCORE_TYPES(VTPRUNE_INSTANTIATE)
#undef VTPRUNE_INSTANTIATE

}  // namespace cuda
}  // namespace vtprune
