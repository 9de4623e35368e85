// allocate_budget on the CPU (docs/design.md 2.5): checks the values, then one
// vtprune::allocate_budget_row (common/budget.h, exact integer arithmetic, shared with the CUDA
// kernel) per row b.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/budget.h"
#include "op_checks.h"

namespace vtprune::cpu {
namespace {

template <typename scalar_t>
void check_budget_values(const scalar_t* w, const int64_t* total, const int64_t* cap, int64_t B, int64_t S) {
  for (int64_t b = 0; b < B; ++b) {
    uint64_t cap_sum = 0;  // saturates at total: capacities near 2^63 are valid, their sum need not fit
    for (int64_t i = 0; i < S; ++i) {
      const double wi = static_cast<double>(w[b * S + i]);
      TORCH_CHECK_VALUE(std::isfinite(wi) && wi >= 0.0, "weights must be finite and non-negative, got weights[", b,
                        ", ", i, "] = ", wi);
      TORCH_CHECK_VALUE(cap[b * S + i] >= 0, "capacity must be non-negative, got capacity[", b, ", ", i,
                        "] = ", cap[b * S + i]);
      if (cap_sum < static_cast<uint64_t>(INT64_MAX)) cap_sum += static_cast<uint64_t>(cap[b * S + i]);  // < 2^64
    }
    TORCH_CHECK_VALUE(total[b] >= 0, "total must be non-negative, got total[", b, "] = ", total[b]);
    TORCH_CHECK_VALUE(static_cast<uint64_t>(total[b]) <= cap_sum, "total[", b, "] = ", total[b],
                      " exceeds the summed capacity ", cap_sum, " of row ", b);
  }
}

at::Tensor allocate_budget_cpu(const at::Tensor& weights_in, const at::Tensor& total_in, const at::Tensor& capacity_in) {
  check_allocate_budget_args(weights_in, total_in, capacity_in);
  const int64_t B = weights_in.size(0), S = weights_in.size(1);
  const at::Tensor weights = weights_in.contiguous();
  const at::Tensor total = total_in.contiguous();
  const at::Tensor capacity = capacity_in.contiguous();
  at::Tensor counts = at::empty({B, S}, total.options());
  const int64_t* total_ptr = total.data_ptr<int64_t>();
  const int64_t* cap_ptr = capacity.data_ptr<int64_t>();
  int64_t* out = counts.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(), "allocate_budget_cpu", [&] {
    const scalar_t* w = weights.data_ptr<scalar_t>();
    check_budget_values(w, total_ptr, cap_ptr, B, S);
    constexpr int kLimbs = BudgetLimbs<scalar_t>::value;
    // a few microseconds per 64 rows of 13 regions: small batches run inline
    at::parallel_for(0, B, std::max<int64_t>(1, 4096 / S), [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> state(S);
      std::vector<uint64_t> key(S);
      for (int64_t b = begin; b < end; ++b) {
        allocate_budget_row<kLimbs>(w + b * S, 1, cap_ptr + b * S, 1, total_ptr[b], S, state.data(), key.data(),
                                    out + b * S, 1);
      }
    });
  });
  return counts;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("allocate_budget", &allocate_budget_cpu); }

}  // namespace vtprune::cpu
