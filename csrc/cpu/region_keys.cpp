// Vectorised loops over a region's rank keys, one copy per x86 instruction set (see region_keys.h).
#include "cpu/region_keys.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <string>

// GCC / Clang (as the rest of the CPU kernels): the loops are inlined into one function per
// instruction set (target attribute), picked at run time on x86-64.
#define VTPRUNE_LOOP_BODY inline __attribute__((always_inline))

namespace vtprune::cpu {
namespace {

VTPRUNE_LOOP_BODY void float_keys_body(const float* __restrict scores, int64_t n, uint32_t* __restrict keys,
                                           uint32_t* all_and, uint32_t* all_or) {
  uint32_t a = ~0u, o = 0u;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, scores + i, sizeof bits);
    const uint32_t key = descending_key_of_bits(bits);
    keys[i] = key;
    a &= key;
    o |= key;
  }
  *all_and = a;
  *all_or = o;
}

VTPRUNE_LOOP_BODY void mark_under_body(const uint32_t* __restrict keys, int64_t n, uint32_t key_mask,
                                           uint32_t prefix, bool* __restrict mask) {
  // signed compares after flipping the sign bit: one instruction on every x86 vector ISA
  const int32_t bound = static_cast<int32_t>(prefix ^ 0x80000000u);
  for (int64_t i = 0; i < n; ++i) mask[i] = static_cast<int32_t>((keys[i] & key_mask) ^ 0x80000000u) < bound;
}

// How many of keys[0..n) are < bound, counted in 32-bit lanes.
VTPRUNE_LOOP_BODY int64_t count_below(const uint32_t* keys, int64_t n, uint32_t bound) {
  const int32_t b = static_cast<int32_t>(bound ^ 0x80000000u);
  int32_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += static_cast<int32_t>(keys[i] ^ 0x80000000u) < b;
  return count;
}

// The k-th smallest key lies in [lo, lo + width), with `below` keys under lo and `upto` keys under
// lo + width. Halve the range until every key in it is wanted (upto == k: the keys under
// lo + width are the k smallest) or it is one key value (the first k - below keys equal to it).
VTPRUNE_LOOP_BODY Threshold bisect_body(const uint32_t* keys, int64_t n, int64_t k, uint32_t all_and,
                                            uint32_t all_or) {
  Threshold t;
  t.mask = ~0u;
  const uint32_t differing = all_and ^ all_or;
  if (differing == 0) {  // one key value: the first k keys
    t.prefix = all_and;
    t.quota = k;
    return t;
  }
  const int top = 31 - __builtin_clz(differing);  // the keys agree above bit `top`
  const uint64_t low_bits = (uint64_t{2} << top) - 1;                    // bits 0..top
  uint64_t lo = all_and & ~low_bits, width = low_bits + 1;
  int64_t below = 0, upto = n;
  while (upto != k && width > 1) {
    const uint64_t half = width / 2;
    const int64_t count = count_below(keys, n, static_cast<uint32_t>(lo + half));
    const bool lower = count >= k;  // the k-th smallest key is under lo + half
    upto = lower ? count : upto;
    below = lower ? below : count;
    lo = lower ? lo : lo + half;
    width = lower ? half : width - half;
  }
  if (upto == k) {  // lo + width < 2^32: upto < n only after a step that lowered the top
    t.prefix = static_cast<uint32_t>(lo + width);
  } else {
    t.prefix = static_cast<uint32_t>(lo);
    t.quota = k - below;
  }
  return t;
}

struct RegionKeyLoops {
  void (*float_keys)(const float*, int64_t, uint32_t*, uint32_t*, uint32_t*);
  void (*mark_under)(const uint32_t*, int64_t, uint32_t, uint32_t, bool*);
  Threshold (*bisect)(const uint32_t*, int64_t, int64_t, uint32_t, uint32_t);
};

#define VTPRUNE_REGION_KEY_LOOPS(NAME, TARGET)                                                              \
  TARGET void NAME##_float_keys(const float* s, int64_t n, uint32_t* keys, uint32_t* a, uint32_t* o) {      \
    float_keys_body(s, n, keys, a, o);                                                                      \
  }                                                                                                         \
  TARGET void NAME##_mark_under(const uint32_t* keys, int64_t n, uint32_t m, uint32_t p, bool* mask) {      \
    mark_under_body(keys, n, m, p, mask);                                                                   \
  }                                                                                                         \
  TARGET Threshold NAME##_bisect(const uint32_t* keys, int64_t n, int64_t k, uint32_t a, uint32_t o) {      \
    return bisect_body(keys, n, k, a, o);                                                                   \
  }                                                                                                         \
  constexpr RegionKeyLoops NAME##_loops{NAME##_float_keys, NAME##_mark_under, NAME##_bisect};

VTPRUNE_REGION_KEY_LOOPS(generic, )
#if defined(__x86_64__)
VTPRUNE_REGION_KEY_LOOPS(avx2, __attribute__((target("avx2"))))
VTPRUNE_REGION_KEY_LOOPS(avx512, __attribute__((target("avx512f,avx512vl,avx512bw,avx2"))))
#endif

// The loops of the best instruction set this CPU has, capped by VTPRUNE_CPU_CAPABILITY
// (default | avx2 | avx512, as ATEN_CPU_CAPABILITY caps ATen's kernels; tests use it to run every copy).
const RegionKeyLoops& loops() {
  static const RegionKeyLoops chosen = [] {
    const char* env = std::getenv("VTPRUNE_CPU_CAPABILITY");
    const std::string cap = env == nullptr || *env == '\0' ? "avx512" : env;
    TORCH_CHECK_VALUE(cap == "default" || cap == "avx2" || cap == "avx512", "VTPRUNE_CPU_CAPABILITY='", cap,
                      "' is not one of default, avx2, avx512 (unset it to use the best this CPU supports)");
#if defined(__x86_64__)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512bw");
    if (avx512 && cap == "avx512") return avx512_loops;
    if (avx2 && cap != "default") return avx2_loops;
#endif
    return generic_loops;
  }();
  return chosen;
}

}  // namespace

void float_keys(const float* scores, int64_t n, uint32_t* keys, uint32_t* all_and, uint32_t* all_or) {
  loops().float_keys(scores, n, keys, all_and, all_or);
}

void mark_under(const uint32_t* keys, int64_t n, uint32_t key_mask, uint32_t prefix, bool* mask) {
  loops().mark_under(keys, n, key_mask, prefix, mask);
}

Threshold bisect_threshold(const uint32_t* keys, int64_t n, int64_t k, uint32_t all_and, uint32_t all_or) {
  return loops().bisect(keys, n, k, all_and, all_or);
}

}  // namespace vtprune::cpu
