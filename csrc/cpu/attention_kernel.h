// The inner kernel of attention_scores on the CPU, compiled once per instruction set
// (attention_kernel.cpp, dispatched: cpu/capability/dispatch.h). Plain C++ on float32 pointers;
// the op (attention_scores.cpp) plans the work, allocates and combines.
//
// Work is split into units: (b, head group, chunk of query rows). A unit adds into acc[N] the
// query reduction (sum or max, not yet divided) of the head reduction (sum or max, not yet
// divided) of p[b, h, i, j] over its heads h and rows i. A unit holds one head, or every head
// when the head reduction must finish before a different query reduction (head max then query
// sum, head mean then query max).
#pragma once

#include <cstdint>

#include "cpu/capability/dispatch.h"

namespace vtprune::cpu {

enum class Fold : int { kSum = 0, kMax = 1 };

struct AttentionProblem {
  // q [B, Hq, M, D] and k [B, Hk, N, D] float32, last dim contiguous; strides in elements.
  const float* q;
  const float* k;
  int64_t q_stride_b, q_stride_h, q_stride_m;
  int64_t k_stride_b, k_stride_h, k_stride_n;
  const float* lse;  // contiguous [B, Hq, M] or null (then each row's own log-sum-exp is used)
  int64_t B, Hq, M, N, D;
  int64_t group;  // query heads per kv head: head h reads kv head h / group
  float scale;
  bool causal;  // row i sees keys j <= N - M + i
  Fold head_fold, query_fold;
  bool heads_in_unit;  // a unit holds every head (else one head)
  int64_t chunks, chunk_rows;  // query rows of a unit: [c * chunk_rows, min(M, (c+1) * chunk_rows))

  int64_t head_groups() const { return heads_in_unit ? 1 : Hq; }
  int64_t units() const { return B * head_groups() * chunks; }
};

struct AttentionKernel {
  // Floats of one thread's workspace for this problem (64-byte aligned by the caller).
  int64_t (*workspace_floats)(const AttentionProblem& p);
  // Floats per unit accumulator: N rounded up (the kernel writes padding lanes past N).
  int64_t (*acc_stride)(const AttentionProblem& p);
  // Overwrites acc[0, acc_stride) with unit u's result (entries past N are padding).
  void (*run_unit)(const AttentionProblem& p, int64_t u, float* acc, float* workspace);
};

VTPRUNE_DECLARE_CPU_DISPATCH(AttentionKernel, attention_kernel)

}  // namespace vtprune::cpu
