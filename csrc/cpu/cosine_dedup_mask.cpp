// cosine_dedup_mask on the CPU (docs/design.md 2.4): VisPruner's diverse-token rounds, ranked by the
// exact cosines of common/cosine.h (one fixed float64 summation order, so identical vectors tie
// exactly), and decided mostly from a float32 Gram matrix computed once per image.
//
// Per image: rank the candidates by order_scores (tie comparator), then dedup_cosines.h: float32
// rows, squared norms and unit rows in one pass, the filter Gram matrix G (the triangle of a
// symmetric sgemm, in slices of 256 channels) whose entries are within eps of the exact cosines.
// Each round ranks A by m~(a) = max over B of G[a, b]; where two neighbours in that ranking are
// within 2 eps ("runs"; about a quarter of A on Gaussian features, every duplicate), the maxima are
// recomputed from the b whose G can still hold the maximum, first with fast float64 cosines (bound
// ~1e-13), and where those are still within twice their bound, with the exact ones. Values further
// apart than twice a level's bound are ordered right by that level, so the result is the ranking by
// exact cosines of every round: the reference's and the CUDA kernel's.
// Bitwise-identical rows (identical_rows.h) have identical cosines, hence identical maxima: each
// round computes them for one member of each class in A, its representative, and copies them to
// the others (and one cosine per pair of classes), so copies of a few vectors (flat image regions,
// one run of thousands of exact ties) cost what their classes cost. Rows with many near partners
// that are not bitwise copies (clusters of near-copies) take their maximum from a list of their
// partners ranked by exact cosine (partner_lists.h).
// When torch lets float32 matmuls run in reduced precision (torch.set_float32_matmul_precision below
// "highest": bf16 / tf32), G is computed in float64 instead, with its own bound.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/dedup.h"
#include "common/ranking.h"
#include "common/sort_keys.h"
#include "cpu/dedup_cosines.h"
#include "cpu/partner_lists.h"
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

// Whether torch runs float32 matmuls in IEEE float32 (not bf16 / tf32).
bool float32_matmul_is_ieee() {
  const auto& context = at::globalContext();
  if (context.float32MatmulPrecision() != at::Float32MatmulPrecision::HIGHEST) return false;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
  const auto precision = context.float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL);
  if (precision == at::Float32Precision::BF16 || precision == at::Float32Precision::TF32) return false;
#endif
  return true;
}

