// region_topk_mask on the CPU (docs/design.md 2.2): per row b, group the tokens by region (a counting
// sort that keeps index order, done once when the rows share one region map), then find each
// region's threshold by an MSD radix selection on 32-bit rank keys and mark in index order.
//
// descending_key (common/sort_keys.h) maps a score to a key that is smaller for a better score
// (NaN largest, -0 == +0), so the k best tokens are the k smallest keys, ties to the lower index.
// The selection finds a threshold (prefix under a mask of fixed high bits) with `below` keys under
// it and `quota` = k - below of the keys equal to it wanted; one pass in index order then marks the
// keys under the threshold and the first `quota` equal ones: exactly the tie rule. Each radix pass
// starts at the highest bit where the remaining candidates differ and keeps only the pivot digit's
// candidates, so a region takes about two passes over shrinking sets. O(N + R) per row, no sort.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/sort_keys.h"
#include "op_checks.h"

namespace vtprune::cpu {
namespace {

// Region sizes [B, R] after checking that every id lies in [0, R) and every k in [0, size].
std::vector<int64_t> checked_region_sizes(const at::Tensor& ids, const at::Tensor& k, int64_t B, int64_t N) {
  const int64_t R = k.size(1);
  const bool shared = ids.dim() == 1;  // one [N] map for every row
  const int64_t* id = ids.const_data_ptr<int64_t>();
  const int64_t* kk = k.const_data_ptr<int64_t>();
  std::vector<int64_t> sizes(B * R, 0);
  for (int64_t b = 0; b < (shared ? std::min<int64_t>(B, 1) : B); ++b) {
    const int64_t* row = id + b * N;
    for (int64_t j = 0; j < N; ++j) {
      TORCH_CHECK_VALUE(row[j] >= 0 && row[j] < R, "region_ids values must lie in [0, R=", R,
                        ") where R = k.shape[1]; region_ids[", shared ? "" : std::to_string(b) + ", ", j, "] = ",
                        row[j]);
      ++sizes[b * R + row[j]];
    }
  }
  if (shared) {
    for (int64_t b = 1; b < B; ++b) std::copy(sizes.begin(), sizes.begin() + R, sizes.begin() + b * R);
  }
  for (int64_t i = 0; i < B * R; ++i) {
    TORCH_CHECK_VALUE(kk[i] >= 0, "k must be non-negative, got k[", i / R, ", ", i % R, "] = ", kk[i]);
    TORCH_CHECK_VALUE(kk[i] <= sizes[i], "k[", i / R, ", ", i % R, "] = ", kk[i], " is larger than region ", i % R,
                      " of row ", i / R, " (", sizes[i], " tokens)");
  }
  return sizes;
}

// Tokens grouped by region, index order inside each: members[start[r] .. start[r + 1]).
struct RegionGroups {
  std::vector<int64_t> start;       // [R + 1]
  std::vector<int32_t> members;     // [N] token indices
  std::vector<uint8_t> contiguous;  // [R]: region r is the tokens members[start[r]] + 0, 1, ...

  void build(const int64_t* ids, int64_t N, int64_t R) {
    start.assign(R + 1, 0);
    for (int64_t j = 0; j < N; ++j) ++start[ids[j] + 1];
    for (int64_t r = 0; r < R; ++r) start[r + 1] += start[r];
    members.resize(N);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t j = 0; j < N; ++j) members[fill[ids[j]]++] = static_cast<int32_t>(j);
    contiguous.assign(R, 1);
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t t = start[r] + 1; t < start[r + 1] && contiguous[r]; ++t) contiguous[r] = members[t] == members[t - 1] + 1;
    }
  }
};

// descending_key (common/sort_keys.h) on float bits without branches: works lane-wise on uint32_t
// and on vectors of it (GCC / Clang vector extensions), so loops of it vectorise.
template <typename U>
inline U descending_key_of_bits(U bits) {
  const U zero = bits - bits;  // 0 in every lane
  bits = bits == zero + 0x80000000u ? zero : bits;  // -0.0 ranks as +0.0
  const U negative = (bits >> 31) * 0xFFFFFFFFu;    // all ones where the sign bit is set
  const U ascending = (~bits & negative) | ((bits | 0x80000000u) & ~negative);
  const U nan = (bits & 0x7FFFFFFFu) > zero + 0x7F800000u ? zero + 0xFFFFFFFFu : zero;  // NaN ranks last
  return ~ascending | nan;
}

