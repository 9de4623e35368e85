// Argument checks shared by the CPU kernels and the CUDA binding (the Python twin is
// vtprune_kernels/validation.py). *_args checks read no data: shapes, dtypes, devices.
// Value checks (budgets, region ids) read data and live with the CPU kernels; on CUDA the
// Python wrappers run them on request, since they need a host sync.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>
#include <vector>

namespace vtprune {

inline bool is_float_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

inline void check_rank(const char* name, const at::Tensor& t, int64_t ndim) {
  TORCH_CHECK(t.dim() == ndim, name, " must have ", ndim, " dimensions, got shape ", t.sizes());
}

inline void check_float(const char* name, const at::Tensor& t) {
  TORCH_CHECK(is_float_dtype(t), name, " must have dtype in (float32, float16, bfloat16), got ", t.scalar_type());
}

inline void check_dtype(const char* name, const at::Tensor& t, at::ScalarType dtype) {
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

inline void check_same_device(const char* ref_name, const at::Tensor& ref, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " is on ", ref.device(),
              ": all tensors must share one device");
}

inline void check_shape(const char* name, const at::Tensor& t, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, name, " must have shape ", expected, ", got ", t.sizes());
}

inline void check_attention_scores_args(const at::Tensor& q, const at::Tensor& k, const std::string& query_reduce,
                                        const std::string& head_reduce, bool causal,
                                        const std::optional<at::Tensor>& lse) {
  check_rank("q", q, 4);
  check_rank("k", k, 4);
  check_float("q", q);
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), "k must have the dtype of q (", q.scalar_type(), "), got ",
              k.scalar_type());
  check_same_device("q", q, "k", k);
  const int64_t B = q.size(0), Hq = q.size(1), M = q.size(2), D = q.size(3);
  TORCH_CHECK(k.size(0) == B && k.size(3) == D, "k must have shape [B=", B, ", Hk, N, D=", D, "] to match q ",
              q.sizes(), ", got ", k.sizes());
  const int64_t Hk = k.size(1), N = k.size(2);
  TORCH_CHECK(Hq >= 1, "q must have at least one head (Hq >= 1)");
  TORCH_CHECK(Hk > 0 && Hq % Hk == 0, "k has ", Hk, " heads; the ", Hq,
              " query heads of q must be a multiple of it (GQA)");
  TORCH_CHECK(D >= 1 && D <= 256, "q head dim D=", D, " must be in [1, 256]");
  TORCH_CHECK(M >= 1, "q must have at least one query row (M >= 1)");
  TORCH_CHECK(N >= 1, "k must have at least one key (N >= 1)");
  TORCH_CHECK(!causal || M <= N, "causal=True needs M <= N (q has ", M, " rows, k has ", N, " keys)");
  TORCH_CHECK(query_reduce == "sum" || query_reduce == "mean" || query_reduce == "max",
              "query_reduce must be one of ('sum', 'mean', 'max'), got '", query_reduce, "'");
  TORCH_CHECK(head_reduce == "mean" || head_reduce == "max" || head_reduce == "none",
              "head_reduce must be one of ('mean', 'max', 'none'), got '", head_reduce, "'");
  if (lse.has_value()) {
    check_rank("lse", *lse, 3);
    check_dtype("lse", *lse, at::kFloat);
    check_same_device("q", q, "lse", *lse);
    check_shape("lse", *lse, {B, Hq, M});
  }
}

inline void check_region_topk_mask_args(const at::Tensor& scores, const at::Tensor& region_ids, const at::Tensor& k) {
  check_rank("scores", scores, 2);
  check_float("scores", scores);
  TORCH_CHECK(region_ids.dim() == 1 || region_ids.dim() == 2, "region_ids must be an int64 tensor [B, N] or [N], got shape ",
              region_ids.sizes());
  check_dtype("region_ids", region_ids, at::kLong);
  check_rank("k", k, 2);
  check_dtype("k", k, at::kLong);
  check_same_device("scores", scores, "region_ids", region_ids);
  check_same_device("scores", scores, "k", k);
  const int64_t B = scores.size(0), N = scores.size(1);
  TORCH_CHECK(region_ids.sizes() == at::IntArrayRef({B, N}) || region_ids.sizes() == at::IntArrayRef({N}),
              "region_ids must have shape (", B, ", ", N, ") or (", N, ",), got ", region_ids.sizes());
  TORCH_CHECK(k.size(0) == B, "k must have shape [B=", B, ", R], got ", k.sizes());
}

inline void check_window_argmax_mask_args(const at::Tensor& scores, const at::Tensor& exclude, at::IntArrayRef window) {
  check_rank("scores", scores, 3);
  check_float("scores", scores);
  check_rank("exclude", exclude, 3);
  check_dtype("exclude", exclude, at::kBool);
  check_same_device("scores", scores, "exclude", exclude);
  check_shape("exclude", exclude, scores.sizes());
  TORCH_CHECK(window.size() == 2 && window[0] >= 1 && window[1] >= 1,
              "window must be two positive sizes (wh, ww), got ", window);
}

inline void check_cosine_dedup_mask_args(const at::Tensor& x, const at::Tensor& candidates,
                                         const at::Tensor& order_scores, const at::Tensor& n_keep, int64_t step) {
  check_rank("x", x, 3);
  check_float("x", x);
  check_rank("candidates", candidates, 2);
  check_dtype("candidates", candidates, at::kBool);
  check_rank("order_scores", order_scores, 2);
  check_float("order_scores", order_scores);
  check_rank("n_keep", n_keep, 1);
  check_dtype("n_keep", n_keep, at::kLong);
  check_same_device("x", x, "candidates", candidates);
  check_same_device("x", x, "order_scores", order_scores);
  check_same_device("x", x, "n_keep", n_keep);
  const int64_t B = x.size(0), N = x.size(1);
  check_shape("candidates", candidates, {B, N});
  check_shape("order_scores", order_scores, {B, N});
  check_shape("n_keep", n_keep, {B});
  TORCH_CHECK(step >= 1, "step must be >= 1, got ", step);
}

inline void check_allocate_budget_args(const at::Tensor& weights, const at::Tensor& total, const at::Tensor& capacity) {
  check_rank("weights", weights, 2);
  TORCH_CHECK(is_float_dtype(weights) || weights.scalar_type() == at::kDouble,
              "weights must have dtype in (float32, float16, bfloat16, float64), got ", weights.scalar_type());
  check_rank("total", total, 1);
  check_dtype("total", total, at::kLong);
  check_rank("capacity", capacity, 2);
  check_dtype("capacity", capacity, at::kLong);
  check_same_device("weights", weights, "total", total);
  check_same_device("weights", weights, "capacity", capacity);
  const int64_t B = weights.size(0), S = weights.size(1);
  check_shape("total", total, {B});
  check_shape("capacity", capacity, {B, S});
  TORCH_CHECK(S >= 1, "weights must have at least one region (S >= 1)");
}

}  // namespace vtprune
