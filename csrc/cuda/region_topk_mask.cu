// region_topk_mask on CUDA (docs/design.md 2.2): mark the k[b, r] best tokens of every region.
//
// Two kernels, no host sync (k is read on the device):
// 1. build_region_segments: one block per row b counts the tokens of every region, scans the counts
//    into segment offsets and scatters the token indices into their region's segment (a counting
//    sort by region id; ids outside [0, R) are left out). It also clears the row of the mask.
//    Cost O(N) per row whatever R is; a block per (b, r) scanning the whole row would cost O(R * N),
//    which is quadratic for the many small regions (PTP tiles, 16-token regions) this op serves.
//    The order inside a segment is not deterministic (atomics) and need not be: step 2 ranks by a
//    unique key that carries the token index.
// 2. region_topk_select: one block per segment (one warp when the mean segment is small) selects the
//    k best by an MSD radix selection over rank_key(score, index) (common/sort_keys.h), which encodes
//    the tie rule: higher score first, NaN last, equal -> lower index. 8-bit passes over the value,
//    then over the index bits, stopping as soon as every remaining candidate is wanted (usually after
//    2-4 passes). Histogram atomics are aggregated per warp (__match_any_sync), so heavy ties do not
//    serialise. Segments up to 16 keys per thread are cached in shared memory; longer ones re-read
//    their scores each pass. No sort, no size limit.
// k is clamped to [0, segment size] in the kernel for memory safety only; validation is the Python
// wrapper's job (validate=True).
#include <cub/block/block_scan.cuh>

