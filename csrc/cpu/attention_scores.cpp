// attention_scores on the CPU (docs/design.md 2.1), without materialising [M, N] per head.
//
// The work is split into units (b, head group, chunk of query rows). A unit walks its rows in
// blocks of `block_rows`: per head one GEMM gives the block's logits [rows, cols] (a buffer sized
// for L2), each row is turned into probabilities in place (its own max/sum, or exp(logit - lse)
// when the model's log-sum-exp is given) and folded into the unit's accumulator [N]. When the
// head reduction must finish before a different query reduction (head mean + query max, head
// max + query sum/mean) a unit holds every head and a second block buffer collects the heads of
// each row; otherwise a unit is one head. The units' accumulators are then combined in a fixed
// order, so results do not depend on the number of threads. Extra memory: one or two blocks per
// thread plus one float per (unit, key).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "cpu/row_math.h"
#include "op_checks.h"

namespace vtprune::cpu {
namespace {

enum class Reduce { kSum, kMean, kMax, kNone };

Reduce parse_reduce(const std::string& name) {
  if (name == "sum") return Reduce::kSum;
  if (name == "mean") return Reduce::kMean;
  if (name == "max") return Reduce::kMax;
  return Reduce::kNone;  // names were checked by check_attention_scores_args
}

constexpr int64_t kBlockBytes = 512 * 1024;  // logits block per thread (an L2 holds 1-2 MiB)
constexpr int64_t kMinBlockRows = 8;
constexpr int64_t kMaxBlockRows = 128;
// Query rows are split into chunks until there are about this many units. A constant, not the
// thread count: the summation order (and so the result) must not depend on the machine load.
constexpr int64_t kMinUnits = 32;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Plan {
  int64_t B, Hq, M, N, D, group;  // group = Hq / Hk query heads per kv head
  float scale;
  Reduce query_reduce, head_reduce;
  bool causal;
  bool heads_in_unit;  // one unit holds every head (head reduce, then a different query reduce)
  int64_t head_groups;  // units per (b, chunk): Hq (one head each) or 1 (all heads)
  int64_t chunks, chunk_rows, block_rows;

  int64_t units() const { return B * head_groups * chunks; }
  // Keys row i may see: all N, or with the right-aligned causal mask j <= N - M + i.
  int64_t visible(int64_t i) const { return causal ? N - M + i + 1 : N; }
};

Plan make_plan(const at::Tensor& q, const at::Tensor& k, std::optional<double> scale, const std::string& query_reduce,
               const std::string& head_reduce, bool causal) {
  Plan p{};
  p.B = q.size(0);
  p.Hq = q.size(1);
  p.M = q.size(2);
  p.D = q.size(3);
  p.N = k.size(2);
  p.group = p.Hq / k.size(1);
  p.scale = static_cast<float>(scale.has_value() ? *scale : std::pow(static_cast<double>(p.D), -0.5));
  p.query_reduce = parse_reduce(query_reduce);
  p.head_reduce = parse_reduce(head_reduce);
  p.causal = causal;
  const bool query_max = p.query_reduce == Reduce::kMax;
  p.heads_in_unit = (p.head_reduce == Reduce::kMean && query_max) || (p.head_reduce == Reduce::kMax && !query_max);
  p.head_groups = p.heads_in_unit ? 1 : p.Hq;
  p.block_rows = std::min(p.M, std::clamp(kBlockBytes / (4 * p.N), kMinBlockRows, kMaxBlockRows));
  const int64_t max_chunks = ceil_div(p.M, p.block_rows);
  p.chunks = std::clamp(ceil_div(kMinUnits, p.B * p.head_groups), int64_t{1}, max_chunks);
  p.chunk_rows = ceil_div(p.M, p.chunks);
  p.chunks = ceil_div(p.M, p.chunk_rows);
  return p;
}

// Folds a row of probabilities (times a) into dst by the reduction `op` (sum or max).
void fold_row(Reduce op, float* dst, const float* row, int64_t n, float a) {
  if (op == Reduce::kMax) {
    max_into_scaled(dst, row, n, a);
  } else {
    add_scaled(dst, row, n, a);
  }
}

void fill_nan(float* dst, int64_t n) { std::fill(dst, dst + n, std::numeric_limits<float>::quiet_NaN()); }

// Turns a row of raw logits into unnormalised probabilities in place; the probabilities are
// row[j] * (returned factor). `masked_nan` reports whether the keys the row may not see get NaN
// (as in the reference: a NaN/inf row poisons its whole softmax, as does an lse of NaN or -inf).
float softmax_row(float* row, int64_t n, float scale, const float* lse, bool& masked_nan) {
  if (lse != nullptr) {
    exp_shift_inplace(row, n, scale, *lse);
    masked_nan = std::isnan(-std::numeric_limits<float>::infinity() - *lse);
    return 1.0f;
  }
  const float shift = max_scaled(row, n, scale);
  const float sum = exp_shift_inplace(row, n, scale, shift);
  masked_nan = std::isnan(sum);
  return 1.0f / sum;
}

// Per-thread buffers: one block of logits and, for units that hold every head, one block of
// head-reduced probabilities.
struct Workspace {
  at::Tensor logits;
  std::vector<float> head_acc;
  std::vector<char> row_nan;

