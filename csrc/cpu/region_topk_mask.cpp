// region_topk_mask on the CPU (docs/design.md 2.2): per row b, group the tokens by region (a counting
// sort by runs of equal ids that keeps index order, done once when the rows share one region map),
// then find each region's threshold on 32-bit rank keys and mark in index order.
//
// descending_key (common/sort_keys.h) maps a score to a key that is smaller for a better score
// (NaN largest, -0 == +0), so the k best tokens are the k smallest keys, ties to the lower index.
// The selection finds a threshold (prefix under a mask of fixed high bits) with `below` keys under
// it and `quota` = k - below of the keys equal to it wanted; one pass in index order then marks the
// keys under the threshold and the first `quota` equal ones: exactly the tie rule. Regions of up to
// kBisectMaxKeys tokens bisect the key range with vectorised counts (cpu/region_keys.h); larger ones
// take an MSD radix selection: each pass starts at the highest bit where the remaining candidates
// differ and keeps only the pivot digit's candidates, about two passes over shrinking sets. No sort.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "common/sort_keys.h"
#include "cpu/region_keys.h"
#include "op_checks.h"

namespace vtprune::cpu {
namespace {

// Calls run(r, begin, end) for every run of equal ids ids[begin..end) of one row, in order, after
// checking that the id lies in [0, R). Per run rather than per token, so counting a region's
// tokens is one add per run instead of a read-modify-write chain on the same counter.
template <typename Run>
void for_each_run(const int64_t* ids, int64_t N, int64_t R, int64_t row, bool shared, Run&& run) {
  for (int64_t j = 0; j < N;) {
    const int64_t r = ids[j];
    TORCH_CHECK_VALUE(r >= 0 && r < R, "region_ids values must lie in [0, R=", R, ") where R = k.shape[1]; region_ids[",
                      shared ? "" : std::to_string(row) + ", ", j, "] = ", r);
    int64_t end = j + 1;
    while (end < N && ids[end] == r) ++end;
    run(r, j, end);
    j = end;
  }
}

// Checks every k in [0, size of its region]; sizes [B, R].
void check_budgets(const int64_t* k, const int64_t* sizes, int64_t B, int64_t R) {
  for (int64_t i = 0; i < B * R; ++i) {
    TORCH_CHECK_VALUE(k[i] >= 0, "k must be non-negative, got k[", i / R, ", ", i % R, "] = ", k[i]);
    TORCH_CHECK_VALUE(k[i] <= sizes[i], "k[", i / R, ", ", i % R, "] = ", k[i], " is larger than region ", i % R,
                      " of row ", i / R, " (", sizes[i], " tokens)");
  }
}

// Tokens grouped by region, index order inside each: members[start[r] .. start[r + 1]).
struct RegionGroups {
  std::vector<int64_t> start;       // [R + 1]
  std::vector<int32_t> members;     // [N] token indices
  std::vector<uint8_t> contiguous;  // [R]: region r is the tokens members[start[r]] + 0, 1, ...
  std::vector<int64_t> fill;        // [R] scratch

