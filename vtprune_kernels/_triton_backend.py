"""The Triton path of attention_scores: launcher and registration as the CUDA kernel of
torch.ops.vtprune.attention_scores. (Being written: see issue 3.)"""
from __future__ import annotations


def attention_scores(q, k, *, scale=None, query_reduce="mean", head_reduce="mean", causal=False, lse=None):
    raise NotImplementedError("the Triton kernel of attention_scores is being written (issue 3)")
