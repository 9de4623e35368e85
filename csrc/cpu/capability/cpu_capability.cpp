// CPU feature detection, the VTPRUNE_CPU_CAPABILITY override and the torch.ops.vtprune queries
// (see cpu_capability.h).
#include "cpu/capability/cpu_capability.h"

#include <torch/library.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#define VTPRUNE_CPU_X86 1
#if defined(_MSC_VER)
#include <immintrin.h>
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace vtprune::cpu {
namespace {

constexpr CpuCapability kAll[] = {CpuCapability::kDefault, CpuCapability::kAvx2, CpuCapability::kAvx512};

bool built(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::kDefault:
      return true;
    case CpuCapability::kAvx2:
#ifdef VTPRUNE_CPU_HAVE_AVX2
      return true;
#else
      return false;
#endif
    case CpuCapability::kAvx512:
#ifdef VTPRUNE_CPU_HAVE_AVX512
      return true;
#else
      return false;
#endif
  }
  return false;
}

#ifdef VTPRUNE_CPU_X86
struct CpuidRegs {
  uint32_t a = 0, b = 0, c = 0, d = 0;
};

CpuidRegs cpuid(uint32_t leaf, uint32_t subleaf) {
  CpuidRegs r;
#if defined(_MSC_VER)
  int out[4];
  __cpuidex(out, static_cast<int>(leaf), static_cast<int>(subleaf));
  r = {static_cast<uint32_t>(out[0]), static_cast<uint32_t>(out[1]), static_cast<uint32_t>(out[2]),
       static_cast<uint32_t>(out[3])};
#else
  __cpuid_count(leaf, subleaf, r.a, r.b, r.c, r.d);
#endif
  return r;
}

uint64_t xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
#endif
}

bool bit(uint32_t reg, int i) { return (reg >> i) & 1u; }

// The highest capability the CPU and the OS support (regardless of what is built).
CpuCapability hardware_capability() {
  if (cpuid(0, 0).a < 7) return CpuCapability::kDefault;
  const CpuidRegs l1 = cpuid(1, 0), l7 = cpuid(7, 0);
  const bool osxsave = bit(l1.c, 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_state = (xcr0 & 0x6) == 0x6;     // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool avx2 = ymm_state && bit(l1.c, 28) && bit(l1.c, 12) && bit(l1.c, 29) && bit(l7.b, 5);  // AVX FMA F16C AVX2
  const bool avx512 = avx2 && zmm_state && bit(l7.b, 16) && bit(l7.b, 17) && bit(l7.b, 30) && bit(l7.b, 31);  // F DQ BW VL
  if (avx512) return CpuCapability::kAvx512;
  if (avx2) return CpuCapability::kAvx2;
  return CpuCapability::kDefault;
}
#else
CpuCapability hardware_capability() { return CpuCapability::kDefault; }
#endif

CpuCapability highest_supported() {
  const CpuCapability hw = hardware_capability();
  CpuCapability best = CpuCapability::kDefault;
  for (CpuCapability c : kAll) {
    if (built(c) && static_cast<int>(c) <= static_cast<int>(hw)) best = c;
  }
  return best;
}

bool parse(const std::string& name, CpuCapability& out) {
  for (CpuCapability c : kAll) {
    if (name == capability_name(c)) {
      out = c;
      return true;
    }
  }
  return false;
}

std::string supported_names() {
  std::string names;
  for (CpuCapability c : supported_cpu_capabilities()) names += std::string(names.empty() ? "" : ", ") + capability_name(c);
  return names;
}

// -1 until first use; then the active capability.
std::atomic<int> g_active{-1};

}  // namespace

const char* capability_name(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::kDefault:
      return "default";
    case CpuCapability::kAvx2:
      return "avx2";
    case CpuCapability::kAvx512:
      return "avx512";
  }
  return "unknown";
}

std::vector<CpuCapability> supported_cpu_capabilities() {
  std::vector<CpuCapability> out;
  const CpuCapability best = highest_supported();
  for (CpuCapability c : kAll) {
    if (built(c) && static_cast<int>(c) <= static_cast<int>(best)) out.push_back(c);
  }
  return out;
}

CpuCapability active_cpu_capability() {
  const int active = g_active.load(std::memory_order_relaxed);
  if (active >= 0) return static_cast<CpuCapability>(active);
  CpuCapability chosen = highest_supported();
  if (const char* env = std::getenv("VTPRUNE_CPU_CAPABILITY"); env != nullptr && *env != '\0') {
    CpuCapability cap;
    if (!parse(env, cap)) {
      throw std::invalid_argument(std::string("VTPRUNE_CPU_CAPABILITY='") + env +
                                  "' is not one of default, avx2, avx512 (unset it to use the best this CPU supports: " +
                                  capability_name(chosen) + ")");
    }
    // a cap, as ATEN_CPU_CAPABILITY: asking for more than the CPU has gives what it has
    while (static_cast<int>(chosen) > static_cast<int>(cap) || !built(chosen)) {
      chosen = static_cast<CpuCapability>(static_cast<int>(chosen) - 1);
    }
  }
  int expected = -1;
  g_active.compare_exchange_strong(expected, static_cast<int>(chosen));
  return static_cast<CpuCapability>(g_active.load());
}

void set_cpu_capability(const std::string& name) {
  CpuCapability cap;
  if (!parse(name, cap)) {
    throw std::invalid_argument("cpu capability '" + name + "' is not one of default, avx2, avx512");
  }
  const std::vector<CpuCapability> supported = supported_cpu_capabilities();
  bool ok = false;
  for (CpuCapability c : supported) ok = ok || c == cap;
  if (!ok) {
    throw std::invalid_argument("cpu capability '" + name + "' is not supported here (built and supported by this CPU: " +
                                supported_names() + ")");
  }
  g_active.store(static_cast<int>(cap));
}

namespace {

std::string active_name() {
  try {
    return capability_name(active_cpu_capability());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

std::vector<std::string> supported_list() {
  std::vector<std::string> names;
  for (CpuCapability c : supported_cpu_capabilities()) names.emplace_back(capability_name(c));
  return names;
}

void set_by_name(const std::string& name) {
  try {
    set_cpu_capability(name);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

}  // namespace

// Queries without tensor arguments: registered as catch-all kernels (no dispatch key needed).
TORCH_LIBRARY_FRAGMENT(vtprune, m) {
  m.def("cpu_capability() -> str", &active_name);
  m.def("supported_cpu_capabilities() -> str[]", &supported_list);
  m.def("set_cpu_capability(str name) -> ()", &set_by_name);
}

}  // namespace vtprune::cpu