  // The groups of one row's ids (checked; `row` and `shared` name them in errors).
  void build(const int64_t* ids, int64_t N, int64_t R, int64_t row, bool shared) {
    start.assign(R + 1, 0);
    fill.assign(R, 0);  // runs per region
    for_each_run(ids, N, R, row, shared, [&](int64_t r, int64_t begin, int64_t end) {
      start[r + 1] += end - begin;
      ++fill[r];
    });
    contiguous.resize(R);
    for (int64_t r = 0; r < R; ++r) {
      contiguous[r] = fill[r] <= 1;
      start[r + 1] += start[r];
      fill[r] = start[r];
    }
    members.resize(N);
    for_each_run(ids, N, R, row, shared, [&](int64_t r, int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) members[fill[r]++] = static_cast<int32_t>(j);
    });
  }
};

inline uint32_t descending_key_branchless(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return descending_key_of_bits(bits);
}

typedef uint32_t u32x4 __attribute__((vector_size(16)));

int highest_bit(uint32_t v) { return 31 - __builtin_clz(v); }  // v != 0

// k in [1, n - 1] smallest of keys[0..n), whose bitwise AND and OR are all_and, all_or; scratch:
// n keys.
Threshold select_threshold(const uint32_t* keys, int64_t n, int64_t k, uint32_t all_and, uint32_t all_or,
                           uint32_t* scratch) {
  constexpr int kMaxDigitBits = 8;
  constexpr int64_t kSortBelow = 24;  // candidate sets this small are sorted instead
  int32_t hist[1 << kMaxDigitBits];
  Threshold t;
  const uint32_t* cand = keys;
  int64_t count = n, k_left = k;
  while (true) {
    t.mask = ~0u;
    if (all_and == all_or) {  // every candidate is the same key: the first k_left in index order
      t.prefix = all_and;
      t.quota = k_left;
      return t;
    }
    if (count <= kSortBelow) {  // the k_left-th smallest candidate is the threshold key
      if (cand != scratch) std::copy(cand, cand + count, scratch);
      std::sort(scratch, scratch + count);
      t.prefix = scratch[k_left - 1];
      t.quota = k_left - (std::lower_bound(scratch, scratch + count, t.prefix) - scratch);  // wanted equal keys
      return t;
    }
    const int top = highest_bit(all_and ^ all_or);  // bits above `top` are shared by all candidates
    int digit_bits = 4;  // about one candidate per bin: fewer bins to clear and scan for small sets
    while (digit_bits < kMaxDigitBits && (int64_t{1} << digit_bits) < count) ++digit_bits;
    const int shift = std::max(0, top - digit_bits + 1);
    const uint32_t digit_mask = (2u << (top - shift)) - 1u;  // digits of top - shift + 1 bits
    const int bins = static_cast<int>(digit_mask) + 1;
    std::fill(hist, hist + bins, 0);
    for (int64_t i = 0; i < count; ++i) ++hist[(cand[i] >> shift) & digit_mask];
    int pivot = 0;
    int64_t below = 0;
    while (below + hist[pivot] < k_left) below += hist[pivot++];
    k_left -= below;
    const uint32_t fixed_bits = ~((2u << top) - 1u) | (digit_mask << shift);  // 2u << 31 == 0: all bits
    t.mask = fixed_bits;
    t.prefix = (all_and & ~((2u << top) - 1u)) | (static_cast<uint32_t>(pivot) << shift);
    if (k_left == hist[pivot] || shift == 0) {  // every key of the pivot digit wanted, or the key is exact
      t.quota = k_left;
      return t;
    }
    int64_t kept = 0;  // the pivot digit's candidates (index order is not needed for the threshold)
    all_and = ~0u;
    all_or = 0u;
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t key = cand[i];
      if (((key >> shift) & digit_mask) == static_cast<uint32_t>(pivot)) {
        scratch[kept++] = key;
        all_and &= key;
        all_or |= key;
      }
    }
    cand = scratch;
    count = kept;
  }
}

// Regions up to this many tokens find their threshold by bisection of the key range
// (cpu/region_keys.h: at most 33 vectorised counting passes over keys in L1/L2, fewer than 15 on
// typical scores), larger ones by the radix selection above, which reads the keys about twice.
// Measured on AVX-512 (Xeon) the bisection is 1.6-2x faster per token than the radix passes at
// every size from 144 to 65536 tokens (uniform, normal and 50-level tied scores).
constexpr int64_t kBisectMaxKeys = 65536;

