// Logits of attention_scores on the CPU: s[i, j] = (scale * q[i]) . k[j] for a block of query
// rows, written row by row into a buffer with each row's running maximum, in two forms:
//
// - packed (many rows): a register-tiled GEMM. K is packed once per kv head into panels of
//   kNR keys laid out [D][kNR] (zeros past N); the scaled query rows of a block into stripes of
//   kMR rows laid out [D][kMR]. A micro-kernel keeps a kMR x kNR tile in registers (AVX-512:
//   12 x 32, AVX2: 6 x 16, portable: 4 x 8), broadcasting one query value per row and loading
//   kNR keys per d. Packing transposes kLanes x kLanes blocks in registers.
//   The block is walked key chunk by key chunk (a chunk of packed K stays in L2) and stripe by
//   stripe inside a chunk.
// - direct (a few rows, e.g. the [CLS] row): dot products straight from K's rows, kLanes keys at
//   a time, each a vector of partial sums, reduced together by a transpose and vertical adds; K
//   is streamed once, in order, and never packed.
//
// Keys a row may not see (causal, or past N in the last tile) get -inf, so later passes need no
// masks. Compiled once per instruction set: include only from dispatched sources.
#pragma once

#include "cpu/capability/vec.h"

namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS {

#if VTPRUNE_CPU_CAPABILITY_ID == 2
constexpr int kMR = 12;  // 24 accumulators of the 32 zmm registers
#elif VTPRUNE_CPU_CAPABILITY_ID == 1
constexpr int kMR = 6;  // 12 accumulators of the 16 ymm registers
#else
constexpr int kMR = 4;
#endif
static_assert(kMR <= kLanes, "a query stripe is packed with one kLanes x kLanes transpose");
// ~1600 instructions per tile at D = 64; a unit's upcoming input is ~5 lines per tile at LLaVA sizes
constexpr int kPrefetchLinesPerTile = 8;
constexpr int kNV = 2;                // vectors per key panel
constexpr int kNR = kNV * kLanes;     // keys per panel

VTPRUNE_INLINE int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
VTPRUNE_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// rows[t] <- scale * x[t][d0, d0 + kLanes) for t < n (rows `stride` floats apart, each with
// `width` valid floats from d0: a shorter last block is zero-filled), zeros for t >= n (n <=
// kRows <= kLanes); then transposed, so that rows[i] holds column d0 + i.
template <int kRows>
VTPRUNE_INLINE void load_transposed(Vec (&rows)[kLanes], const float* x, int64_t stride, int64_t n, int64_t d0,
                                    int64_t width, float scale) {
  const Vec s = Vec::broadcast(scale);
  for (int t = kRows; t < kLanes; ++t) rows[t] = Vec::zero();
  if (n == kRows && width >= kLanes) {  // the common case, without branches
    for (int t = 0; t < kRows; ++t) rows[t] = Vec::load(x + t * stride + d0) * s;
  } else {
    const int w = static_cast<int>(min64(width, kLanes));
    for (int t = 0; t < kRows; ++t) rows[t] = t < n ? Vec::load_first(x + t * stride + d0, w) * s : Vec::zero();
  }
  transpose(rows);
}

// kp[panel][d][kNR] <- k[j][d] for j < n (k rows `stride` floats apart), zeros for j in
// [n, round_up(n, kLanes)); a last panel of at most kLanes keys is read as one vector only.
inline void pack_keys(float* kp, const float* k, int64_t stride, int64_t n, int64_t D) {
  for (int64_t j0 = 0; j0 < n; j0 += kLanes) {
    float* dst = kp + (j0 / kNR) * kNR * D + j0 % kNR;
    for (int64_t d0 = 0; d0 < D; d0 += kLanes) {
      Vec cols[kLanes];
      load_transposed<kLanes>(cols, k + j0 * stride, stride, min64(kLanes, n - j0), d0, D - d0, 1.0f);
      const int64_t count = min64(kLanes, D - d0);
      for (int64_t i = 0; i < count; ++i) cols[i].store(dst + (d0 + i) * kNR);
    }
  }
}

// qp[stripe][d][kMR] <- scale * q[i][d] for i < rows (q rows `stride` floats apart), zeros for
// the missing rows of the last stripe. Writes up to kLanes floats past the last stripe.
inline void pack_queries(float* qp, const float* q, int64_t stride, int64_t rows, int64_t D, float scale) {
  for (int64_t i0 = 0; i0 < rows; i0 += kMR) {
    float* stripe = qp + i0 * D;
    for (int64_t d0 = 0; d0 < D; d0 += kLanes) {
      Vec cols[kLanes];
      load_transposed<kMR>(cols, q + i0 * stride, stride, min64(kMR, rows - i0), d0, D - d0, scale);
      const int64_t count = min64(kLanes, D - d0);
      // each store writes kLanes >= kMR floats; the next one overwrites the excess
      for (int64_t i = 0; i < count; ++i) cols[i].store(stripe + (d0 + i) * kMR);
    }
  }
}

// Input that will be packed next, requested into L2 a few cache lines per GEMM tile, so that
// packing finds it there instead of stalling on memory: `soon` (the unit's next query rows)
// first, then `later` (the next unit's keys and first rows), spread over the whole unit. Up to
// kRegions regions of `rows` rows, `stride` floats apart, `row_floats` each.
struct PrefetchQueue {
  static constexpr int kRegions = 3;
  struct Region {
    const float* base;
    int64_t spans, stride, span_floats;  // rows, or all rows as one span when they are contiguous
  };
  Region regions[kRegions];
  int count = 0, current = 0;
  int64_t span = 0;
  const float* at = nullptr;   // the next line
  const float* end = nullptr;  // the end of the current span

  void add(const float* base, int64_t rows, int64_t stride, int64_t row_floats) {
    if (count == kRegions || rows <= 0) return;
    regions[count++] = stride == row_floats ? Region{base, 1, 0, rows * row_floats} : Region{base, rows, stride, row_floats};
    if (count == 1) start_span();
  }
  bool done() const { return current == count; }
  VTPRUNE_INLINE void step(int lines) {
    for (; lines > 0 && at != nullptr; --lines) {
      VTPRUNE_PREFETCH_L2(at);
      at += 16;  // 64-byte lines
      if (at >= end) next_span();
    }
  }

 private:
  void start_span() {
    const Region& r = regions[current];
    at = r.base + span * r.stride;
    end = at + r.span_floats;
  }
  void next_span() {
    if (++span == regions[current].spans) span = 0, ++current;
    if (current < count) {
      start_span();
    } else {
      at = nullptr;
    }
  }
};

// Where a block's logits go and which keys each of its rows sees. Either the logits are stored
// (logits rows, with each row's running maximum), or, when `lse` is given (fused), the tile's
// probabilities exp(s - lse[i]) are summed over its rows straight into col_sum[j]: no logits
// are stored and the caller's softmax pass is skipped.
struct LogitsOut {
  float* logits;     // [rows][ld]
  int64_t ld;
  Vec* row_max;      // [rows] running maxima, one vector per row
  int64_t first_limit;  // keys visible to the block's first row (the next rows see one more each when causal)
  bool causal;
  const float* lse = nullptr;  // fused: [rows]
  float* col_sum = nullptr;    // fused: [ld]
  PrefetchQueue* soon = nullptr;
  PrefetchQueue* later = nullptr;

  int64_t limit(int64_t i) const { return causal ? first_limit + i : first_limit; }
};

// The R x (NV * kLanes) tile of rows [i0, i0 + R) and keys [j0, ...) from a query stripe and a
// key panel. Not inlined: the epilogue's constants must not stay live (hoisted out of the
// caller's loops) through the accumulation loop, which needs every register.
template <bool kFused, int R, int NV>
VTPRUNE_NOINLINE void logits_tile(const float* qp, const float* panel, int64_t D, int64_t i0, int64_t j0,
                                const LogitsOut& out) {
  Vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = Vec::zero();
  for (int64_t d = 0; d < D; ++d) {
    Vec kv[NV];
    for (int c = 0; c < NV; ++c) kv[c] = Vec::load(panel + d * kNR + c * kLanes);
    for (int r = 0; r < R; ++r) {
      const Vec qv = Vec::broadcast(qp[d * kMR + r]);
      for (int c = 0; c < NV; ++c) acc[r][c] = fmadd(qv, kv[c], acc[r][c]);
    }
  }
  const bool masked = j0 + NV * kLanes > out.limit(i0);
  if constexpr (kFused) {
    Vec sum[NV];
    for (int c = 0; c < NV; ++c) sum[c] = Vec::zero();
    for (int r = 0; r < R; ++r) {
      const Vec shift = Vec::broadcast(out.lse[i0 + r]);
      for (int c = 0; c < NV; ++c) {
        Vec v = acc[r][c];
        if (masked) v = keep_first(v, out.limit(i0 + r) - j0 - c * kLanes, -kInf);
        sum[c] = sum[c] + exp(v - shift);
      }
    }
    for (int c = 0; c < NV; ++c) {
      float* dst = out.col_sum + j0 + c * kLanes;
      (Vec::load(dst) + sum[c]).store(dst);
    }
    return;
  }
  for (int r = 0; r < R; ++r) {
    float* row = out.logits + (i0 + r) * out.ld + j0;
    Vec m = out.row_max[i0 + r];
    for (int c = 0; c < NV; ++c) {
      Vec v = acc[r][c];
      if (masked) v = keep_first(v, out.limit(i0 + r) - j0 - c * kLanes, -kInf);
      v.store(row + c * kLanes);
      m = max_hw(m, v);
    }
    out.row_max[i0 + r] = m;
  }
}

// logits_tile with the row count R chosen at run time (R <= kMR).
template <bool kFused, int NV, int R = kMR>
VTPRUNE_INLINE void logits_tile_rows(int64_t rows, const float* qp, const float* panel, int64_t D, int64_t i0, int64_t j0,
                                     const LogitsOut& out) {
  if constexpr (R > 1) {
    if (rows < R) return logits_tile_rows<kFused, NV, R - 1>(rows, qp, panel, D, i0, j0, out);
  }
  logits_tile<kFused, R, NV>(qp, panel, D, i0, j0, out);
}

// Logits of `rows` query rows (packed in qp) against keys [0, cols) of the packed kp, keys in
// chunks of `chunk` (a multiple of kNR), stripes of kMR rows inside each chunk. A stripe stops
// at the keys its last row sees; the row maxima must start at -inf. kFused: out.lse is given.
template <bool kFused>
void packed_logits(const float* qp, const float* kp, int64_t D, int64_t rows, int64_t cols, int64_t chunk,
                          const LogitsOut& out) {
  for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
    for (int64_t i0 = 0; i0 < rows; i0 += kMR) {
      const int64_t stripe_rows = min64(kMR, rows - i0);
      const int64_t end = min64(min64(cols, c0 + chunk), out.limit(i0 + stripe_rows - 1));
      const float* stripe = qp + i0 * D;
      for (int64_t j0 = c0; j0 < end; j0 += kNR) {
        if (out.soon != nullptr) (out.soon->done() ? out.later : out.soon)->step(kPrefetchLinesPerTile);
        const float* panel = kp + j0 * D;
        if (end - j0 > kLanes) {
          logits_tile_rows<kFused, 2>(stripe_rows, stripe, panel, D, i0, j0, out);
        } else {
          logits_tile_rows<kFused, 1>(stripe_rows, stripe, panel, D, i0, j0, out);
        }
      }
    }
  }
}