#include "common/radix_select.h"
#include "common/sort_keys.h"
#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace vtprune {
namespace cuda {
namespace {

constexpr int kBuildThreads = 512;
constexpr int kSharedRegions = 4096;  // region counters live in shared memory up to this many regions
constexpr int kKeysPerThread = 16;    // shared-memory key cache of the select kernel, per thread

struct TopkWorkspace {
  int32_t* offsets;  // [B, R + 1] segment starts of every row, then the row's member count
  int32_t* members;  // [B, N] token indices grouped by region
  int32_t* counts;   // [B, R] region counters when R > kSharedRegions, else unused
};

__host__ __device__ inline size_t topk_workspace_ints(int64_t B, int64_t N, int64_t R) {
  return static_cast<size_t>(B * (R + 1) + B * N + (R > kSharedRegions ? B * R : 0));
}

inline TopkWorkspace topk_workspace(void* base, int64_t B, int64_t N, int64_t R) {
  int32_t* p = static_cast<int32_t*>(base);
  return TopkWorkspace{p, p + B * (R + 1), R > kSharedRegions ? p + B * (R + 1) + B * N : nullptr};
}

// Adds one per active lane to counters[key] with one atomic per distinct key in the warp and
// returns the lane's slot (old value + rank among the lanes with the same key). Every lane of the
// warp must call it; inactive lanes get a meaningless value.
__device__ __forceinline__ int warp_aggregated_increment(int* counters, int key, bool active) {
  const int lane = threadIdx.x & 31;
  const unsigned peers = __match_any_sync(kFullWarp, active ? key : -1);
  const int leader = __ffs(peers) - 1;
  int base = 0;
  if (active && lane == leader) base = atomicAdd(&counters[key], __popc(peers));
  base = __shfl_sync(kFullWarp, base, leader);
  return base + __popc(peers & ((1u << lane) - 1u));
}

__global__ void __launch_bounds__(kBuildThreads)
    build_region_segments_kernel(const int64_t* __restrict__ region_ids, int64_t ids_row_stride, int N, int R,
                                 int32_t* __restrict__ offsets, int32_t* __restrict__ members,
                                 int32_t* __restrict__ global_counts, bool* __restrict__ mask) {
  using BlockScan = cub::BlockScan<int, kBuildThreads>;
  __shared__ int shared_counts[kSharedRegions];
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ int carry;

  const int b = blockIdx.x;
  const int tid = threadIdx.x;
  int* counts = R <= kSharedRegions ? shared_counts : global_counts + static_cast<int64_t>(b) * R;
  const int64_t* ids = region_ids + b * ids_row_stride;
  bool* mask_row = mask + static_cast<int64_t>(b) * N;
  int32_t* row_offsets = offsets + static_cast<int64_t>(b) * (R + 1);
  int32_t* row_members = members + static_cast<int64_t>(b) * N;

  for (int r = tid; r < R; r += kBuildThreads) counts[r] = 0;
  for (int i = tid; i < N; i += kBuildThreads) mask_row[i] = false;
  if (tid == 0) carry = 0;
  __syncthreads();

  // Count the members of every region (warp-uniform loop: the increment needs whole warps).
  for (int base = 0; base < N; base += kBuildThreads) {
    const int i = base + tid;
    const int64_t id = i < N ? ids[i] : -1;
    const bool valid = id >= 0 && id < R;
    warp_aggregated_increment(counts, valid ? static_cast<int>(id) : 0, valid);
  }
  __syncthreads();

  // Exclusive scan of the counts -> offsets; the counters become the scatter cursors.
  for (int base = 0; base < R; base += kBuildThreads) {
    const int r = base + tid;
    const int count = r < R ? counts[r] : 0;
    int start, chunk_total;
    BlockScan(scan_storage).ExclusiveSum(count, start, chunk_total);
    start += carry;
    if (r < R) {
      row_offsets[r] = start;
      counts[r] = start;
    }
    __syncthreads();  // carry read and scan storage free before either changes
    if (tid == 0) carry += chunk_total;
    __syncthreads();
  }
  if (tid == 0) row_offsets[R] = carry;

  // Scatter every valid token into its region's segment.
  for (int base = 0; base < N; base += kBuildThreads) {
    const int i = base + tid;
    const int64_t id = i < N ? ids[i] : -1;
    const bool valid = id >= 0 && id < R;
    const int slot = warp_aggregated_increment(counts, valid ? static_cast<int>(id) : 0, valid);
    if (valid) row_members[slot] = i;
  }
}

template <typename T, int kThreads>
__global__ void __launch_bounds__(kThreads)
    region_topk_select_kernel(const T* __restrict__ scores, const int64_t* __restrict__ k,
                              const int32_t* __restrict__ offsets, const int32_t* __restrict__ members, int N, int R,
                              bool* __restrict__ mask) {
  static_assert(kRadixBins % kThreads == 0 || kThreads % kRadixBins == 0, "bins must spread evenly over threads");
  constexpr int kBinsPerThread = kRadixBins >= kThreads ? kRadixBins / kThreads : 1;
  constexpr int kCache = kThreads * kKeysPerThread;
  using BlockScan = cub::BlockScan<int, kThreads>;
  __shared__ uint64_t key_cache[kCache];
  __shared__ int hist[kRadixBins];
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ RadixSelectState next_state;

  const int64_t segment = blockIdx.x;
  const int64_t b = segment / R;
  const int r = static_cast<int>(segment % R);
  const int tid = threadIdx.x;
  const int32_t* row_offsets = offsets + b * (R + 1);
  const int start = row_offsets[r];
  const int n = row_offsets[r + 1] - start;
  const int32_t* seg = members + b * N + start;
  const T* row_scores = scores + b * N;
  bool* mask_row = mask + b * N;

  RadixSelectState state = radix_select_start(n, k[b * R + r]);
  if (state.k_left == 0) return;  // block-uniform: nothing to mark (the build kernel cleared the row)

  const bool cached = n <= kCache;
  auto key_at = [&](int j) -> uint64_t {
    if (cached) return key_cache[j];
    const int index = seg[j];
    return rank_key(to_float(row_scores[index]), static_cast<uint32_t>(index));
  };
  if (cached) {
    for (int j = tid; j < n; j += kThreads) {
      const int index = seg[j];
      key_cache[j] = rank_key(to_float(row_scores[index]), static_cast<uint32_t>(index));
    }
    __syncthreads();
  }

  for (int shift = radix_select_next_shift(-1, N); shift >= 0 && !radix_select_done(state);
       shift = radix_select_next_shift(shift, N)) {
    for (int d = tid; d < kRadixBins; d += kThreads) hist[d] = 0;
    __syncthreads();
    for (int base = 0; base < n; base += kThreads) {  // warp-uniform: ties share one atomic per warp
      const int j = base + tid;
      const uint64_t key = j < n ? key_at(j) : 0;
      const bool counted = j < n && radix_select_is_candidate(state, key);
      warp_aggregated_increment(hist, radix_digit(key, shift), counted);
    }
    __syncthreads();
    int count[kBinsPerThread], below[kBinsPerThread];
    const int first_bin = tid * kBinsPerThread;
#pragma unroll
    for (int i = 0; i < kBinsPerThread; ++i) count[i] = first_bin + i < kRadixBins ? hist[first_bin + i] : 0;
    BlockScan(scan_storage).ExclusiveSum(count, below);
#pragma unroll
    for (int i = 0; i < kBinsPerThread; ++i) {
      if (first_bin + i < kRadixBins && radix_select_is_pivot_digit(state, below[i], count[i])) {
        RadixSelectState s = state;  // exactly one bin holds the pivot
        radix_select_advance(s, shift, first_bin + i, below[i], count[i]);
        next_state = s;
      }
    }
    __syncthreads();
    state = next_state;
  }

  for (int j = tid; j < n; j += kThreads) {
    const uint64_t key = key_at(j);
    if (radix_select_selected(state, key)) mask_row[rank_key_index(key)] = true;
  }
}

template <typename T, int kThreads>
void launch_select(const T* scores, const int64_t* k, const TopkWorkspace& ws, int64_t B, int64_t N, int64_t R,
                   bool* mask, cudaStream_t stream) {
  region_topk_select_kernel<T, kThreads><<<static_cast<unsigned>(B * R), kThreads, 0, stream>>>(
      scores, k, ws.offsets, ws.members, static_cast<int>(N), static_cast<int>(R), mask);
}

}  // namespace

size_t region_topk_mask_workspace_bytes(int64_t B, int64_t N, int64_t R) {
  return topk_workspace_ints(B, N, R) * sizeof(int32_t);
}

template <typename T>
const char* launch_region_topk_mask(const T* scores, const int64_t* region_ids, int64_t ids_row_stride,
                                    const int64_t* k, int64_t B, int64_t N, int64_t R, void* workspace, bool* mask,
                                    void* stream) {
  if (B == 0 || N == 0) return nullptr;
  const TopkWorkspace ws = topk_workspace(workspace, B, N, R);
  const cudaStream_t s = as_stream(stream);
  build_region_segments_kernel<<<static_cast<unsigned>(B), kBuildThreads, 0, s>>>(
      region_ids, ids_row_stride, static_cast<int>(N), static_cast<int>(R), ws.offsets, ws.members, ws.counts, mask);
  if (const char* err = launch_status()) return err;
  if (R == 0) return nullptr;
  // A warp per segment when segments are small on average, else 256 threads.
  if (N <= 128 * R) {
    launch_select<T, 32>(scores, k, ws, B, N, R, mask, s);
  } else {
    launch_select<T, 256>(scores, k, ws, B, N, R, mask, s);
  }
  return launch_status();
}

#define VTPRUNE_INSTANTIATE(T)                                                                                \
  template const char* launch_region_topk_mask<T>(const T*, const int64_t*, int64_t, const int64_t*, int64_t, \
                                                  int64_t, int64_t, void*, bool*, void*);
VTPRUNE_FOR_SCORE_TYPES(VTPRUNE_INSTANTIATE)
#undef VTPRUNE_INSTANTIATE

}  // namespace cuda
}  // namespace vtprune
