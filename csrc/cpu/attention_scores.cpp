// attention_scores on the CPU (docs/design.md 2.1), without materialising [M, N] per head.
//
// This file plans the work and combines it; the arithmetic is in attention_kernel.cpp, compiled
// once per instruction set and chosen at run time (cpu/capability). The work is split into units
// (b, head group, chunk of query rows; attention_kernel.h), run in parallel, each writing its own
// accumulator [N]; the accumulators are then combined in a fixed order, so results do not depend
// on the number of threads. Extra memory: one workspace per thread (a packed copy of one kv
// head's keys and a block of logits sized for L2) plus one float per (unit, key).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "cpu/attention_kernel.h"
#include "op_checks.h"

namespace vtprune::cpu {
namespace {

// Query rows are split into chunks until there are about this many units. A constant, not the
// thread count: the summation order (and so the result) must not depend on the machine load.
constexpr int64_t kMinUnits = 32;
constexpr int64_t kMinChunkRows = 16;  // a chunk re-packs its heads' keys: keep that cost small

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Fold fold_of(const std::string& reduce) { return reduce == "max" ? Fold::kMax : Fold::kSum; }

AttentionProblem make_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& lse, std::optional<double> scale,
                              const std::string& query_reduce, const std::string& head_reduce, bool causal) {
  AttentionProblem p{};
  p.q = q.data_ptr<float>();
  p.k = k.data_ptr<float>();
  p.q_stride_b = q.stride(0);
  p.q_stride_h = q.stride(1);
  p.q_stride_m = q.stride(2);
  p.k_stride_b = k.stride(0);
  p.k_stride_h = k.stride(1);
  p.k_stride_n = k.stride(2);
  p.lse = lse.defined() ? lse.data_ptr<float>() : nullptr;
  p.B = q.size(0);
  p.Hq = q.size(1);
  p.M = q.size(2);
  p.D = q.size(3);
  p.N = k.size(2);
  p.group = p.Hq / k.size(1);
  p.scale = static_cast<float>(scale.has_value() ? *scale : std::pow(static_cast<double>(p.D), -0.5));
  p.causal = causal;
  p.query_fold = fold_of(query_reduce);
  p.head_fold = fold_of(head_reduce);  // "none" keeps heads apart: one head per unit, never folded
  const bool query_max = query_reduce == "max";
  p.heads_in_unit = (head_reduce == "mean" && query_max) || (head_reduce == "max" && !query_max);
  const int64_t max_chunks = std::max<int64_t>(1, p.M / kMinChunkRows);
  p.chunks = std::clamp(ceil_div(kMinUnits, p.B * p.head_groups()), int64_t{1}, max_chunks);
  p.chunk_rows = ceil_div(p.M, p.chunks);
  p.chunks = ceil_div(p.M, p.chunk_rows);
  return p;
}

// fp16/bf16 are upcast exactly; the last dim is made contiguous (other strides are kept).
at::Tensor as_float_rows(const at::Tensor& t) {
  at::Tensor f = t.detach().to(at::kFloat);
  return f.stride(-1) == 1 ? f : f.contiguous();
}

const AttentionKernel& active_kernel() {
  try {
    return attention_kernel_for(active_cpu_capability());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

at::Tensor attention_scores_cpu(const at::Tensor& q_in, const at::Tensor& k_in, std::optional<double> scale,
                                std::string query_reduce, std::string head_reduce, bool causal,
                                const std::optional<at::Tensor>& lse_in) {
  check_attention_scores_args(q_in, k_in, query_reduce, head_reduce, causal, lse_in);
  const AttentionKernel& kernel = active_kernel();
  const at::Tensor q = as_float_rows(q_in);
  const at::Tensor k = as_float_rows(k_in);
  const at::Tensor lse = lse_in.has_value() ? lse_in->contiguous() : at::Tensor();
  const AttentionProblem p = make_problem(q, k, lse, scale, query_reduce, head_reduce, causal);

  const int64_t stride = kernel.acc_stride(p);
  const int64_t workspace = kernel.workspace_floats(p);
  at::Tensor partial = at::empty({p.units(), stride}, q.options());
  float* partial_ptr = partial.data_ptr<float>();
  at::parallel_for(0, p.units(), 1, [&](int64_t begin, int64_t end) {
    at::Tensor ws = at::empty({workspace}, q.options());  // 64-byte aligned
    for (int64_t u = begin; u < end; ++u) kernel.run_unit(p, u, partial_ptr + u * stride, ws.data_ptr<float>());
  });

  // Combine the units in a fixed order: over head groups and chunks (per head for "none").
  const bool per_head = head_reduce == "none";
  const int64_t out_heads = per_head ? p.Hq : 1;
  at::Tensor out = per_head ? at::empty({p.B, p.Hq, p.N}, q.options()) : at::empty({p.B, p.N}, q.options());
  float* out_ptr = out.data_ptr<float>();
  const int64_t N = p.N;
  const double divisor = (head_reduce == "mean" ? static_cast<double>(p.Hq) : 1.0) *
                         (query_reduce == "mean" ? static_cast<double>(p.M) : 1.0);
  const int64_t sources = (per_head ? 1 : p.head_groups()) * p.chunks;  // accumulators per output row
  const bool query_max = p.query_fold == Fold::kMax;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (sources * N));
  at::parallel_for(0, p.B * out_heads, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t b = o / out_heads;
      const int64_t g_begin = per_head ? o % out_heads : 0;
      float* dst = out_ptr + o * N;
      const float* first = partial_ptr + (b * p.head_groups() + g_begin) * p.chunks * stride;
      std::copy(first, first + N, dst);
      for (int64_t s = 1; s < sources; ++s) {
        const float* src = first + s * stride;
        for (int64_t j = 0; j < N; ++j) {
          if (query_max) {
            dst[j] = (src[j] > dst[j] || std::isnan(src[j])) && !std::isnan(dst[j]) ? src[j] : dst[j];
          } else {
            dst[j] += src[j];
          }
        }
      }
      if (divisor != 1.0) {
        for (int64_t j = 0; j < N; ++j) dst[j] = static_cast<float>(static_cast<double>(dst[j]) / divisor);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(vtprune, CPU, m) { m.impl("attention_scores", &attention_scores_cpu); }

}  // namespace vtprune::cpu