// Keys of one packed-path stripe, or of one direct-path row, that hold logits: the row(s) see
// keys below `cols`; tiles and groups are written kLanes at a time.
VTPRUNE_INLINE int64_t written_span(int64_t cols) { return round_up(cols, kLanes); }

// Logits of one query row `qs` (already scaled, zero-padded to a multiple of kLanes) against
// keys [0, cols) read from k (rows `stride` floats apart, D contiguous floats each), into
// out row i. The row's maximum must start at -inf.
inline void direct_logits_row(const float* qs, const float* k, int64_t stride, int64_t D, int64_t cols, int64_t i,
                              const LogitsOut& out) {
  const int64_t d_full = D / kLanes * kLanes;
  const int d_tail = static_cast<int>(D - d_full);
  float* row = out.logits + i * out.ld;
  Vec m = out.row_max[i];
  for (int64_t j0 = 0; j0 < cols; j0 += kLanes) {
    const int64_t keys = min64(kLanes, cols - j0);
    Vec part[kLanes];
    for (int t = 0; t < kLanes; ++t) part[t] = Vec::zero();
    const float* k0 = k + j0 * stride;
    if (keys == kLanes) {
      // key by key: each key's row is read front to back (K is streamed once, in order)
      for (int t = 0; t < kLanes; ++t) {
        const float* kt = k0 + t * stride;
        VTPRUNE_PREFETCH(kt + 2 * kLanes * stride);
        for (int64_t d = 0; d < d_full; d += kLanes) part[t] = fmadd(Vec::load(qs + d), Vec::load(kt + d), part[t]);
        if (d_tail > 0) part[t] = fmadd(Vec::load(qs + d_full), Vec::load_first(kt + d_full, d_tail), part[t]);
      }
    } else {
      for (int64_t t = 0; t < keys; ++t) {
        for (int64_t d = 0; d < d_full; d += kLanes) part[t] = fmadd(Vec::load(qs + d), Vec::load(k0 + t * stride + d), part[t]);
        if (d_tail > 0) part[t] = fmadd(Vec::load(qs + d_full), Vec::load_first(k0 + t * stride + d_full, d_tail), part[t]);
      }
    }
    const Vec s = keep_first(sum_each(part), out.limit(i) - j0, -kInf);
    s.store(row + j0);
    m = max_hw(m, s);
  }
  out.row_max[i] = m;
}

}  // namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS
