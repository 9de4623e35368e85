// region_topk_mask on the CPU (docs/design.md 2.2): per row b, bucket the tokens by region (counting
// sort, index order kept), then select the k[b, r] best of each bucket with the tie comparator.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/ranking.h"
#include "op_checks.h"

namespace vtprune::cpu {
namespace {

// Region sizes [B, R] after checking that every id lies in [0, R) and every k in [0, size].
std::vector<int64_t> checked_region_sizes(const at::Tensor& ids, const at::Tensor& k, int64_t B, int64_t N) {
  const int64_t R = k.size(1);
  const bool shared = ids.dim() == 1;  // one [N] map for every row
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* kk = k.data_ptr<int64_t>();
  std::vector<int64_t> sizes(B * R, 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* row = shared ? id : id + b * N;
    for (int64_t j = 0; j < N; ++j) {
      TORCH_CHECK_VALUE(row[j] >= 0 && row[j] < R, "region_ids values must lie in [0, R=", R,
                        ") where R = k.shape[1]; region_ids[", shared ? "" : std::to_string(b) + ", ", j, "] = ",
                        row[j]);
      ++sizes[b * R + row[j]];
    }
  }
  for (int64_t i = 0; i < B * R; ++i) {
    TORCH_CHECK_VALUE(kk[i] >= 0, "k must be non-negative, got k[", i / R, ", ", i % R, "] = ", kk[i]);
    TORCH_CHECK_VALUE(kk[i] <= sizes[i], "k[", i / R, ", ", i % R, "] = ", kk[i], " is larger than region ", i % R,
                      " of row ", i / R, " (", sizes[i], " tokens)");
  }
  return sizes;
}

// A token as the selection sees it: its score (float: exact for fp16/bf16) and its index.
struct Token {
  float score;
  int64_t index;
};

template <typename scalar_t>
void select_row(const scalar_t* scores, const int64_t* ids, const int64_t* k, const int64_t* sizes, int64_t N,
                int64_t R, bool* mask) {
  // members of region r, in index order: tokens[start[r] .. start[r + 1])
  std::vector<int64_t> start(R + 1, 0);
  for (int64_t r = 0; r < R; ++r) start[r + 1] = start[r] + sizes[r];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  std::vector<Token> tokens(N);
  for (int64_t j = 0; j < N; ++j) tokens[fill[ids[j]]++] = Token{static_cast<float>(scores[j]), j};
  const auto better = [](const Token& a, const Token& b) { return ranks_before(a.score, a.index, b.score, b.index); };
  std::fill(mask, mask + N, false);
  for (int64_t r = 0; r < R; ++r) {
    auto first = tokens.begin() + start[r], last = tokens.begin() + start[r + 1];
    const int64_t keep = k[r];
    if (keep < last - first) std::nth_element(first, first + keep, last, better);
    for (auto it = first; it != first + keep; ++it) mask[it->index] = true;
  }
}

at::Tensor region_topk_mask_cpu(const at::Tensor& scores_in, const at::Tensor& region_ids_in, const at::Tensor& k_in) {
  check_region_topk_mask_args(scores_in, region_ids_in, k_in);
  const int64_t B = scores_in.size(0), N = scores_in.size(1), R = k_in.size(1);
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor ids = region_ids_in.contiguous();
  const at::Tensor k = k_in.contiguous();
  const std::vector<int64_t> sizes = checked_region_sizes(ids, k, B, N);
  at::Tensor mask = at::empty({B, N}, scores.options().dtype(at::kBool));
  bool* mask_ptr = mask.data_ptr<bool>();
  const int64_t* id_ptr = ids.data_ptr<int64_t>();
  const int64_t id_row_stride = ids.dim() == 1 ? 0 : N;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "region_topk_mask_cpu", [&] {
    const scalar_t* s = scores.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 13) / std::max<int64_t>(N, 1));  // small inputs inline
    at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        select_row(s + b * N, id_ptr + b * id_row_stride, k.data_ptr<int64_t>() + b * R, sizes.data() + b * R, N, R,
                   mask_ptr + b * N);
      }
    });
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("region_topk_mask", &region_topk_mask_cpu); }

}  // namespace vtprune::cpu
