// cosine_dedup_mask on CUDA (docs/design.md 2.4): VisPruner's diverse tokens, every round on the device.
//
// The binding computes the cosine Gram matrix G once (cosine_gram.cu: the float64 cosines of
// common/cosine.h, which the CPU kernel and the reference rank by too), replaces its NaNs by the +inf "NaN marker" and sorts every row descending (torch.sort): values V
// [B, Np, Np] and their columns C [B, Np, Np] (int32). Then m(a) = max over b in B of G[a, b] is
// V[a, j] for the first j whose column C[a, j] is in B (common/dedup.h): a NaN among B sorts first
// as the marker and makes m NaN (torch.amax semantics), and an empty B gives -inf. A round thus
// reads a few entries per row instead of the whole row (on average Np / |B|), which makes the
// rounds cheap enough for one block per image.
//
// One persistent block (1024 threads) per image runs every round without returning to the host:
//   R0: the candidates, bitonic-sorted in shared memory by (descending_key64(order score), index).
//   each round (common/dedup.h): A = R[0::2], B = R[1::2];
//     B's members become a bit set over token indices;
//     m(a): one thread per row a scans C[a, :] 4 columns (16 bytes) at a time, the next load in
//           flight (a warp per row, 128 columns a step, once A has at most 32 members);
//     A is bitonic-sorted by (descending_key64(m), position in A): m descending, NaN last, stable;
//     R = (A ranked, minus the first `drop`) followed by B.
// Per-image scratch (sort keys and indices, two orders, the bit set: 12 * next_pow2(N) + 8 * N +
// 4 * ceil(Np / 32) bytes) lives in dynamic shared memory when it fits the device's opt-in limit
// (cudaDevAttrMaxSharedMemoryPerBlockOptin, less 1 KiB kept for the static shared memory), else in a
// global workspace from the binding. N = 8192 needs 164,864 bytes: it fits A100 (166,912) and H100
// (232,448); N = 8193 jumps to next_pow2 = 16384 and 263,180 bytes, beyond both. Above 48 KiB the
// launcher raises the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize first (per device: it
// runs under the binding's device guard).
//
// Exactness: the rounds only compare Gram entries, so the mask is a function of G alone, and G is
// bit for bit the CPU kernel's exact cosines (one summation order, IEEE operations): equal masks on
// every input. Ties between equal maxima (duplicate features) are broken by position in A, as on
// the CPU; the order of equal values within a sorted row does not matter (the first member of B
// among them has the same value).
#include <cmath>

#include "common/bitonic.h"
#include "common/dedup.h"
#include "common/sort_keys.h"
#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace vtprune {
namespace cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kDefaultSharedBytes = 48 * 1024;  // dynamic shared memory without an opt-in
constexpr int kStaticSharedReserve = 1024;      // the kernel's own static shared memory, rounded up
constexpr int kColumnsPerLoad = 4;              // sorted column indices are read as int4

// Per-image scratch, carved from one byte buffer (shared or global memory).
struct DedupScratch {
  uint64_t* keys;     // [next_pow2(N)] value keys of the entries being sorted
  uint32_t* indices;  // [next_pow2(N)] their indices (tie-break and payload)
  int32_t* order;     // [N] R: token indices in order
  int32_t* next;      // [N] the next round's R
  uint32_t* in_b;     // [Np / 32] bit set of B's token indices
};

__host__ __device__ inline int64_t gram_size(int64_t N) { return ceil_div(N, kColumnsPerLoad) * kColumnsPerLoad; }

__host__ __device__ inline int64_t in_b_words(int64_t N) { return ceil_div(gram_size(N), 32); }

__host__ __device__ inline size_t dedup_scratch_bytes(int64_t N) {
  return static_cast<size_t>(12 * next_pow2(N) + 8 * N + 4 * in_b_words(N));
}

__device__ inline DedupScratch carve_scratch(unsigned char* base, int N) {
  const int64_t P = next_pow2(N);
  DedupScratch s;
  s.keys = reinterpret_cast<uint64_t*>(base);
  s.indices = reinterpret_cast<uint32_t*>(s.keys + P);
  s.order = reinterpret_cast<int32_t*>(s.indices + P);
  s.next = s.order + N;
  s.in_b = reinterpret_cast<uint32_t*>(s.next + N);
  return s;
}

// Sorts the entries (keys[i], indices[i]), i < n, ascending by key then index; all threads call.
__device__ void block_bitonic_sort(uint64_t* keys, uint32_t* indices, int n) {
  const int64_t P = next_pow2(n);
  for (int64_t i = n + threadIdx.x; i < P; i += kThreads) {  // padding sorts after every entry
    keys[i] = ~0ull;
    indices[i] = ~0u;
  }
  __syncthreads();
  for (int64_t k = 2; k <= P; k <<= 1) {
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      for (int64_t t = threadIdx.x; t < P / 2; t += kThreads) {
        int64_t lo, hi;
        bool ascending;
        bitonic_pair(t, j, k, &lo, &hi, &ascending);
        uint64_t key_lo = keys[lo], key_hi = keys[hi];
        uint32_t index_lo = indices[lo], index_hi = indices[hi];
        bitonic_compare_exchange(key_lo, index_lo, key_hi, index_hi, ascending);
        keys[lo] = key_lo;
        keys[hi] = key_hi;
        indices[lo] = index_lo;
        indices[hi] = index_hi;
      }
      __syncthreads();
    }
  }
}

