// Host simulation of the CUDA kernels of region_topk_mask (region_topk_mask.cu) and
// cosine_dedup_mask (cosine_gram.cu, cosine_dedup_mask.cu): their algorithms step for step, serially, with the
// same shared helpers (csrc/common/*.h). The orders the kernels leave to atomics (tokens inside a
// region's segment, candidates before the first sort) are shuffled with a seed, since results must
// not depend on them. tests/test_cuda_host_sim.py feeds random cases and compares the masks with
// vtprune_kernels.reference, so the GPU algorithms are checked against the contract without a GPU.
//
// One case on stdin (whitespace-separated integers), the mask on stdout (one line of 0/1 per row):
//   region SEED B N R ids_rows | scores [B*N] (float bits) | region_ids [ids_rows*N] | k [B*R]
//   dedup SEED B N Np step | n_keep [B] | candidates [B*N] | order_scores [B*N] (float bits)
//         | sorted_values [B*Np*Np] (double bits) | sorted_columns [B*Np*Np]
// sorted_values/columns are what the binding gives the kernel (NaN marker +inf, rows descending).
//   gram SEED B N C Np | x [B*N*C] (float bits)  ->  the cosine Gram matrix [B*Np*Np] as double bits
//         (cosine_norms_kernel + cosine_gram_kernel: tiles on and above the diagonal and their mirrors).
// Exit code 2 when a kernel invariant breaks (a radix pass without exactly one pivot, a slot of R
// written twice or never).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "common/cosine.h"
#include "common/dedup.h"
#include "common/radix_select.h"
#include "common/sort_keys.h"
#include "serial_kernels.h"

