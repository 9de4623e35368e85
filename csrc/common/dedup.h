// Round bookkeeping of cosine_dedup_mask (docs/design.md 2.4), used by the CUDA kernel and the host
// tests (the CPU kernel, csrc/cpu/cosine_dedup_mask.cpp, runs the same rounds with vectors): how
// many tokens a round drops, where the survivors go, the NaN-propagating max that defines
// m(a) = max over b in B of cos(x_a, x_b), and m(a) read from a sorted Gram row.
//
// One round on R (|R| = n, in order): A = R[0::2] (n_a = ceil(n/2)), B = R[1::2] (n_b = floor(n/2));
// A is ranked by m descending (tie rule: NaN last, equal -> earlier in A); the first `drop` of
// that ranking leave; R becomes (the rest of A, in ranking order) followed by B (in order).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hd.h"

namespace vtprune {

struct DedupRound {
  int64_t n_a;   // |A| = ceil(n / 2)
  int64_t n_b;   // |B| = floor(n / 2)
  int64_t drop;  // min(r, n_a) with r = min(step, n - n_keep)
};

// The round on n remaining tokens, or false when the rounds are over (r <= 0). A negative
// n_keep (invalid; the Python wrapper rejects it) counts as 0 here so that the rounds always end.
VTPRUNE_HD bool dedup_next_round(int64_t n, int64_t n_keep, int64_t step, DedupRound* round) {
  const int64_t keep = n_keep < 0 ? 0 : n_keep;
  const int64_t r = (n - keep) < step ? (n - keep) : step;
  if (r <= 0) return false;
  round->n_a = (n + 1) / 2;
  round->n_b = n / 2;
  round->drop = r < round->n_a ? r : round->n_a;
  return true;
}

// Tokens left after the round.
VTPRUNE_HD int64_t dedup_survivors(const DedupRound& round) { return round.n_a - round.drop + round.n_b; }

// New position in R of the A member ranked `rank` (0 = highest m), or -1 when it is dropped.
VTPRUNE_HD int64_t dedup_position_of_a(const DedupRound& round, int64_t rank) {
  return rank < round.drop ? -1 : rank - round.drop;
}

// New position in R of B's j-th member (B = R[1::2], j = 0 .. n_b-1).
VTPRUNE_HD int64_t dedup_position_of_b(const DedupRound& round, int64_t j) { return round.n_a - round.drop + j; }

// max with NaN propagation (torch.amax semantics): a NaN anywhere makes m(a) NaN.
template <typename T>
VTPRUNE_HD T nan_max(T a, T b) {
  if (a != a) return a;
  if (b != b) return b;
  return b > a ? b : a;
}

// ---- m(a) from a sorted Gram row (the CUDA path) ----
// The CUDA binding sorts every row of the cosine Gram matrix descending once; m(a) is then the
// value at the first column of the sorted row that belongs to B. Before the sort, NaN cosines are
// stored as +inf, the "NaN marker": torch's CUDA radix sort ranks a NaN by its sign bit (a NaN with
// the sign bit set sorts below -inf), while +inf sorts first whatever its origin. A cosine of
// L2-normalised float64 vectors is never +inf (|cos| <= ~1, or NaN when a vector holds inf/NaN), so
// the marker is unambiguous, and "every NaN first" makes the first hit NaN whenever B holds a NaN
// column: exactly the NaN-propagating max.

// A stored (sorted) Gram entry back to the cosine it stands for.
VTPRUNE_HD double dedup_gram_entry(double stored) { return stored == static_cast<double>(INFINITY) ? NAN : stored; }

// Whether column c is in the bit set (32 columns per word).
VTPRUNE_HD bool dedup_in_set(const uint32_t* bits, int64_t c) { return (bits[c >> 5] >> (c & 31)) & 1u; }

// m(a) from one sorted row (values descending, NaN markers first; columns their column indices):
// the cosine at the first column in the set, -inf when none is. The CUDA kernel reads the same
// entries 4 or 128 at a time; this scalar form is its specification (and the host tests' version).
VTPRUNE_HD double dedup_max_over_set_sorted(const double* values, const int32_t* columns, int64_t n_columns,
                                            const uint32_t* in_set) {
  for (int64_t j = 0; j < n_columns; ++j) {
    if (dedup_in_set(in_set, columns[j])) return dedup_gram_entry(values[j]);
  }
  return -static_cast<double>(INFINITY);
}

}  // namespace vtprune
