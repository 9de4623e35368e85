// One unit of attention_scores on the CPU (attention_kernel.h), compiled once per instruction
// set (setup.py: CPU_DISPATCHED_SOURCES).
//
// A unit walks its query rows in blocks. Per block and head: the block's logits (a buffer sized
// for L2; attention_logits.h), then per stripe of rows the softmax numerators in place
// (exp(s - row max), or exp(s - lse) when the model's log-sum-exp is given) and their fold into
// the destination with weight 1 / row sum: the unit's accumulator, or, when a unit holds every
// head, a per-block buffer that collects the heads of each row and is folded into the
// accumulator once the block's heads are done. Summation order depends only on the problem
// (never on threads or blocking), so results are deterministic.
#include "cpu/attention_kernel.h"

#include "cpu/attention_logits.h"
#include "cpu/row_math.h"

namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS {
namespace {

constexpr int64_t kBlockBytes = 256 * 1024;     // logits of one block (L2)
constexpr int64_t kKeyChunkBytes = 128 * 1024;  // packed keys walked per pass over a block (L2)
// Units with at most this many rows compute logits straight from K (no packing): packing costs
// about as much as one row's dot products.
constexpr int64_t kDirectMaxRows = kMR / 2;

constexpr int64_t kAlign = 16;  // floats: 64 bytes

VTPRUNE_INLINE int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Sizes of one thread's workspace (all in floats, each part 64-byte aligned).
struct Layout {
  int64_t ld;          // logits row stride: N rounded up to kNR (also the accumulator length)
  int64_t block_rows;  // query rows per block, a multiple of kMR
  int64_t key_chunk;   // keys per pass over a block, a multiple of kNR
  int64_t d_pad;       // D rounded up to kLanes
  int64_t kp, qp, logits, row_max, weights, head_acc, qrow, total;  // offsets, then the total
};

Layout layout(const AttentionProblem& p) {
  Layout l{};
  l.ld = round_up(p.N, kNR);
  const int64_t rows_per_unit = round_up(p.chunk_rows, kMR);
  l.block_rows = min64(rows_per_unit, max64(kMR, kBlockBytes / (4 * l.ld) / kMR * kMR));
  l.key_chunk = max64(kNR, kKeyChunkBytes / (4 * p.D) / kNR * kNR);
  l.d_pad = round_up(p.D, kLanes);
  int64_t at = 0;
  auto take = [&at](int64_t floats) {
    const int64_t offset = at;
    at += round_up(floats, kAlign);
    return offset;
  };
  l.kp = take(l.ld * p.D);
  l.qp = take(l.block_rows * p.D + kLanes);  // pack_queries writes past its last stripe
  l.logits = take(l.block_rows * l.ld);
  l.row_max = take(l.block_rows * kLanes);
  l.weights = take(l.block_rows);
  l.head_acc = take(p.heads_in_unit ? l.block_rows * l.ld : 0);
  l.qrow = take(l.d_pad);
  l.total = at;
  return l;
}

int64_t workspace_floats(const AttentionProblem& p) { return layout(p).total; }
int64_t acc_stride(const AttentionProblem& p) { return round_up(p.N, kNR); }

bool is_nan(float x) { return x != x; }

// Softmax numerators of `rows` rows (logits rows `ld` apart, `span` written keys each) and
// their fold into dst rows (`dst_ld` apart, or all into one row when dst_ld == 0) by `op`, with
// weight 1 / row sum (1 with the model's lse). The shift is lse[i] when given, else the row's
// maximum; rows whose softmax is poisoned (NaN or inf logits, a NaN or -inf lse) also set the
// keys past `span` (up to dst_len) to NaN, as the reference's masked keys become NaN.
void softmax_fold(float* logits, int64_t ld, int64_t rows, int64_t span, const Vec* row_max, const float* lse,
                  float* w, Fold op, float* dst, int64_t dst_ld, int64_t dst_len) {
  for (int64_t i = 0; i < rows; ++i) {
    const float sum = lse != nullptr ? exp_shift_inplace<false>(logits + i * ld, span, lse[i])
                                     : exp_shift_inplace<true>(logits + i * ld, span, reduce_max(row_max[i]));
    w[i] = lse != nullptr ? 1.0f : 1.0f / sum;
  }
  if (dst_ld == 0) {
    if (op == Fold::kSum) {
      add_rows(dst, logits, ld, w, rows, span);
    } else {
      max_rows(dst, logits, ld, w, rows, span);
    }
  } else {
    for (int64_t i = 0; i < rows; ++i) {
      if (op == Fold::kSum) {
        add_rows(dst + i * dst_ld, logits + i * ld, ld, w + i, 1, span);
      } else {
        max_rows(dst + i * dst_ld, logits + i * ld, ld, w + i, 1, span);
      }
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    const float shift = lse != nullptr ? lse[i] : 0.0f;
    if (is_nan(w[i]) || is_nan(-kInf - shift)) fill(dst + i * dst_ld + span, dst_len - span, __builtin_nanf(""));
  }
}

// One unit's view of the problem and of its thread's workspace.
struct Unit {
  const AttentionProblem& p;
  Layout l;
  int64_t unit_index;
  int64_t b, h_begin, h_end, r_begin, r_end;
  bool direct;  // few rows: logits straight from K, nothing packed
  float* kp = nullptr;
  float* qp = nullptr;
  float* logits = nullptr;
  Vec* row_max = nullptr;
  float* weights = nullptr;
  float* head_acc = nullptr;
  float* qrow = nullptr;
  int64_t packed_kv = -1;  // the kv head whose keys kp holds
  PrefetchQueue later;     // the next unit's input

  Unit(const AttentionProblem& problem, int64_t u, float* ws) : p(problem), l(layout(problem)), unit_index(u) {
    const int64_t head_groups = p.head_groups();
    b = u / (head_groups * p.chunks);
    const int64_t g = (u / p.chunks) % head_groups;
    h_begin = p.heads_in_unit ? 0 : g;
    h_end = p.heads_in_unit ? p.Hq : g + 1;
    r_begin = (u % p.chunks) * p.chunk_rows;
    r_end = min64(p.M, r_begin + p.chunk_rows);
    direct = r_end - r_begin <= kDirectMaxRows;
    if (ws == nullptr) return;  // only the unit's place in the problem
    if (!direct) plan_later(later);
    kp = ws + l.kp;
    qp = ws + l.qp;
    logits = ws + l.logits;
    row_max = reinterpret_cast<Vec*>(ws + l.row_max);
    weights = ws + l.weights;
    head_acc = ws + l.head_acc;
    qrow = ws + l.qrow;
  }

  // Row i sees keys [0, visible(i)).
  int64_t visible(int64_t i) const { return p.causal ? p.N - p.M + i + 1 : p.N; }

  const float* q_rows(int64_t b_, int64_t h, int64_t r0) const {
    return p.q + b_ * p.q_stride_b + h * p.q_stride_h + r0 * p.q_stride_m;
  }
  const float* k_rows(int64_t b_, int64_t kv) const { return p.k + b_ * p.k_stride_b + kv * p.k_stride_h; }

  // Query rows packed after head h of block [r0, r0 + rows): the next head's, or the next block's.
  void plan_soon(PrefetchQueue& queue, int64_t h, int64_t r0, int64_t rows) const {
    if (h + 1 < h_end) {
      if ((h + 1) / p.group != h / p.group) queue.add(k_rows(b, (h + 1) / p.group), p.N, p.k_stride_n, p.D);
      queue.add(q_rows(b, h + 1, r0), rows, p.q_stride_m, p.D);
    } else if (r0 + rows < r_end) {
      queue.add(q_rows(b, h_begin, r0 + rows), min64(l.block_rows, r_end - r0 - rows), p.q_stride_m, p.D);
    }
  }

  // What the next unit packs first: its keys (unless they are this unit's last) and first rows.
  void plan_later(PrefetchQueue& queue) const {
    if (unit_index + 1 >= p.units()) return;
    const Unit after(p, unit_index + 1, nullptr);
    if (after.b != b || after.h_begin / p.group != (h_end - 1) / p.group) {
      queue.add(k_rows(after.b, after.h_begin / p.group), p.N, p.k_stride_n, p.D);
    }
    queue.add(q_rows(after.b, after.h_begin, after.r_begin), min64(l.block_rows, after.r_end - after.r_begin),
              p.q_stride_m, p.D);
  }

  // Head h on rows [r0, r0 + rows): their softmax folded into dst (acc, or head_acc's rows).
  // With the model's lse, rows that fold by sum into acc are summed in the GEMM's epilogue
  // (fused): no logits are stored.
  void run_head(int64_t h, int64_t r0, int64_t rows, float* acc) {
    const int64_t kv = h / p.group;
    const float* q = q_rows(b, h, r0);
    const float* k = k_rows(b, kv);
    const float* lse = p.lse != nullptr ? p.lse + (b * p.Hq + h) * p.M + r0 : nullptr;
    const bool fused = lse != nullptr && !direct && !p.heads_in_unit && p.query_fold == Fold::kSum;
    LogitsOut out{logits, l.ld, row_max, visible(r0), p.causal};
    for (int64_t i = 0; i < rows; ++i) row_max[i] = Vec::broadcast(-kInf);
    if (direct) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t d = 0; d < l.d_pad; ++d) qrow[d] = d < p.D ? p.scale * q[i * p.q_stride_m + d] : 0.0f;
        direct_logits_row(qrow, k, p.k_stride_n, p.D, visible(r0 + i), i, out);
      }
    } else {
      if (kv != packed_kv) {
        pack_keys(kp, k, p.k_stride_n, p.N, p.D);
        packed_kv = kv;
      }
      pack_queries(qp, q, p.q_stride_m, rows, p.D, p.scale);
      PrefetchQueue soon;
      plan_soon(soon, h, r0, rows);
      out.soon = &soon;
      out.later = &later;
      if (fused) {
        out.lse = lse;
        out.col_sum = acc;
        packed_logits<true>(qp, kp, p.D, rows, visible(r0 + rows - 1), l.key_chunk, out);
      } else {
        packed_logits<false>(qp, kp, p.D, rows, visible(r0 + rows - 1), l.key_chunk, out);
      }
    }
    // Rows computed together (a stripe; one row on the direct path) share their written span.
    const int64_t stripe = direct ? 1 : kMR;
    for (int64_t i0 = 0; i0 < rows; i0 += stripe) {
      const int64_t n = min64(stripe, rows - i0);
      const int64_t span = written_span(visible(r0 + i0 + n - 1));
      if (fused) {
        for (int64_t i = i0; i < i0 + n; ++i) {
          if (is_nan(-kInf - lse[i])) fill(acc + span, l.ld - span, __builtin_nanf(""));
        }
      } else if (p.heads_in_unit) {
        softmax_fold(logits + i0 * l.ld, l.ld, n, span, row_max + i0, lse == nullptr ? nullptr : lse + i0, weights,
                     p.head_fold, head_acc + i0 * l.ld, l.ld, l.ld);
      } else {
        softmax_fold(logits + i0 * l.ld, l.ld, n, span, row_max + i0, lse == nullptr ? nullptr : lse + i0, weights,
                     p.query_fold, acc, 0, l.ld);
      }
    }
  }
};

void run_unit(const AttentionProblem& p, int64_t u, float* acc, float* ws) {
  Unit unit(p, u, ws);
  const Layout& l = unit.l;
  fill(acc, l.ld, 0.0f);
  for (int64_t r0 = unit.r_begin; r0 < unit.r_end; r0 += l.block_rows) {
    const int64_t rows = min64(l.block_rows, unit.r_end - r0);
    if (p.heads_in_unit) fill(unit.head_acc, rows * l.ld, 0.0f);
    for (int64_t h = unit.h_begin; h < unit.h_end; ++h) unit.run_head(h, r0, rows, acc);
    if (p.heads_in_unit) {  // the block's head reductions, folded over its rows
      for (int64_t i = 0; i < rows; ++i) unit.weights[i] = 1.0f;
      if (p.query_fold == Fold::kSum) {
        add_rows(acc, unit.head_acc, l.ld, unit.weights, rows, l.ld);
      } else {
        max_rows(acc, unit.head_acc, l.ld, unit.weights, rows, l.ld);
      }
    }
  }
}

}  // namespace

const AttentionKernel attention_kernel{workspace_floats, acc_stride, run_unit};

}  // namespace vtprune::cpu::VTPRUNE_CPU_CAPABILITY_NS