  explicit Workspace(const Plan& p)
      : logits(at::empty({p.block_rows * p.N}, at::TensorOptions().dtype(at::kFloat))),
        head_acc(p.heads_in_unit ? p.block_rows * p.N : 0),
        row_nan(p.block_rows) {}
};

// Accumulates unit `u` into acc[N]: the query reduction (sum or max, not yet divided) of the
// head reduction (sum or max, not yet divided) over the unit's heads and query rows.
void run_unit(const Plan& p, const at::Tensor& q, const at::Tensor& k, const float* lse, int64_t u, float* acc,
              Workspace& ws) {
  const int64_t b = u / (p.head_groups * p.chunks);
  const int64_t g = (u / p.chunks) % p.head_groups;
  const int64_t c = u % p.chunks;
  const int64_t h_begin = p.heads_in_unit ? 0 : g;
  const int64_t h_end = p.heads_in_unit ? p.Hq : g + 1;
  const Reduce query_op = p.query_reduce == Reduce::kMax ? Reduce::kMax : Reduce::kSum;
  const Reduce head_op = p.head_reduce == Reduce::kMax ? Reduce::kMax : Reduce::kSum;
  const int64_t r_end = std::min(p.M, (c + 1) * p.chunk_rows);
  std::fill(acc, acc + p.N, 0.0f);

  for (int64_t r0 = c * p.chunk_rows; r0 < r_end; r0 += p.block_rows) {
    const int64_t rows = std::min(p.block_rows, r_end - r0);
    const int64_t cols = p.visible(r0 + rows - 1);
    if (p.heads_in_unit) {
      std::fill(ws.head_acc.begin(), ws.head_acc.begin() + rows * cols, 0.0f);
      std::fill(ws.row_nan.begin(), ws.row_nan.begin() + rows, 0);
    }
    at::Tensor logits = ws.logits.narrow(0, 0, rows * cols).view({rows, cols});
    for (int64_t h = h_begin; h < h_end; ++h) {
      at::mm_out(logits, q[b][h].narrow(0, r0, rows), k[b][h / p.group].narrow(0, 0, cols).t());
      float* block = logits.data_ptr<float>();
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t n = p.visible(r0 + i);
        float* row = block + i * cols;
        const float* row_lse = lse == nullptr ? nullptr : lse + (b * p.Hq + h) * p.M + r0 + i;
        bool masked_nan = false;
        const float factor = softmax_row(row, n, p.scale, row_lse, masked_nan);
        if (p.heads_in_unit) {
          fold_row(head_op, ws.head_acc.data() + i * cols, row, n, factor);
          ws.row_nan[i] |= masked_nan;
        } else {
          fold_row(query_op, acc, row, n, factor);
          if (masked_nan) fill_nan(acc + n, p.N - n);
        }
      }
    }
    if (p.heads_in_unit) {
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t n = p.visible(r0 + i);
        fold_row(query_op, acc, ws.head_acc.data() + i * cols, n, 1.0f);
        if (ws.row_nan[i]) fill_nan(acc + n, p.N - n);
      }
    }
  }
}

at::Tensor attention_scores_cpu(const at::Tensor& q_in, const at::Tensor& k_in, std::optional<double> scale,
                                std::string query_reduce, std::string head_reduce, bool causal,
                                const std::optional<at::Tensor>& lse_in) {
  check_attention_scores_args(q_in, k_in, query_reduce, head_reduce, causal, lse_in);
  const Plan p = make_plan(q_in, k_in, scale, query_reduce, head_reduce, causal);
  // fp16/bf16 upcast exactly; a non-contiguous input is copied once. Detached: the GEMMs write
  // into buffers (out=), which autograd refuses for inputs that require grad.
  const at::Tensor q = q_in.detach().to(at::kFloat).contiguous();
  const at::Tensor k = k_in.detach().to(at::kFloat).contiguous();
  at::Tensor lse;
  if (lse_in.has_value()) lse = lse_in->contiguous();
  const float* lse_ptr = lse.defined() ? lse.data_ptr<float>() : nullptr;

  at::Tensor partial = at::empty({p.units(), p.N}, q.options());
  float* partial_ptr = partial.data_ptr<float>();
  at::parallel_for(0, p.units(), 1, [&](int64_t begin, int64_t end) {
    Workspace ws(p);
    for (int64_t u = begin; u < end; ++u) run_unit(p, q, k, lse_ptr, u, partial_ptr + u * p.N, ws);
  });

  // Combine the units in a fixed order: over head groups and chunks (per head for "none").
  const bool per_head = p.head_reduce == Reduce::kNone;
  const int64_t out_heads = per_head ? p.Hq : 1;
  at::Tensor out = per_head ? at::empty({p.B, p.Hq, p.N}, q.options()) : at::empty({p.B, p.N}, q.options());
  float* out_ptr = out.data_ptr<float>();
  const Reduce query_op = p.query_reduce == Reduce::kMax ? Reduce::kMax : Reduce::kSum;
  const double divisor = (p.head_reduce == Reduce::kMean ? static_cast<double>(p.Hq) : 1.0) *
                         (p.query_reduce == Reduce::kMean ? static_cast<double>(p.M) : 1.0);
  const int64_t sources = (per_head ? 1 : p.head_groups) * p.chunks;  // accumulators per output row
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (sources * p.N));
  at::parallel_for(0, p.B * out_heads, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t b = o / out_heads;
      const int64_t g_begin = per_head ? o % out_heads : 0;
      float* dst = out_ptr + o * p.N;
      const float* first = partial_ptr + (b * p.head_groups + g_begin) * p.chunks * p.N;
      std::copy(first, first + p.N, dst);
      for (int64_t s = 1; s < sources; ++s) fold_row(query_op, dst, first + s * p.N, p.N, 1.0f);
      if (divisor != 1.0) {
        for (int64_t j = 0; j < p.N; ++j) dst[j] = static_cast<float>(static_cast<double>(dst[j]) / divisor);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("attention_scores", &attention_scores_cpu); }

}  // namespace vtprune::cpu