// Position (0..3) of the first of 4 columns that is in the set, or -1.
__device__ __forceinline__ int first_in_set(const uint32_t* bits, int4 cols) {
  if (dedup_in_set(bits, cols.x)) return 0;
  if (dedup_in_set(bits, cols.y)) return 1;
  if (dedup_in_set(bits, cols.z)) return 2;
  if (dedup_in_set(bits, cols.w)) return 3;
  return -1;
}

// m(a) from row a of the sorted Gram matrix: dedup_max_over_set_sorted (common/dedup.h), i.e. the
// cosine at the first column in B. One thread per row: columns read 4 at a time (int4, 16-byte
// aligned since Np % 4 == 0), the next 4 loading while these are tested.
__device__ double max_over_b_thread(const double* __restrict__ values, const int32_t* __restrict__ columns,
                                    const uint32_t* in_b, int quads) {
  const int4* columns4 = reinterpret_cast<const int4*>(columns);
  int4 next = __ldg(columns4);
  for (int q = 0; q < quads; ++q) {
    const int4 cols = next;
    if (q + 1 < quads) next = __ldg(columns4 + q + 1);
    const int hit = first_in_set(in_b, cols);
    if (hit >= 0) return dedup_gram_entry(values[4 * q + hit]);
  }
  return -INFINITY;
}

// The same with one warp per row, 128 columns per step: for the late rounds, where B is small and
// the first member lies deeper in the row. Every lane returns the result.
__device__ double max_over_b_warp(const double* __restrict__ values, const int32_t* __restrict__ columns,
                                  const uint32_t* in_b, int quads, int lane) {
  const int4* columns4 = reinterpret_cast<const int4*>(columns);
  for (int q0 = 0; q0 < quads; q0 += 32) {
    const int q = q0 + lane;
    const int hit = q < quads ? first_in_set(in_b, __ldg(columns4 + q)) : -1;
    const unsigned found = __ballot_sync(kFullWarp, hit >= 0);
    if (found) {
      const int src = __ffs(found) - 1;
      return dedup_gram_entry(values[4 * (q0 + src) + __shfl_sync(kFullWarp, hit, src)]);
    }
  }
  return -INFINITY;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cosine_dedup_kernel(const double* __restrict__ sorted_values, const int32_t* __restrict__ sorted_columns,
                        const bool* __restrict__ candidates,
                        const T* __restrict__ order_scores, const int64_t* __restrict__ n_keep, int64_t step, int N,
                        unsigned char* __restrict__ global_scratch, size_t scratch_stride, bool* __restrict__ mask) {
  extern __shared__ __align__(16) unsigned char shared_scratch[];
  __shared__ int n_candidates;

  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  DedupScratch s = carve_scratch(global_scratch ? global_scratch + b * scratch_stride : shared_scratch, N);
  const int64_t Np = gram_size(N);
  const double* V = sorted_values + b * Np * Np;
  const int32_t* C = sorted_columns + b * Np * Np;
  const bool* cand_row = candidates + b * N;
  const T* score_row = order_scores + b * N;
  bool* mask_row = mask + b * N;

  // R0: the candidates' keys in any order (one atomic per warp), then sorted.
  if (tid == 0) n_candidates = 0;
  __syncthreads();
  for (int base = 0; base < N; base += kThreads) {  // warp-uniform: ballots need whole warps
    const int i = base + tid;
    const bool is_candidate = i < N && cand_row[i];
    if (i < N) mask_row[i] = false;
    const unsigned ballot = __ballot_sync(kFullWarp, is_candidate);
    int slot = 0;
    if (lane == 0 && ballot) slot = atomicAdd(&n_candidates, __popc(ballot));
    slot = __shfl_sync(kFullWarp, slot, 0) + __popc(ballot & ((1u << lane) - 1u));
    if (is_candidate) {
      s.keys[slot] = descending_key64(static_cast<double>(to_float(score_row[i])));
      s.indices[slot] = static_cast<uint32_t>(i);
    }
  }
  __syncthreads();
  int n = n_candidates;
  block_bitonic_sort(s.keys, s.indices, n);
  for (int j = tid; j < n; j += kThreads) s.order[j] = static_cast<int32_t>(s.indices[j]);
  __syncthreads();

  const int64_t keep = n_keep[b];
  const int words = static_cast<int>(in_b_words(N));
  const int quads = static_cast<int>(Np / kColumnsPerLoad);
  DedupRound round;
  while (dedup_next_round(n, keep, step, &round)) {  // n, keep, step: block-uniform
    const int n_a = static_cast<int>(round.n_a), n_b = static_cast<int>(round.n_b);
    for (int w = tid; w < words; w += kThreads) s.in_b[w] = 0u;
    __syncthreads();
    for (int j = tid; j < n_b; j += kThreads) {
      const int t = s.order[2 * j + 1];
      atomicOr(&s.in_b[t >> 5], 1u << (t & 31));
    }
    __syncthreads();
    if (n_b == 0) {  // one token left: m = -inf
      if (tid == 0) {
        s.keys[0] = descending_key64(-INFINITY);
        s.indices[0] = 0u;
      }
    } else if (n_a <= kWarps) {  // few rows, small B: a warp per row
      for (int i = warp; i < n_a; i += kWarps) {
        const int64_t row = static_cast<int64_t>(s.order[2 * i]) * Np;
        const double m = max_over_b_warp(V + row, C + row, s.in_b, quads, lane);
        if (lane == 0) {
          s.keys[i] = descending_key64(m);
          s.indices[i] = static_cast<uint32_t>(i);
        }
      }
    } else {  // a thread per row
      for (int i = tid; i < n_a; i += kThreads) {
        const int64_t row = static_cast<int64_t>(s.order[2 * i]) * Np;
        s.keys[i] = descending_key64(max_over_b_thread(V + row, C + row, s.in_b, quads));
        s.indices[i] = static_cast<uint32_t>(i);
      }
    }
    __syncthreads();
    block_bitonic_sort(s.keys, s.indices, n_a);
    for (int q = tid; q < n_a; q += kThreads) {
      const int64_t pos = dedup_position_of_a(round, q);
      if (pos >= 0) s.next[pos] = s.order[2 * s.indices[q]];
    }
    for (int j = tid; j < n_b; j += kThreads) s.next[dedup_position_of_b(round, j)] = s.order[2 * j + 1];
    __syncthreads();
    int32_t* done = s.order;
    s.order = s.next;
    s.next = done;
    n = static_cast<int>(dedup_survivors(round));
  }
  for (int j = tid; j < n; j += kThreads) mask_row[s.order[j]] = true;
}

inline size_t scratch_stride(int64_t N) { return (dedup_scratch_bytes(N) + 255) / 256 * 256; }

// Whether the per-image scratch fits in the current device's shared memory.
inline bool scratch_fits_shared(int64_t N) {
  int device = 0, optin = kDefaultSharedBytes;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    cudaGetLastError();  // clear: fall back to the global scratch
    return false;
  }
  return dedup_scratch_bytes(N) + kStaticSharedReserve <= static_cast<size_t>(optin);
}

}  // namespace

