"""Fake (meta) kernels of the vtprune ops: output shapes and dtypes for torch.compile and
FakeTensor tracing. They run the argument checks (shapes, dtypes, devices; no data is read),
so a traced call fails with the same message as an eager one."""
from __future__ import annotations

import torch

from . import validation


@torch.library.register_fake("vtprune::attention_scores")
def _attention_scores_fake(q, k, *, scale=None, query_reduce="mean", head_reduce="mean", causal=False, lse=None):
    validation.check_attention_scores_args(q, k, scale, query_reduce, head_reduce, causal, lse)
    B, Hq = q.shape[0], q.shape[1]
    N = k.shape[2]
    shape = (B, Hq, N) if head_reduce == "none" else (B, N)
    return q.new_empty(shape, dtype=torch.float32)


@torch.library.register_fake("vtprune::region_topk_mask")
def _region_topk_mask_fake(scores, region_ids, k):
    validation.check_region_topk_mask_args(scores, region_ids, k)
    return scores.new_empty(scores.shape, dtype=torch.bool)


@torch.library.register_fake("vtprune::window_argmax_mask")
def _window_argmax_mask_fake(scores, exclude, window):
    validation.check_window_argmax_mask_args(scores, exclude, window)
    return scores.new_empty(scores.shape, dtype=torch.bool)


@torch.library.register_fake("vtprune::cosine_dedup_mask")
def _cosine_dedup_mask_fake(x, candidates, order_scores, n_keep, step=8):
    validation.check_cosine_dedup_mask_args(x, candidates, order_scores, n_keep, step)
    return x.new_empty(x.shape[:2], dtype=torch.bool)


@torch.library.register_fake("vtprune::allocate_budget")
def _allocate_budget_fake(weights, total, capacity):
    validation.check_allocate_budget_args(weights, total, capacity)
    return weights.new_empty(weights.shape, dtype=torch.int64)