// The loops of the active CPU capability (an unknown VTPRUNE_CPU_CAPABILITY: a ValueError naming it).
const RegionKeyLoops& active_region_key_loops() {
  try {
    return region_key_loops_for(active_cpu_capability());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

template <typename scalar_t>
void select_row(const RegionKeyLoops& loops, const scalar_t* scores, const RegionGroups& groups, const int64_t* k,
                int64_t R, uint32_t* keys,
                uint32_t* scratch, bool* mask) {
  for (int64_t r = 0; r < R; ++r) {
    const int64_t first = groups.start[r], n = groups.start[r + 1] - first;
    const int32_t* members = groups.members.data() + first;
    const int64_t keep = k[r];
    if (keep == 0 || keep == n) {  // none or all of the region
      for (int64_t i = 0; i < n; ++i) mask[members[i]] = keep != 0;
      continue;
    }
    const bool contiguous = groups.contiguous[r];
    const scalar_t* region_scores = scores + members[0];
    bool* region_mask = mask + members[0];
    uint32_t all_and = ~0u, all_or = 0u;
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (contiguous) loops.float_keys(region_scores, n, keys, &all_and, &all_or);
    }
    if (!std::is_same_v<scalar_t, float> || !contiguous) {
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t key =
            descending_key_branchless(static_cast<float>(contiguous ? region_scores[i] : scores[members[i]]));
        keys[i] = key;
        all_and &= key;
        all_or |= key;
      }
    }
    const Threshold t = n <= kBisectMaxKeys ? loops.bisect_threshold(keys, n, keep, all_and, all_or)
                                            : select_threshold(keys, n, keep, all_and, all_or, scratch);
    // Keys under the threshold, then the first `quota` equal to it in index order.
    if (contiguous) {
      loops.mark_under(keys, n, t.mask, t.prefix, region_mask);
    } else {
      for (int64_t i = 0; i < n; ++i) mask[members[i]] = (keys[i] & t.mask) < t.prefix;
    }
    int64_t quota = t.quota;
    for (int64_t i0 = 0; i0 < n && quota > 0; i0 += 4) {  // 4 keys at a time: usually no lane is equal
      if (i0 + 4 <= n) {
        u32x4 key;
        std::memcpy(&key, keys + i0, sizeof key);
        const auto equal = (key & t.mask) == t.prefix;
        if ((equal[0] | equal[1] | equal[2] | equal[3]) == 0) continue;
      }
      for (int64_t i = i0; i < std::min(n, i0 + 4) && quota > 0; ++i) {
        if ((keys[i] & t.mask) == t.prefix) {
          mask[members[i]] = true;
          --quota;
        }
      }
    }
  }
}

at::Tensor region_topk_mask_cpu(const at::Tensor& scores_in, const at::Tensor& region_ids_in, const at::Tensor& k_in) {
  check_region_topk_mask_args(scores_in, region_ids_in, k_in);
  const int64_t B = scores_in.size(0), N = scores_in.size(1), R = k_in.size(1);
  const at::Tensor scores = scores_in.contiguous();
  const at::Tensor ids = region_ids_in.contiguous();
  const at::Tensor k = k_in.contiguous();
  const int64_t* id_ptr = ids.const_data_ptr<int64_t>();
  const int64_t* k_ptr = k.const_data_ptr<int64_t>();
  const bool shared = ids.dim() == 1;  // one [N] map for every row
  // Check ids and budgets before any work: region sizes [B, R], from the shared groups or per row.
  RegionGroups shared_groups;
  std::vector<int64_t> sizes(B * R, 0);
  if (shared) {
    shared_groups.build(id_ptr, N, R, 0, true);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t r = 0; r < R; ++r) sizes[b * R + r] = shared_groups.start[r + 1] - shared_groups.start[r];
    }
  } else {
    for (int64_t b = 0; b < B; ++b) {
      for_each_run(id_ptr + b * N, N, R, b, false,
                   [&](int64_t r, int64_t begin, int64_t end) { sizes[b * R + r] += end - begin; });
    }
  }
  check_budgets(k_ptr, sizes.data(), B, R);
  // Every token is written below (regions with k = 0 as false), so the mask needs no zeroing.
  at::Tensor mask = at::empty({B, N}, scores.options().dtype(at::kBool));
  if (B == 0 || N == 0 || R == 0) return mask.zero_();
  bool* mask_ptr = mask.mutable_data_ptr<bool>();
  const RegionKeyLoops& loops = active_region_key_loops();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "region_topk_mask_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / N);  // ~30 us of work per task
    at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
      std::vector<uint32_t> keys(N), scratch(N);
      RegionGroups row_groups;
      for (int64_t b = begin; b < end; ++b) {
        if (!shared) row_groups.build(id_ptr + b * N, N, R, b, false);
        select_row(loops, s + b * N, shared ? shared_groups : row_groups, k_ptr + b * R, R, keys.data(), scratch.data(),
                   mask_ptr + b * N);
      }
    });
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("region_topk_mask", &region_topk_mask_cpu); }

}  // namespace vtprune::cpu