int64_t dedup_gram_size(int64_t N) { return gram_size(N); }

size_t cosine_dedup_mask_workspace_bytes(int64_t B, int64_t N) {
  if (B == 0 || N == 0 || scratch_fits_shared(N)) return 0;
  return static_cast<size_t>(B) * scratch_stride(N);
}

template <typename T>
const char* launch_cosine_dedup_mask(const double* sorted_values, const int32_t* sorted_columns,
                                     const bool* candidates, const T* order_scores,
                                     const int64_t* n_keep, int64_t step, int64_t B, int64_t N, void* workspace,
                                     bool* mask, void* stream) {
  if (B == 0 || N == 0) return nullptr;
  const bool in_shared = scratch_fits_shared(N);
  if (!in_shared && workspace == nullptr) return "cosine_dedup_mask: the global scratch workspace is missing";
  const size_t shared_bytes = in_shared ? dedup_scratch_bytes(N) : 0;
  if (shared_bytes + kStaticSharedReserve > static_cast<size_t>(kDefaultSharedBytes)) {
    const cudaError_t err = cudaFuncSetAttribute(cosine_dedup_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(shared_bytes));
    if (err != cudaSuccess) {
      cudaGetLastError();  // consume it here: left set, a later, unrelated launch check would report it
      return cudaGetErrorString(err);
    }
  }
  cosine_dedup_kernel<T><<<static_cast<unsigned>(B), kThreads, shared_bytes, as_stream(stream)>>>(
      sorted_values, sorted_columns, candidates, order_scores, n_keep, step, static_cast<int>(N),
      in_shared ? nullptr : static_cast<unsigned char*>(workspace), scratch_stride(N), mask);
  return launch_status();
}

#define VTPRUNE_INSTANTIATE(T)                                                                          \
  template const char* launch_cosine_dedup_mask<T>(const double*, const int32_t*, const bool*, const T*, \
                                                   const int64_t*, int64_t, int64_t, int64_t, void*, bool*, void*);
VTPRUNE_FOR_SCORE_TYPES(VTPRUNE_INSTANTIATE)
#undef VTPRUNE_INSTANTIATE

}  // namespace cuda
}  // namespace vtprune
