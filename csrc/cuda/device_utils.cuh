// Small device helpers shared by the CUDA kernels: dtype widening, warp reductions, launch status.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace vtprune {
namespace cuda {

constexpr unsigned kFullWarp = 0xFFFFFFFFu;

// Scores are compared as float: widening fp16 / bf16 is exact, so rankings match the input dtype.
// (Explicit intrinsics: torch builds CUDA code with __CUDA_NO_HALF_CONVERSIONS__.)
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Exact widening to float64 (weights of allocate_budget).
__device__ __forceinline__ double to_double(double v) { return v; }
template <typename T>
__device__ __forceinline__ double to_double(T v) {
  return static_cast<double>(to_float(v));
}

__host__ __forceinline__ cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// nullptr when the last launch succeeded, else its error string.
__host__ inline const char* launch_status() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

// Applies MACRO to every score dtype (explicit instantiation of the launchers).
#define VTPRUNE_FOR_SCORE_TYPES(MACRO) MACRO(float) MACRO(__half) MACRO(__nv_bfloat16)

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace cuda
}  // namespace vtprune
