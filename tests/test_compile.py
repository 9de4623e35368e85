"""A pruning-style pipeline of the ops compiles with torch.compile(fullgraph=True) and matches eager."""
import pytest
import torch

import vtprune_kernels  # noqa: F401
from op_cases import attention_inputs
from vtprune_kernels import ops


def select_tokens(q, k, x, region_ids, weights, total, capacity, candidates, n_keep):
    """Score -> per-region budgets -> top-k per region -> window argmax; diverse tokens: bool masks [B, N].

    Only ops and views, so that inductor has no C++ of its own to compile (keeps the test fast).
    """
    B, N = q.shape[0], k.shape[2]
    scores = ops.attention_scores(q, k, query_reduce="mean", head_reduce="mean")
    budgets = ops.allocate_budget(weights, total, capacity, validate=False)
    important = ops.region_topk_mask(scores, region_ids, budgets, validate=False)
    local = ops.window_argmax_mask(scores.view(B, 6, 6), important.view(B, 6, 6), (2, 2)).view(B, N)
    diverse = ops.cosine_dedup_mask(x, candidates, scores, n_keep, 2, validate=False)
    return important, local, diverse


def test_compiled_pipeline_matches_eager():
    torch._dynamo.reset()
    B, N = 2, 36
    q, k = attention_inputs(B, 4, 2, 5, N, 8, seed=0)
    x = torch.randn(B, N, 16)
    region_ids = (torch.arange(N) >= N // 2).long()  # two regions of 18 tokens
    weights = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    total = torch.tensor([8, 5])
    capacity = torch.full((B, 2), N // 2)
    candidates = torch.rand(B, N) < 0.7
    n_keep = torch.tensor([3, 5])
    args = (q, k, x, region_ids, weights, total, capacity, candidates, n_keep)
    expected = select_tokens(*args)
    actual = torch.compile(select_tokens, fullgraph=True)(*args)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)
    important, local, diverse = expected
    assert torch.equal(important.sum(1), total)
    assert not (local & important).any() and (local.sum(1) <= 9).all()
    assert torch.equal(diverse.sum(1), torch.minimum(n_keep, candidates.sum(1)))


def default_call_inputs():
    """Inputs of every selection op, called with its default arguments (validate=True)."""
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(2, 36, generator=g)
    return {
        "region_topk_mask": (scores, (torch.arange(36) >= 18).long(), torch.tensor([[3, 4], [0, 18]])),
        "window_argmax_mask": (scores.view(2, 6, 6), scores.view(2, 6, 6) > 0.8, 2),
        "cosine_dedup_mask": (torch.randn(2, 36, 8, generator=g), scores > 0.3, scores, torch.tensor([4, 7])),
        "allocate_budget": (torch.tensor([[8.0, 5.0, 2.0], [1.0, 0.0, 3.0]]), torch.tensor([5, 6]),
                            torch.tensor([[100, 3, 3], [4, 4, 4]])),
    }


@pytest.mark.parametrize("name", ["region_topk_mask", "window_argmax_mask", "cosine_dedup_mask", "allocate_budget"])
def test_ops_with_default_arguments_compile_fullgraph(name):
    # the wrappers read no data while tracing (value checks are the kernels' on the CPU and skipped
    # under torch.compile elsewhere): no "Could not guard on data-dependent expression"
    torch._dynamo.reset()
    fn = getattr(ops, name)
    args = default_call_inputs()[name]
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(*args), fn(*args))


def test_value_checks_are_skipped_while_compiling(monkeypatch):
    # off the CPU (meta here: no GPU needed) the wrapper checks values in Python, except while tracing
    off_cpu = torch.empty(2, device="meta")
    assert ops._python_value_checks(True, off_cpu)
    assert not ops._python_value_checks(False, off_cpu)
    assert not ops._python_value_checks(True, torch.empty(2))  # the CPU kernels check values in C++
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not ops._python_value_checks(True, off_cpu)