// The fast dot of the active CPU capability (an unknown VTPRUNE_CPU_CAPABILITY: a ValueError naming it).
const DedupDotLoops& active_dedup_dot_loops() {
  try {
    return dedup_dot_loops_for(active_cpu_capability());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

// Runs [start, end) of `order` (ranked by m, NaN last) whose neighbours are within `gap`.
void runs_within(const std::vector<int32_t>& order, int64_t first, int64_t last, const std::vector<double>& m,
                 const std::vector<uint8_t>& is_nan, double gap, std::vector<std::pair<int64_t, int64_t>>& runs) {
  for (int64_t start = first; start < last;) {
    int64_t end = start + 1;
    while (end < last && !is_nan[order[start]] && !is_nan[order[end]] && m[order[end - 1]] - m[order[end]] <= gap) {
      ++end;
    }
    if (end - start > 1) runs.emplace_back(start, end);
    start = end;
  }
}

// The rounds on positions 0..n-1 of the ranked candidates; returns the surviving positions.
template <typename G>
std::vector<int32_t> dedup_rounds(const G* gram, double eps_filter, CandidateFeatures& f, int64_t n_keep,
                                  int64_t step) {
  const int64_t n = f.n;
  const double eps_fast = fast_error_bound(f.C);
  const G outside = -std::numeric_limits<G>::infinity();
  std::vector<int32_t> R(n), A, B, order, next, candidates, cand_begin, cand_end, pair_a, pair_b, pair_owner;
  const std::vector<int32_t>& class_of = f.identical.class_of;
  std::vector<int32_t> rep;                                    // [n_a] the representative of A[i]'s class in A
  std::vector<int32_t> class_rep(f.identical.classes(), -1);  // a class's representative in A this round
  std::vector<int64_t> class_seen(f.identical.classes(), -1); // last candidate list a class was put in
  int64_t candidate_lists = 0;
  std::iota(R.begin(), R.end(), 0);
  std::vector<G> mask(n, outside);
  std::vector<G> r_mask(n, G(0));  // 0 for positions still in R, -inf for dropped ones
  std::vector<uint8_t> exact_known;  // [n_a] m_fast holds the exact maximum (from a partner list)
  PartnerLists partner_lists(n);

  const ChunkedRows<G> rows(gram, n);
  std::vector<double> m_filter, m_fast, m_exact;
  std::vector<uint8_t> is_nan;
  std::vector<uint64_t> sort_keys;
  std::vector<std::pair<int64_t, int64_t>> runs, fine_runs;
  PairCosines cosine(f);
  auto ranks_by = [&is_nan](const std::vector<double>& m) {
    return [&m, &is_nan](int32_t i, int32_t j) {
      const double nan = std::numeric_limits<double>::quiet_NaN();
      return ranks_before(is_nan[i] ? nan : m[i], i, is_nan[j] ? nan : m[j], j);
    };
  };
  DedupRound round;
  while (dedup_next_round(static_cast<int64_t>(R.size()), n_keep, step, &round)) {
    A.clear();
    B.clear();
    for (size_t i = 0; i < R.size(); ++i) (i % 2 == 0 ? A : B).push_back(R[i]);
    bool nan_in_b = false;
    for (const int32_t b : B) {
      mask[b] = G(0);
      nan_in_b |= !f.finite[b];
    }
    const int64_t n_a = static_cast<int64_t>(A.size());
    rep.resize(n_a);
    for (int64_t i = 0; i < n_a; ++i) {
      int32_t& r = class_rep[class_of[A[i]]];
      if (r < 0) r = static_cast<int32_t>(i);
      rep[i] = r;
    }
    m_filter.assign(n_a, -std::numeric_limits<double>::infinity());  // B empty: m = -inf
    is_nan.assign(n_a, 0);
    for (int64_t i = 0; i < n_a && !B.empty(); ++i) {
      is_nan[i] = nan_in_b || !f.finite[A[i]];
      if (rep[i] != i) {  // the same maximum as the representative (an earlier member of A)
        m_filter[i] = m_filter[rep[i]];
      } else if (!is_nan[i]) {
        m_filter[i] = static_cast<double>(rows.masked_max(A[i], mask.data()));
      }
    }
    order.resize(n_a);
    if constexpr (std::is_same_v<G, float>) {  // float maxima: sort unique 64-bit rank keys
      sort_keys.resize(n_a);
      for (int64_t i = 0; i < n_a; ++i) {
        const float m = is_nan[i] ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(m_filter[i]);
        sort_keys[i] = rank_key(m, static_cast<uint32_t>(i));
      }
      std::sort(sort_keys.begin(), sort_keys.end());
      for (int64_t t = 0; t < n_a; ++t) order[t] = static_cast<int32_t>(rank_key_index(sort_keys[t]));
    } else {
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), ranks_by(m_filter));
    }

    // Runs of the filter ranking: their maxima from the fast cosines of the b whose G[a, b] >=
    // m~(a) - 2 eps (the only ones that can hold the maximum), one b per class. A class's members
    // share m~ exactly, so they share a run (and later a fine run) with their representative.
    runs.clear();
    runs_within(order, 0, n_a, m_filter, is_nan, 2.0 * eps_filter, runs);
    m_fast = m_filter;
    candidates.clear();
    cand_begin.resize(n_a);
    cand_end.resize(n_a);
    m_exact.resize(n_a);
    exact_known.resize(n_a);
    for (const auto& run : runs) {
      for (int64_t t = run.first; t < run.second; ++t) {
        const int32_t i = order[t];
        if (rep[i] != i) continue;
        const size_t before = candidates.size();
        cand_begin[i] = cand_end[i] = static_cast<int32_t>(before);
        // a cluster row: its exact maximum from its partner list, built once it has many near candidates
        double listed = partner_lists.max_over(A[i], mask.data(), r_mask.data());
        if (std::isnan(listed)) {
          rows.masked_at_least(A[i], mask.data(), m_filter[i] - 2.0 * eps_filter, candidates);
          size_t end = before;  // keep the first candidate of each class
          for (size_t c = before; c < candidates.size(); ++c) {
            int64_t& seen = class_seen[class_of[candidates[c]]];
            if (seen != candidate_lists) candidates[end++] = candidates[c];
            seen = candidate_lists;
          }
          candidates.resize(end);
          ++candidate_lists;
          if (end - before >= PartnerLists::kFrom) {
            partner_lists.build(A[i], m_filter[i] - 2.0 * eps_filter, eps_filter, rows, r_mask.data(), f, cosine);
            listed = partner_lists.max_over(A[i], mask.data(), r_mask.data());
            if (!std::isnan(listed)) candidates.resize(before);
          }
        }
        exact_known[i] = !std::isnan(listed);
        if (exact_known[i]) {
          m_fast[i] = listed;
          continue;
        }
        double m = -std::numeric_limits<double>::infinity();
        for (size_t c = before; c < candidates.size(); ++c) m = std::max(m, cosine.fast(A[i], candidates[c]));
        m_fast[i] = m;
        cand_begin[i] = static_cast<int32_t>(before);
        cand_end[i] = static_cast<int32_t>(candidates.size());
      }
      for (int64_t t = run.first; t < run.second; ++t) m_fast[order[t]] = m_fast[rep[order[t]]];
      std::sort(order.begin() + run.first, order.begin() + run.second, ranks_by(m_fast));
      // Within the run, neighbours still within twice the fast bound: exact cosines decide.
      fine_runs.clear();
      runs_within(order, run.first, run.second, m_fast, is_nan, 2.0 * eps_fast, fine_runs);
      for (const auto& fine : fine_runs) {
        pair_a.clear();
        pair_b.clear();
        pair_owner.clear();
        for (int64_t t = fine.first; t < fine.second; ++t) {
          const int32_t i = order[t];
          if (rep[i] != i) continue;
          if (exact_known[i]) {
            m_exact[i] = m_fast[i];
            continue;
          }
          m_exact[i] = -std::numeric_limits<double>::infinity();
          for (int32_t c = cand_begin[i]; c < cand_end[i]; ++c) {
            if (cosine.fast(A[i], candidates[c]) >= m_fast[i] - 2.0 * eps_fast) {
              pair_a.push_back(A[i]);
              pair_b.push_back(candidates[c]);
              pair_owner.push_back(i);
            }
          }
        }
        cosine.prepare_exact(pair_a, pair_b);
        for (size_t p = 0; p < pair_a.size(); ++p) {
          m_exact[pair_owner[p]] = std::max(m_exact[pair_owner[p]], cosine.exact(pair_a[p], pair_b[p]));
        }
        for (int64_t t = fine.first; t < fine.second; ++t) m_exact[order[t]] = m_exact[rep[order[t]]];
        std::sort(order.begin() + fine.first, order.begin() + fine.second, ranks_by(m_exact));
      }
    }
    for (const int32_t b : B) mask[b] = outside;
    for (const int32_t a : A) class_rep[class_of[a]] = -1;
    for (int64_t t = 0; t < std::min<int64_t>(round.drop, n_a); ++t) r_mask[A[order[t]]] = outside;
    next.clear();
    for (int64_t t = round.drop; t < n_a; ++t) next.push_back(A[order[t]]);
    next.insert(next.end(), B.begin(), B.end());
    std::swap(R, next);
  }
  return R;
}

