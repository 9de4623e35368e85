// window_argmax_mask on the CPU (docs/design.md 2.3): one scan per non-overlapping (wh, ww) window in
// raster order, keeping the best non-excluded cell under the tie comparator (the raster index
// breaks ties, so the first of equal cells wins).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "common/ranking.h"
#include "op_checks.h"

namespace vtprune::cpu {
namespace {

// Marks the best non-excluded cell of the window with top-left corner (i0, j0) of one [H, W] grid.
template <typename scalar_t>
void mark_window_best(const scalar_t* scores, const bool* exclude, int64_t H, int64_t W, int64_t i0, int64_t j0,
                      int64_t wh, int64_t ww, bool* mask) {
  int64_t best = -1;
  float best_score = 0.0f;
  for (int64_t i = i0; i < std::min(H, i0 + wh); ++i) {
    for (int64_t j = j0; j < std::min(W, j0 + ww); ++j) {
      const int64_t cell = i * W + j;  // raster order inside the window follows the grid's
      if (exclude[cell]) continue;
      const float s = static_cast<float>(scores[cell]);
      if (best < 0 || ranks_before(s, cell, best_score, best)) {
        best = cell;
        best_score = s;
      }
    }
  }
  if (best >= 0) mask[best] = true;
}

at::Tensor window_argmax_mask_cpu(const at::Tensor& scores_in, const at::Tensor& exclude_in, at::IntArrayRef window) {
  check_window_argmax_mask_args(scores_in, exclude_in, window);
  const int64_t B = scores_in.size(0), H = scores_in.size(1), W = scores_in.size(2);
  at::Tensor mask = at::zeros({B, H, W}, scores_in.options().dtype(at::kBool));
  if (B == 0 || H == 0 || W == 0) return mask;
  // A window larger than the grid is one partial window: clamping its size to the grid changes
  // no window and keeps every product below (e.g. wh * W) from overflowing.
  const int64_t wh = std::min(window[0], H), ww = std::min(window[1], W);
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor exclude = exclude_in.contiguous();
  const int64_t window_rows = (H + wh - 1) / wh, window_cols = (W + ww - 1) / ww;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "window_argmax_mask_cpu", [&] {
    const scalar_t* s = scores.data_ptr<scalar_t>();
    const bool* ex = exclude.data_ptr<bool>();
    bool* out = mask.data_ptr<bool>();
    // one task per (b, row of windows); windows never share cells, so writes never overlap
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / (wh * W));  // small grids run inline
    at::parallel_for(0, B * window_rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / window_rows, i0 = (t % window_rows) * wh;
        for (int64_t w = 0; w < window_cols; ++w) {
          mark_window_best(s + b * H * W, ex + b * H * W, H, W, i0, w * ww, wh, ww, out + b * H * W);
        }
      }
    });
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("window_argmax_mask", &window_argmax_mask_cpu); }

}  // namespace vtprune::cpu
