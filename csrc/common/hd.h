// VTPRUNE_HD marks logic shared by the CPU kernels, the CUDA kernels and the host unit tests
// (csrc/tests): compiled as __host__ __device__ by nvcc, as plain inline C++ elsewhere.
#pragma once

#if defined(__CUDACC__)
#define VTPRUNE_HD __host__ __device__ __forceinline__
#else
#define VTPRUNE_HD inline
#endif