inline uint32_t descending_key_branchless(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return descending_key_of_bits(bits);
}

typedef uint32_t u32x4 __attribute__((vector_size(16)));
typedef uint8_t u8x4 __attribute__((vector_size(4)));

// keys[i] = descending_key(scores[i]), i < n, for contiguous float32 scores; returns AND and OR of them.
inline void float_keys(const float* scores, int64_t n, uint32_t* keys, uint32_t* all_and, uint32_t* all_or) {
  u32x4 a = {~0u, ~0u, ~0u, ~0u}, o = {0u, 0u, 0u, 0u};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    u32x4 bits;
    std::memcpy(&bits, scores + i, sizeof bits);
    const u32x4 key = descending_key_of_bits(bits);
    std::memcpy(keys + i, &key, sizeof key);
    a &= key;
    o |= key;
  }
  uint32_t and_all = a[0] & a[1] & a[2] & a[3], or_all = o[0] | o[1] | o[2] | o[3];
  for (; i < n; ++i) {
    keys[i] = descending_key_branchless(scores[i]);
    and_all &= keys[i];
    or_all |= keys[i];
  }
  *all_and = and_all;
  *all_or = or_all;
}

// mask[i] = (keys[i] & key_mask) < prefix, i < n.
inline void mark_under(const uint32_t* keys, int64_t n, uint32_t key_mask, uint32_t prefix, bool* mask) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    u32x4 key;
    std::memcpy(&key, keys + i, sizeof key);
    const auto under = ((key & key_mask) < prefix) & 1;  // 1 or 0 per lane (a signed vector)
    const u8x4 bytes = __builtin_convertvector(under, u8x4);
    std::memcpy(mask + i, &bytes, sizeof bytes);
  }
  for (; i < n; ++i) mask[i] = (keys[i] & key_mask) < prefix;
}

// The threshold of the k smallest keys: a key is selected when (key & mask) < prefix, or when
// (key & mask) == prefix and it is among the first `quota` such keys in index order.
struct Threshold {
  uint32_t prefix = 0, mask = 0;
  int64_t quota = 0;
};

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

template <typename scalar_t>
void select_row(const scalar_t* scores, const RegionGroups& groups, const int64_t* k, int64_t R, uint32_t* keys,
                uint32_t* scratch, bool* mask) {
  for (int64_t r = 0; r < R; ++r) {
    const int64_t first = groups.start[r], n = groups.start[r + 1] - first;
    const int32_t* members = groups.members.data() + first;
    const int64_t keep = k[r];
    if (keep == 0) continue;
    if (keep == n) {
      for (int64_t i = 0; i < n; ++i) mask[members[i]] = true;
      continue;
    }
    const bool contiguous = groups.contiguous[r];
    const scalar_t* region_scores = scores + members[0];
    bool* region_mask = mask + members[0];
    uint32_t all_and = ~0u, all_or = 0u;
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (contiguous) float_keys(region_scores, n, keys, &all_and, &all_or);
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
    const Threshold t = select_threshold(keys, n, keep, all_and, all_or, scratch);
    // Keys under the threshold, then the first `quota` equal to it in index order.
    if (contiguous) {
      mark_under(keys, n, t.mask, t.prefix, region_mask);
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
  checked_region_sizes(ids, k, B, N);
  at::Tensor mask = at::zeros({B, N}, scores.options().dtype(at::kBool));
  if (B == 0 || N == 0 || R == 0) return mask;
  bool* mask_ptr = mask.mutable_data_ptr<bool>();
  const int64_t* id_ptr = ids.const_data_ptr<int64_t>();
  const int64_t* k_ptr = k.const_data_ptr<int64_t>();
  const bool shared = ids.dim() == 1;
  RegionGroups shared_groups;
  if (shared) shared_groups.build(id_ptr, N, R);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "region_topk_mask_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / N);  // ~30 us of work per task
    at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
      std::vector<uint32_t> keys(N), scratch(N);
      RegionGroups row_groups;
      for (int64_t b = begin; b < end; ++b) {
        if (!shared) row_groups.build(id_ptr + b * N, N, R);
        select_row(s + b * N, shared ? shared_groups : row_groups, k_ptr + b * R, R, keys.data(), scratch.data(),
                   mask_ptr + b * N);
      }
    });
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("region_topk_mask", &region_topk_mask_cpu); }

}  // namespace vtprune::cpu
