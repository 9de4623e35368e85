// cosine_dedup_mask on the CPU (docs/design.md 2.4): VisPruner's diverse-token rounds on a cosine Gram
// matrix computed once per image.
//
// Per image: rank the candidates by order_scores (tie comparator), normalise their features like
// F.normalize and take the Gram matrix G [n, n] with one GEMM (images one after another, the GEMM
// itself multi-threaded); then, images in parallel, run the rounds on G: A = R[0::2], B = R[1::2],
// m(a) = max_b G[a, b] (NaN if any is NaN, -inf if B is empty), A ordered by m descending (stable,
// NaN last), the first min(r, |A|) dropped, R = rest of A + B. The Gram matrix is float64 like the
// reference's cosines, so the ranking of every round, and hence the mask, matches it exactly
// (float32 cosines reorder near-equal maxima on random data).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include "common/ranking.h"
#include "op_checks.h"

namespace vtprune::cpu {
namespace {

// Candidate indices of one row, best order_score first (ties -> lower index, NaN last).
template <typename scalar_t>
std::vector<int64_t> ranked_candidates(const bool* candidates, const scalar_t* order_scores, int64_t N) {
  std::vector<int64_t> ranked;
  for (int64_t j = 0; j < N; ++j) {
    if (candidates[j]) ranked.push_back(j);
  }
  std::sort(ranked.begin(), ranked.end(), [&](int64_t a, int64_t b) {
    return ranks_before(static_cast<float>(order_scores[a]), a, static_cast<float>(order_scores[b]), b);
  });
  return ranked;
}

// Cosine Gram matrix [n, n] (float64) of the rows `ranked` of x_b [N, C], F.normalize semantics.
at::Tensor cosine_gram(const at::Tensor& x_b, const std::vector<int64_t>& ranked) {
  const at::Tensor index = at::tensor(at::IntArrayRef(ranked), at::TensorOptions().dtype(at::kLong));
  const at::Tensor rows = x_b.index_select(0, index).to(at::kDouble);
  const at::Tensor unit = rows / at::linalg_vector_norm(rows, 2, {1}, /*keepdim=*/true).clamp_min(1e-12);
  return at::mm(unit, unit.t()).contiguous();
}

// The rounds on positions 0..n-1 of the ranked candidates; returns the surviving positions.
std::vector<int64_t> dedup_rounds(const double* gram, int64_t n, int64_t n_keep, int64_t step) {
  std::vector<int64_t> R(n), A, B, order;
  std::iota(R.begin(), R.end(), 0);
  std::vector<double> best;
  while (true) {
    const int64_t r = std::min<int64_t>(step, static_cast<int64_t>(R.size()) - n_keep);
    if (r <= 0) break;
    A.clear();
    B.clear();
    for (size_t i = 0; i < R.size(); ++i) (i % 2 == 0 ? A : B).push_back(R[i]);
    best.assign(A.size(), -std::numeric_limits<double>::infinity());
    for (size_t ia = 0; ia < A.size(); ++ia) {
      const double* row = gram + A[ia] * n;
      double m = -std::numeric_limits<double>::infinity();
      bool nan = false;
      for (const int64_t b : B) {
        const double v = row[b];
        nan |= v != v;
        m = v > m ? v : m;
      }
      best[ia] = nan ? std::numeric_limits<double>::quiet_NaN() : m;
    }
    order.resize(A.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int64_t i, int64_t j) { return ranks_before(best[i], i, best[j], j); });
    const size_t drop = std::min<size_t>(r, A.size());
    R.clear();
    for (size_t t = drop; t < A.size(); ++t) R.push_back(A[order[t]]);
    R.insert(R.end(), B.begin(), B.end());
  }
  return R;
}

at::Tensor cosine_dedup_mask_cpu(const at::Tensor& x_in, const at::Tensor& candidates_in,
                                 const at::Tensor& order_scores_in, const at::Tensor& n_keep_in, int64_t step) {
  check_cosine_dedup_mask_args(x_in, candidates_in, order_scores_in, n_keep_in, step);
  const int64_t B = x_in.size(0), N = x_in.size(1);
  const at::Tensor candidates = candidates_in.contiguous();
  const at::Tensor order_scores = order_scores_in.contiguous();
  const at::Tensor n_keep = n_keep_in.contiguous();
  const int64_t* keep = n_keep.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(keep[b] >= 0, "n_keep must be non-negative, got n_keep[", b, "] = ", keep[b]);
  }

  std::vector<std::vector<int64_t>> ranked(B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, order_scores.scalar_type(), "cosine_dedup_rank", [&] {
    for (int64_t b = 0; b < B; ++b) {
      ranked[b] = ranked_candidates(candidates.data_ptr<bool>() + b * N, order_scores.data_ptr<scalar_t>() + b * N, N);
    }
  });
  std::vector<at::Tensor> gram(B);
  for (int64_t b = 0; b < B; ++b) {
    const bool has_rounds = std::min<int64_t>(step, static_cast<int64_t>(ranked[b].size()) - keep[b]) > 0;
    if (has_rounds) gram[b] = cosine_gram(x_in.detach()[b], ranked[b]);
  }

  at::Tensor mask = at::zeros({B, N}, candidates.options());
  bool* out = mask.data_ptr<bool>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = static_cast<int64_t>(ranked[b].size());
      if (!gram[b].defined()) {  // no round runs: every candidate is kept
        for (const int64_t j : ranked[b]) out[b * N + j] = true;
        continue;
      }
      for (const int64_t pos : dedup_rounds(gram[b].data_ptr<double>(), n, keep[b], step)) {
        out[b * N + ranked[b][pos]] = true;
      }
    }
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("cosine_dedup_mask", &cosine_dedup_mask_cpu); }

}  // namespace vtprune::cpu