// Images per chunk: the filter Gram matrices and unit rows of a chunk take at most ~64 MiB (or one image).
constexpr int64_t kChunkBytes = int64_t{64} << 20;

at::Tensor cosine_dedup_mask_cpu(const at::Tensor& x_in, const at::Tensor& candidates_in,
                                 const at::Tensor& order_scores_in, const at::Tensor& n_keep_in, int64_t step) {
  check_cosine_dedup_mask_args(x_in, candidates_in, order_scores_in, n_keep_in, step);
  const int64_t B = x_in.size(0), N = x_in.size(1);
  const at::Tensor candidates = candidates_in.contiguous();
  const at::Tensor order_scores = order_scores_in.contiguous();
  const at::Tensor n_keep = n_keep_in.contiguous();
  const at::Tensor x = x_in.scalar_type() == at::kFloat ? x_in.detach().contiguous() : x_in.detach();
  const int64_t* keep = n_keep.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(keep[b] >= 0, "n_keep must be non-negative, got n_keep[", b, "] = ", keep[b]);
  }

  std::vector<std::vector<int64_t>> ranked(B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, order_scores.scalar_type(), "cosine_dedup_rank", [&] {
    for (int64_t b = 0; b < B; ++b) {
      ranked[b] = ranked_candidates(candidates.const_data_ptr<bool>() + b * N,
                                    order_scores.const_data_ptr<scalar_t>() + b * N, N);
    }
  });

  at::Tensor mask = at::zeros({B, N}, candidates.options());
  bool* out = mask.mutable_data_ptr<bool>();
  const bool ieee = float32_matmul_is_ieee();
  const int64_t parts = gram_parts(x.size(2));
  const double eps =
      filter_error_bound(x.size(2), gram_rounding_chain(x.size(2), parts), ieee ? std::ldexp(1.0, -24) : std::ldexp(1.0, -53));
  std::vector<int64_t> with_rounds;  // images where at least one round runs
  for (int64_t b = 0; b < B; ++b) {
    if (std::min<int64_t>(step, static_cast<int64_t>(ranked[b].size()) - keep[b]) > 0) {
      with_rounds.push_back(b);
    } else {  // no round runs: every candidate is kept
      for (const int64_t j : ranked[b]) out[b * N + j] = true;
    }
  }
  // Chunks of images whose filter Gram matrices and unit rows take at most ~64 MiB (or one image):
  // the features of the chunk's images in parallel, their Gram matrices one after another (the
  // BLAS uses every thread), then their rounds in parallel.
  const DedupDotLoops& dots = active_dedup_dot_loops();
  const at::ScalarType gram_type = ieee ? at::kFloat : at::kDouble;
  const int64_t C = x.size(2);
  const std::vector<float> weights = fingerprint_weights(C);  // of the identical-row fingerprints
  at::Tensor slice = at::empty({0}, at::TensorOptions().dtype(gram_type));  // scratch of every Gram matrix
  auto candidates_of = [&](size_t c) { return static_cast<int64_t>(ranked[with_rounds[c]].size()); };
  for (size_t first = 0; first < with_rounds.size();) {
    size_t last = first + 1;  // images [first, last) form the chunk
    int64_t entries = candidates_of(first) * (candidates_of(first) + C);
    while (last < with_rounds.size()) {
      const int64_t more = candidates_of(last) * (candidates_of(last) + C);
      if ((entries + more) * static_cast<int64_t>(at::elementSize(gram_type)) > kChunkBytes) break;
      entries += more;
      ++last;
    }
    const int64_t count = static_cast<int64_t>(last - first);
    const at::Tensor storage = at::empty({entries}, at::TensorOptions().dtype(gram_type));
    std::vector<at::Tensor> grams(count), units(count);
    for (int64_t c = 0, offset = 0; c < count; ++c) {
      const int64_t n = candidates_of(first + c);
      grams[c] = storage.narrow(0, offset, n * n).view({n, n});
      units[c] = storage.narrow(0, offset + n * n, n * C).view({n, C});
      offset += n * (n + C);
    }
    std::vector<CandidateFeatures> features(count);
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t b = with_rounds[first + c];
        features[c] = candidate_features(x[b], ranked[b], dots, weights.data(),
                                         ieee ? units[c].mutable_data_ptr<float>() : nullptr);
        if (!ieee) double_unit_rows(features[c], units[c]);
      }
    });
    for (int64_t c = 0; c < count; ++c) {
      if (ieee) {
        filter_gram<float>(features[c], parts, units[c], slice, grams[c]);
      } else {
        filter_gram<double>(features[c], parts, units[c], slice, grams[c]);
      }
    }
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t b = with_rounds[first + c];
        const std::vector<int32_t> kept =
            ieee ? dedup_rounds(grams[c].const_data_ptr<float>(), eps, features[c], keep[b], step)
                 : dedup_rounds(grams[c].const_data_ptr<double>(), eps, features[c], keep[b], step);
        for (const int32_t pos : kept) out[b * N + ranked[b][pos]] = true;
      }
    });
    first = last;
  }
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("cosine_dedup_mask", &cosine_dedup_mask_cpu); }

}  // namespace vtprune::cpu
