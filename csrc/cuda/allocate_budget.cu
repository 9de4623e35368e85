// allocate_budget on CUDA (docs/design.md 2.5): one thread per row runs the shared exact routine
// vtprune::allocate_budget_row (common/budget.h), the same code as the CPU kernel. Its arithmetic is
// on integers (the float64 quotient estimates are corrected exactly), so both agree bit for bit.
// Per-region scratch (a state byte and a 64-bit remainder key per region) lives in the thread's
// local memory up to kLocalRegions regions, else in the workspace the binding allocates.
#include "common/budget.h"
#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace vtprune {
namespace cuda {
namespace {

constexpr int kThreads = 64;
constexpr int kLocalRegions = 16;

// Weights read as float64 (torch builds CUDA code with __CUDA_NO_HALF_CONVERSIONS__, so __half and
// __nv_bfloat16 are widened through to_double).
template <typename W>
struct WidenedWeights {
  const W* data;
  __device__ __forceinline__ double operator[](int64_t i) const { return to_double(data[i]); }
};

// (min. 1 block per SM: lets ptxas use the ~70 registers the wide-integer code wants without spilling)
template <typename W>
__global__ void __launch_bounds__(kThreads, 1)
    allocate_budget_kernel(const W* __restrict__ weights, const int64_t* __restrict__ total,
                           const int64_t* __restrict__ capacity, int64_t B, int64_t S,
                           uint8_t* __restrict__ global_state, uint64_t* __restrict__ global_key,
                           int64_t* __restrict__ out) {
  constexpr int kLimbs = BudgetLimbs<W>::value;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (b >= B) return;
  const int64_t row = b * S;
  uint8_t local_state[kLocalRegions];
  uint64_t local_key[kLocalRegions];
  const bool local = S <= kLocalRegions;
  allocate_budget_row<kLimbs>(WidenedWeights<W>{weights + row}, 1, capacity + row, 1, total[b], S,
                              local ? local_state : global_state + row, local ? local_key : global_key + row,
                              out + row, 1);
}

}  // namespace

size_t allocate_budget_workspace_bytes(int64_t B, int64_t S) {
  return S <= kLocalRegions ? 0 : static_cast<size_t>(B * S) * (sizeof(uint64_t) + sizeof(uint8_t));
}

template <typename W>
const char* launch_allocate_budget(const W* weights, const int64_t* total, const int64_t* capacity, int64_t B,
                                   int64_t S, void* workspace, int64_t* out, void* stream) {
  if (B == 0) return nullptr;
  if (S > kLocalRegions && workspace == nullptr) return "allocate_budget: the workspace is missing";
  uint64_t* key = static_cast<uint64_t*>(workspace);  // [B, S] keys, then [B, S] state bytes
  uint8_t* state = workspace ? reinterpret_cast<uint8_t*>(key + B * S) : nullptr;
  allocate_budget_kernel<W><<<static_cast<unsigned>(ceil_div(B, kThreads)), kThreads, 0, as_stream(stream)>>>(
      weights, total, capacity, B, S, state, key, out);
  return launch_status();
}

#define VTPRUNE_INSTANTIATE(W)                                                                                    \
  template const char* launch_allocate_budget<W>(const W*, const int64_t*, const int64_t*, int64_t, int64_t, void*, \
                                                 int64_t*, void*);
VTPRUNE_FOR_SCORE_TYPES(VTPRUNE_INSTANTIATE)
VTPRUNE_INSTANTIATE(double)
#undef VTPRUNE_INSTANTIATE

}  // namespace cuda
}  // namespace vtprune
