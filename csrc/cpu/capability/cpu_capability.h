// Which copy of the dispatched CPU kernels runs (see dispatch.h).
//
// The active capability is the highest one that is built into the library and that the CPU and
// the OS support (cpuid + xgetbv: AVX2 needs AVX2, FMA, F16C and saved YMM state; AVX-512 needs
// AVX-512 F/BW/VL/DQ and saved ZMM state), capped by the environment variable
// VTPRUNE_CPU_CAPABILITY=default|avx2|avx512 when it is set (read once, like ATEN_CPU_CAPABILITY;
// an unknown value is an error when a kernel runs). Tests and benchmarks switch between the
// supported capabilities at run time with set_cpu_capability.
#pragma once

#include <string>
#include <vector>

namespace vtprune::cpu {

enum class CpuCapability : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

const char* capability_name(CpuCapability capability);

// Every capability this library can run here, lowest first ("default" always).
std::vector<CpuCapability> supported_cpu_capabilities();

// The capability dispatched kernels use now. Throws std::invalid_argument when
// VTPRUNE_CPU_CAPABILITY holds an unknown name.
CpuCapability active_cpu_capability();

// Makes `name` the active capability; throws std::invalid_argument naming the supported ones
// when it is unknown or not supported here.
void set_cpu_capability(const std::string& name);

}  // namespace vtprune::cpu