namespace {

bool invariants_hold = true;

template <typename T>
std::vector<T> read_values(int64_t count) {
  std::vector<T> out(static_cast<size_t>(count));
  for (auto& v : out) {
    long long raw = 0;
    unsigned long long uraw = 0;
    if constexpr (std::is_unsigned<T>::value) {
      if (std::scanf("%llu", &uraw) != 1) std::exit(3);
      v = static_cast<T>(uraw);
    } else {
      if (std::scanf("%lld", &raw) != 1) std::exit(3);
      v = static_cast<T>(raw);
    }
  }
  return out;
}

float float_from_bits(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

double double_from_bits(uint64_t bits) {
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

void print_mask(const std::vector<bool>& mask, int64_t B, int64_t N) {
  for (int64_t b = 0; b < B; ++b) {
    std::string line;
    for (int64_t i = 0; i < N; ++i) line += mask[b * N + i] ? '1' : '0';
    std::printf("%s\n", line.c_str());
  }
}

// build_region_segments_kernel + region_topk_select_kernel, one row after the other.
void region_topk(std::mt19937& rng) {
  long long B, N, R, ids_rows;
  if (std::scanf("%lld %lld %lld %lld", &B, &N, &R, &ids_rows) != 4) std::exit(3);
  const auto score_bits = read_values<uint32_t>(B * N);
  const auto ids = read_values<int64_t>(ids_rows * N);
  const auto k = read_values<int64_t>(B * R);
  std::vector<bool> mask(static_cast<size_t>(B * N), false);  // the build kernel clears the row
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* id = ids.data() + (ids_rows == 1 ? 0 : b * N);
    // Count, scan, scatter (ids outside [0, R) left out); the scatter order inside a segment is the
    // atomics' order on the GPU: shuffled here.
    std::vector<int64_t> offsets(static_cast<size_t>(R + 1), 0);
    for (int64_t i = 0; i < N; ++i) {
      if (id[i] >= 0 && id[i] < R) ++offsets[id[i] + 1];
    }
    std::partial_sum(offsets.begin(), offsets.end(), offsets.begin());
    std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
    std::vector<int32_t> members(static_cast<size_t>(offsets[R]));
    for (int64_t i = 0; i < N; ++i) {
      if (id[i] >= 0 && id[i] < R) members[cursor[id[i]]++] = static_cast<int32_t>(i);
    }
    for (int64_t r = 0; r < R; ++r) {
      std::shuffle(members.begin() + offsets[r], members.begin() + offsets[r + 1], rng);
      std::vector<uint64_t> keys;
      for (int64_t j = offsets[r]; j < offsets[r + 1]; ++j) {
        const int32_t index = members[j];
        keys.push_back(vtprune::rank_key(float_from_bits(score_bits[b * N + index]), static_cast<uint32_t>(index)));
      }
      if (vtprune::radix_select_start(static_cast<int64_t>(keys.size()), k[b * R + r]).k_left == 0) continue;
      const vtprune::RadixSelectState state = vtprune_sim::radix_select(keys, k[b * R + r], N, &invariants_hold);
      for (const uint64_t key : keys) {
        if (vtprune::radix_select_selected(state, key)) mask[b * N + vtprune::rank_key_index(key)] = true;
      }
    }
  }
  print_mask(mask, B, N);
}

// cosine_dedup_kernel for every image.
void cosine_dedup(std::mt19937& rng) {
  long long B, N, Np, step;
  if (std::scanf("%lld %lld %lld %lld", &B, &N, &Np, &step) != 4) std::exit(3);
  const auto n_keep = read_values<int64_t>(B);
  const auto candidates = read_values<int64_t>(B * N);
  const auto order_bits = read_values<uint32_t>(B * N);
  const auto value_bits = read_values<uint64_t>(B * Np * Np);
  const auto columns = read_values<int32_t>(B * Np * Np);
  std::vector<double> values(value_bits.size());
  for (size_t i = 0; i < values.size(); ++i) values[i] = double_from_bits(value_bits[i]);

  std::vector<bool> mask(static_cast<size_t>(B * N), false);
  const int64_t P = vtprune::next_pow2(N);
  const int64_t words = (Np + 31) / 32;
  for (int64_t b = 0; b < B; ++b) {
    const double* V = values.data() + b * Np * Np;
    const int32_t* C = columns.data() + b * Np * Np;
    std::vector<uint64_t> keys(static_cast<size_t>(P));
    std::vector<uint32_t> indices(static_cast<size_t>(P));
    // R0: the candidates' keys in the atomics' order (shuffled), then the block sort.
    std::vector<int64_t> visit(static_cast<size_t>(N));
    std::iota(visit.begin(), visit.end(), 0);
    std::shuffle(visit.begin(), visit.end(), rng);
    int64_t n = 0;
    for (const int64_t i : visit) {
      if (!candidates[b * N + i]) continue;
      keys[n] = vtprune::descending_key64(static_cast<double>(float_from_bits(order_bits[b * N + i])));
      indices[n] = static_cast<uint32_t>(i);
      ++n;
    }
    vtprune_sim::bitonic_sort_pairs(keys, indices, n);
    std::vector<int32_t> order(static_cast<size_t>(N)), next(static_cast<size_t>(N));
    for (int64_t j = 0; j < n; ++j) order[j] = static_cast<int32_t>(indices[j]);

    vtprune::DedupRound round;
    std::vector<uint32_t> in_b(static_cast<size_t>(words));
    while (vtprune::dedup_next_round(n, n_keep[b], step, &round)) {
      std::fill(in_b.begin(), in_b.end(), 0u);
      for (int64_t j = 0; j < round.n_b; ++j) {
        const int32_t t = order[2 * j + 1];
        in_b[t >> 5] |= 1u << (t & 31);
      }
      if (round.n_b == 0) {
        keys[0] = vtprune::descending_key64(-static_cast<double>(INFINITY));
        indices[0] = 0u;
      } else {
        for (int64_t i = 0; i < round.n_a; ++i) {
          const int64_t row = static_cast<int64_t>(order[2 * i]) * Np;
          keys[i] = vtprune::descending_key64(vtprune::dedup_max_over_set_sorted(V + row, C + row, Np, in_b.data()));
          indices[i] = static_cast<uint32_t>(i);
        }
      }
      vtprune_sim::bitonic_sort_pairs(keys, indices, round.n_a);
      const int64_t survivors = vtprune::dedup_survivors(round);
      std::vector<int> writes(static_cast<size_t>(survivors), 0);
      for (int64_t q = 0; q < round.n_a; ++q) {
        const int64_t pos = vtprune::dedup_position_of_a(round, q);
        if (pos >= 0) {
          next[pos] = order[2 * indices[q]];
          ++writes[pos];
        }
      }
      for (int64_t j = 0; j < round.n_b; ++j) {
        const int64_t pos = vtprune::dedup_position_of_b(round, j);
        next[pos] = order[2 * j + 1];
        ++writes[pos];
      }
      if (std::any_of(writes.begin(), writes.end(), [](int w) { return w != 1; })) invariants_hold = false;
      std::swap(order, next);
      n = survivors;
    }
    for (int64_t j = 0; j < n; ++j) mask[b * N + order[j]] = true;
  }
  print_mask(mask, B, N);
}

// cosine_norms_kernel + cosine_gram_kernel: every output one fma chain over k in order.
void cosine_gram(std::mt19937&) {
  long long b_in, n_in, c_in, np_in;
  if (std::scanf("%lld %lld %lld %lld", &b_in, &n_in, &c_in, &np_in) != 4) std::exit(3);
  const int64_t B = b_in, N = n_in, C = c_in, Np = np_in;
  const auto x_bits = read_values<uint32_t>(B * N * C);
  auto feature = [&](int64_t b, int64_t i, int64_t k) {  // zero rows past N, as the kernel loads them
    return i < N ? static_cast<double>(float_from_bits(x_bits[(b * N + i) * C + k])) : 0.0;
  };
  const int64_t tile = vtprune::kCosineGramTile, n_tiles = (Np + tile - 1) / tile;
  std::vector<double> gram(static_cast<size_t>(B * Np * Np));
  std::vector<int> writes(gram.size(), 0);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> norm2(static_cast<size_t>(Np), 0.0);
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t k = 0; k < C; ++k) norm2[i] = std::fma(feature(b, i, k), feature(b, i, k), norm2[i]);
    }
    for (int64_t t = 0; t < n_tiles * (n_tiles + 1) / 2; ++t) {
      int64_t ti, tj;
      vtprune::upper_triangle_pair(t, n_tiles, &ti, &tj);
      if (ti > tj) invariants_hold = false;
      for (int64_t i = ti * tile; i < std::min(Np, (ti + 1) * tile); ++i) {
        for (int64_t j = tj * tile; j < std::min(Np, (tj + 1) * tile); ++j) {
          double acc = 0.0;
          for (int64_t k = 0; k < C; ++k) acc = std::fma(feature(b, i, k), feature(b, j, k), acc);
          const double cosine = vtprune::cosine_from_dots(acc, norm2[i], norm2[j]);
          gram[(b * Np + i) * Np + j] = cosine;
          gram[(b * Np + j) * Np + i] = cosine;
          ++writes[(b * Np + i) * Np + j];
          ++writes[(b * Np + j) * Np + i];
        }
      }
    }
  }
  if (std::any_of(writes.begin(), writes.end(), [](int w) { return w == 0; })) invariants_hold = false;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < Np; ++i) {
      std::string line;
      for (int64_t j = 0; j < Np; ++j) {
        uint64_t bits;
        const double v = gram[(b * Np + i) * Np + j];
        std::memcpy(&bits, &v, sizeof bits);
        line += std::to_string(bits) + (j + 1 < Np ? " " : "");
      }
      std::printf("%s\n", line.c_str());
    }
  }
}

}  // namespace

int main() {
  char op[16] = {};
  unsigned seed = 0;
  if (std::scanf("%15s %u", op, &seed) != 2) return 3;
  std::mt19937 rng(seed);
  if (std::strcmp(op, "region") == 0) {
    region_topk(rng);
  } else if (std::strcmp(op, "dedup") == 0) {
    cosine_dedup(rng);
  } else if (std::strcmp(op, "gram") == 0) {
    cosine_gram(rng);
  } else {
    return 3;
  }
  return invariants_hold ? 0 : 2;
}
