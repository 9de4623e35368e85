"""torch.library.opcheck on every op (schema, autograd registration, fake kernel, AOT dispatch)."""
import pytest
import torch

import vtprune_kernels  # noqa: F401
from op_cases import attention_inputs, budget_inputs, dedup_inputs, lse_from_logits, region_inputs, window_inputs


def attention_samples():
    q, k = attention_inputs(2, 4, 2, 5, 9, 8, seed=0)
    qh, kh = attention_inputs(1, 2, 1, 3, 577, 16, torch.bfloat16, seed=1, layout="transposed")
    return [
        ((q, k), {}),
        ((q, k), dict(scale=0.5, query_reduce="max", head_reduce="none", causal=True)),
        ((q, k), dict(query_reduce="sum", head_reduce="max", lse=lse_from_logits(q, k))),
        ((qh, kh), dict(query_reduce="mean", head_reduce="mean", causal=True)),
    ]


def region_samples():
    return [
        (region_inputs(2, 40, 3, seed=0), {}),
        (region_inputs(3, 17, 2, torch.float16, seed=1, shared_ids=True), {}),
        (region_inputs(1, 1, 1, seed=2), {}),
    ]


def window_samples():
    s, e = window_inputs(2, 7, 9, seed=0)
    s16, e16 = window_inputs(1, 24, 24, torch.bfloat16, seed=1)
    return [((s, e, [2, 2]), {}), ((s, e, [3, 4]), {}), ((s16, e16, [2, 2]), {})]


def dedup_samples():
    x, c, o, n = dedup_inputs(2, 30, 8, seed=0)
    xe, ce, oe, ne = dedup_inputs(1, 20, 8, torch.float16, seed=1, exact=True)
    return [((x, c, o, n), {}), ((x, c, o, n, 3), {}), ((xe, ce, oe, ne, 2), {})]


def budget_samples():
    return [
        (budget_inputs(3, 5, seed=0), {}),
        (budget_inputs(1, 1, torch.float64, seed=1), {}),
        (budget_inputs(2, 9, torch.bfloat16, seed=2), {}),
    ]


SAMPLES = {
    "attention_scores": attention_samples,
    "region_topk_mask": region_samples,
    "window_argmax_mask": window_samples,
    "cosine_dedup_mask": dedup_samples,
    "allocate_budget": budget_samples,
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_opcheck(name):
    op = getattr(torch.ops.vtprune, name).default
    for args, kwargs in SAMPLES[name]():
        torch.library.opcheck(op, args, kwargs)
