"""Fake (meta) kernels of the vtprune ops: output shapes and dtypes for torch.compile and
FakeTensor tracing. No data is read."""
from __future__ import annotations

import torch


@torch.library.register_fake("vtprune::attention_scores")
def _attention_scores_fake(q, k, *, scale=None, query_reduce="mean", head_reduce="mean", causal=False, lse=None):
    B, Hq = q.shape[0], q.shape[1]
    N = k.shape[2]
    shape = (B, Hq, N) if head_reduce == "none" else (B, N)
    return q.new_empty(shape, dtype=torch.float32)


@torch.library.register_fake("vtprune::region_topk_mask")
def _region_topk_mask_fake(scores, region_ids, k):
    return scores.new_empty(scores.shape, dtype=torch.bool)


@torch.library.register_fake("vtprune::window_argmax_mask")
def _window_argmax_mask_fake(scores, exclude, window):
    return scores.new_empty(scores.shape, dtype=torch.bool)


@torch.library.register_fake("vtprune::cosine_dedup_mask")
def _cosine_dedup_mask_fake(x, candidates, order_scores, n_keep, step=8):
    return x.new_empty(x.shape[:2], dtype=torch.bool)


@torch.library.register_fake("vtprune::allocate_budget")
def _allocate_budget_fake(weights, total, capacity):
    return weights.new_empty(weights.shape, dtype=torch.int64)
