// Run-time dispatch of CPU kernels by instruction set, the way ATen does with its CPU capability
// builds: a kernel source is compiled once per capability with that capability's compiler
// flags, and one copy is picked when the op runs from the CPU's features
// (cpu/capability/cpu_capability.h).
//
// The pattern (setup.py: CPU_DISPATCHED_SOURCES lists the sources):
//
//   // my_kernel.h: plain C++ (no torch headers), shared by the op and the dispatched source
//   struct MyKernel { void (*run)(const float*, int64_t); };
//   VTPRUNE_DECLARE_CPU_DISPATCH(MyKernel, my_kernel)
//
//   // my_kernel.cpp: listed in CPU_DISPATCHED_SOURCES, compiled once per capability
//   #include "cpu/capability/vec.h"   // Vec: AVX-512, AVX2 or portable, by the unit's flags
//   namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS {
//   namespace { void run(const float* x, int64_t n) { ... Vec ... } }
//   const MyKernel my_kernel{run};
//   }
//
//   // the op (an ordinary source, compiled once with the user's flags)
//   my_kernel_for(active_cpu_capability()).run(x, n);
//
// Everything a dispatched source defines must live in its capability namespace (or an
// anonymous one inside it) and it should not instantiate inline templates shared with other
// sources (e.g. from <algorithm>): the linker keeps one copy of such functions, which could be
// the AVX-512 one.
//
// setup.py defines, for the whole extension, VTPRUNE_CPU_HAVE_AVX2 / VTPRUNE_CPU_HAVE_AVX512 when
// it built those copies (x86-64 only), and for each dispatched compilation VTPRUNE_CPU_CAPABILITY
// (default, avx2 or avx512).
#pragma once

#include <stdexcept>

#include "cpu/capability/cpu_capability.h"

#define VTPRUNE_CPU_CONCAT_(a, b) a##b
#define VTPRUNE_CPU_CONCAT(a, b) VTPRUNE_CPU_CONCAT_(a, b)

#ifdef VTPRUNE_CPU_CAPABILITY
// Inside a dispatched compilation: the namespace of this copy and its number (0, 1, 2).
#define VTPRUNE_CPU_CAPABILITY_NS VTPRUNE_CPU_CONCAT(cap_, VTPRUNE_CPU_CAPABILITY)
#define VTPRUNE_CPU_ID_default 0
#define VTPRUNE_CPU_ID_avx2 1
#define VTPRUNE_CPU_ID_avx512 2
#define VTPRUNE_CPU_CAPABILITY_ID VTPRUNE_CPU_CONCAT(VTPRUNE_CPU_ID_, VTPRUNE_CPU_CAPABILITY)
// the copy being compiled gets external linkage whatever VTPRUNE_CPU_HAVE_* say
#define VTPRUNE_CPU_DECLARE_THIS(Table, name) \
  namespace VTPRUNE_CPU_CAPABILITY_NS {       \
  extern const Table name;                    \
  }
#else
#define VTPRUNE_CPU_DECLARE_THIS(Table, name)
#endif

#ifdef VTPRUNE_CPU_HAVE_AVX2
#define VTPRUNE_CPU_IF_AVX2(...) __VA_ARGS__
#else
#define VTPRUNE_CPU_IF_AVX2(...)
#endif
#ifdef VTPRUNE_CPU_HAVE_AVX512
#define VTPRUNE_CPU_IF_AVX512(...) __VA_ARGS__
#else
#define VTPRUNE_CPU_IF_AVX512(...)
#endif

// Declares `const Table name` in every built capability namespace and
// `const Table& name_for(CpuCapability)`, which returns the copy of that capability.
#define VTPRUNE_DECLARE_CPU_DISPATCH(Table, name)                                    \
  namespace cap_default {                                                           \
  extern const Table name;                                                          \
  }                                                                                 \
  VTPRUNE_CPU_IF_AVX2(namespace cap_avx2 { extern const Table name; })               \
  VTPRUNE_CPU_IF_AVX512(namespace cap_avx512 { extern const Table name; })           \
  VTPRUNE_CPU_DECLARE_THIS(Table, name)                                             \
  inline const Table& name##_for(CpuCapability capability) {                        \
    switch (capability) {                                                           \
      VTPRUNE_CPU_IF_AVX512(case CpuCapability::kAvx512 : return cap_avx512::name;)  \
      VTPRUNE_CPU_IF_AVX2(case CpuCapability::kAvx2 : return cap_avx2::name;)        \
      case CpuCapability::kDefault:                                                 \
        return cap_default::name;                                                   \
      default:                                                                      \
        throw std::logic_error("vtprune: CPU capability not built into this library"); \
    }                                                                               \
  }
