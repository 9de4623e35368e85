// Row loops of the attention_scores CPU kernel on one block of logits: softmax numerators and
// the folds of probability rows into accumulators. Built on Vec (cpu/capability/vec.h), so they
// are compiled once per instruction set; include only from dispatched sources.
//
// Rows are float32 arrays whose length `span` is a multiple of kLanes (the caller pads).
#pragma once

#include "cpu/capability/vec.h"

namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS {

// x[j] = exp(x[j] - shift) in place for j < span; returns the sum of the results (NaN when any
// is NaN). Padding lanes hold -inf and give 0 (NaN when shift is -inf or NaN). kShiftIsMax:
// shift is the maximum of the row (so x[j] - shift <= 0 or NaN).
template <bool kShiftIsMax>
VTPRUNE_INLINE float exp_shift_inplace(float* x, int64_t span, float shift) {
  const Vec s = Vec::broadcast(shift);
  Vec sum0 = Vec::zero(), sum1 = Vec::zero();
  int64_t j = 0;
  for (; j + 2 * kLanes <= span; j += 2 * kLanes) {
    const Vec e0 = exp<kShiftIsMax>(Vec::load(x + j) - s);
    const Vec e1 = exp<kShiftIsMax>(Vec::load(x + j + kLanes) - s);
    e0.store(x + j);
    e1.store(x + j + kLanes);
    sum0 = sum0 + e0;
    sum1 = sum1 + e1;
  }
  if (j < span) {
    const Vec e0 = exp<kShiftIsMax>(Vec::load(x + j) - s);
    e0.store(x + j);
    sum0 = sum0 + e0;
  }
  return reduce_add(sum0 + sum1);
}

// dst[j] += w[0] * x[0][j] + w[1] * x[1][j] + ... (rows added in order), j < span; rows are
// `stride` floats apart.
VTPRUNE_INLINE void add_rows(float* dst, const float* x, int64_t stride, const float* w, int64_t rows, int64_t span) {
  for (int64_t j = 0; j < span; j += kLanes) {
    Vec a = Vec::load(dst + j);
    for (int64_t i = 0; i < rows; ++i) a = fmadd(Vec::broadcast(w[i]), Vec::load(x + i * stride + j), a);
    a.store(dst + j);
  }
}

// dst[j] = max(dst[j], w[i] * x[i][j]) over the rows, where a NaN on either side wins.
VTPRUNE_INLINE void max_rows(float* dst, const float* x, int64_t stride, const float* w, int64_t rows, int64_t span) {
  for (int64_t j = 0; j < span; j += kLanes) {
    Vec a = Vec::load(dst + j);
    for (int64_t i = 0; i < rows; ++i) a = max_nan(a, Vec::broadcast(w[i]) * Vec::load(x + i * stride + j));
    a.store(dst + j);
  }
}

VTPRUNE_INLINE void fill(float* dst, int64_t n, float value) {
  for (int64_t j = 0; j < n; ++j) dst[j] = value;
}

}  // namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS
