// Host entry points of the CUDA kernels of the selection ops (docs/design.md 2.2-2.5), free of CUDA and
// torch types so that the torch binding (binding.cpp) can include it with any host compiler.
//
// Conventions of every launcher:
// - raw device pointers to contiguous row-major tensors; `stream` is a cudaStream_t;
// - it only enqueues work on `stream`: it never synchronises with the host and reads no device data;
// - it returns nullptr on success, else the CUDA error string of the failed launch;
// - it is memory-safe for any values: out-of-range ids are ignored, counts are clamped. Value
//   checks (which need a host sync) are the Python wrapper's job (vtprune_kernels.ops, validate=True).
// Score dtypes T: float, __half, __nv_bfloat16 (instantiated in the .cu files).
#pragma once

#include <cstddef>
#include <cstdint>

struct __half;         // the CUDA types, declared as cuda_fp16.h / cuda_bf16.h declare them
struct __nv_bfloat16;

namespace vtprune {
namespace cuda {

// ---- region_topk_mask (region_topk_mask.cu) ----
// Workspace (device, bytes): segment offsets and the region-sorted token order of every row.
size_t region_topk_mask_workspace_bytes(int64_t B, int64_t N, int64_t R);

// scores [B, N]; region_ids [B, N] (ids_row_stride = N) or [N] (ids_row_stride = 0); k [B, R];
// mask [B, N] (written entirely). N < 2^31, B * R < 2^31.
template <typename T>
const char* launch_region_topk_mask(const T* scores, const int64_t* region_ids, int64_t ids_row_stride,
                                    const int64_t* k, int64_t B, int64_t N, int64_t R, void* workspace, bool* mask,
                                    void* stream);

// ---- window_argmax_mask (window_argmax_mask.cu) ----
// scores, exclude, mask [B, H, W]; window (wh, ww) >= 1. mask is written entirely.
template <typename T>
const char* launch_window_argmax_mask(const T* scores, const bool* exclude, int64_t B, int64_t H, int64_t W,
                                      int64_t wh, int64_t ww, bool* mask, void* stream);

// ---- cosine_dedup_mask (cosine_gram.cu, cosine_dedup_mask.cu) ----
// x [B, N, C] (contiguous); norm2 float64 [B, Np] scratch; gram float64 [B, Np, Np]: the cosines of
// common/cosine.h, rows and columns >= N zero vectors. B * (ceil(Np / 64) + 1)^2 / 2 < 2^31.
template <typename T>
const char* launch_cosine_gram(const T* x, int64_t B, int64_t N, int64_t C, int64_t Np, double* norm2, double* gram,
                               void* stream);

// Rows of the cosine Gram matrix are padded to Np = dedup_gram_size(N) columns (padding columns
// never hold a member of B; padding rows are never read).
int64_t dedup_gram_size(int64_t N);

// Global scratch (bytes) the kernel needs for N tokens per image on the current device: 0 when
// the per-image scratch fits in shared memory.
size_t cosine_dedup_mask_workspace_bytes(int64_t B, int64_t N);

// sorted_values float64 [B, Np, Np]: every row of the cosine Gram matrix, NaN cosines replaced by
// +inf (the NaN marker, common/dedup.h), sorted descending; sorted_columns int32 [B, Np, Np]: their
// column indices. candidates [B, N]; order_scores [B, N]; n_keep [B]; mask [B, N] (written
// entirely); workspace: cosine_dedup_mask_workspace_bytes(B, N) bytes (may be null when 0).
// One block per image (gridDim.x = B < 2^31).
template <typename T>
const char* launch_cosine_dedup_mask(const double* sorted_values, const int32_t* sorted_columns,
                                     const bool* candidates, const T* order_scores, const int64_t* n_keep,
                                     int64_t step, int64_t B, int64_t N, void* workspace, bool* mask, void* stream);

// ---- allocate_budget (allocate_budget.cu) ----
// Workspace (device, bytes) for rows of S regions: 0 when the per-region scratch fits the thread.
size_t allocate_budget_workspace_bytes(int64_t B, int64_t S);

// weights [B, S] (W: float, double, __half, __nv_bfloat16); total [B]; capacity [B, S]; out [B, S];
// workspace: allocate_budget_workspace_bytes(B, S) bytes (may be null when 0). S < 2^31.
template <typename W>
const char* launch_allocate_budget(const W* weights, const int64_t* total, const int64_t* capacity, int64_t B,
                                   int64_t S, void* workspace, int64_t* out, void* stream);

}  // namespace cuda
}  // namespace vtprune
