// Vectorised float32 loops over one row of attention logits (CPU only), used by the
// attention_scores kernel on a block that sits in L2. Each is compiled for several x86
// instruction sets and picked once from the running CPU (x86: AVX-512, AVX2+FMA, baseline), so the wheel runs on any
// x86-64 while using AVX2/AVX-512 where present. Results are deterministic on one machine.
#pragma once

#include <cstdint>

namespace vtprune::cpu {

// max_j scale * x[j] over n >= 1 entries (a NaN entry may or may not win; callers detect NaN
// rows through the sum returned by exp_shift_inplace).
float max_scaled(const float* x, int64_t n, float scale);

// x[j] = exp(scale * x[j] - shift) in place; returns the sum of the results (NaN when any
// result is NaN). exp has ~1 ulp error, flushes results below FLT_MIN to 0 and propagates NaN.
float exp_shift_inplace(float* x, int64_t n, float scale, float shift);

// acc[j] += a * x[j].
void add_scaled(float* acc, const float* x, int64_t n, float a);

// acc[j] = max(acc[j], a * x[j]) where a NaN on either side wins (like torch.amax).
void max_into_scaled(float* acc, const float* x, int64_t n, float a);

}  // namespace vtprune::cpu
