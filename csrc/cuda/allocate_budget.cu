// allocate_budget on CUDA (docs/design.md 2.5): one thread per row runs the shared float64 routine
// vtprune::allocate_budget_row (common/budget.h), the same code as the CPU kernel, so both agree
// bit for bit. Its arithmetic has no a*b+c pattern, so FMA contraction cannot change a result.
// The row's weights are first widened to float64 (exact) into scratch: torch compiles CUDA code
// with __CUDA_NO_HALF_CONVERSIONS__, so __half / __nv_bfloat16 cannot be cast to double directly.
// Scratch (widened weights, share, fixed) comes from workspace tensors the binding allocates.
#include "common/budget.h"
#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace vtprune {
namespace cuda {
namespace {

constexpr int kThreads = 128;

template <typename W>
__global__ void __launch_bounds__(kThreads)
    allocate_budget_kernel(const W* __restrict__ weights, const int64_t* __restrict__ total,
                           const int64_t* __restrict__ capacity, int64_t B, int64_t S, double* __restrict__ widened,
                           double* __restrict__ share, bool* __restrict__ fixed, int64_t* __restrict__ out) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (b >= B) return;
  const int64_t row = b * S;
  for (int64_t i = 0; i < S; ++i) widened[row + i] = to_double(weights[row + i]);
  allocate_budget_row(widened + row, 1, capacity + row, 1, total[b], S, share + row, fixed + row, out + row, 1);
}

}  // namespace

template <typename W>
const char* launch_allocate_budget(const W* weights, const int64_t* total, const int64_t* capacity, int64_t B,
                                   int64_t S, double* widened, double* share, bool* fixed, int64_t* out,
                                   void* stream) {
  if (B == 0) return nullptr;
  allocate_budget_kernel<W><<<static_cast<unsigned>(ceil_div(B, kThreads)), kThreads, 0, as_stream(stream)>>>(
      weights, total, capacity, B, S, widened, share, fixed, out);
  return launch_status();
}

#define VTPRUNE_INSTANTIATE(W)                                                                                     \
  template const char* launch_allocate_budget<W>(const W*, const int64_t*, const int64_t*, int64_t, int64_t, double*, \
                                                 double*, bool*, int64_t*, void*);
VTPRUNE_FOR_SCORE_TYPES(VTPRUNE_INSTANTIATE)
VTPRUNE_INSTANTIATE(double)
#undef VTPRUNE_INSTANTIATE

}  // namespace cuda
}  // namespace vtprune
