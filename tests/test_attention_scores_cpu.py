"""attention_scores: the C++ CPU kernel against the float64 reference."""
import pytest
import torch

import vtprune_kernels  # noqa: F401  (registers torch.ops.vtprune)
from attention_checks import (
    REDUCES,
    assert_scores_close,
    check_nan_propagates_like_the_reference,
    check_probabilities_sum_to_one,
)
from op_cases import ENTRY_POINTS, FLOAT_DTYPES, attention_inputs, lse_from_flash, lse_from_logits, run_op
from vtprune_kernels import ops, reference

# (B, Hq, Hk, M, N, D): odd sizes, GQA, [CLS] row only (M=1), one key (N=1), D=256, several row
# blocks per unit (M > 128), several chunks (small B*H), long keys (small row blocks).
SHAPES = [
    (2, 4, 4, 7, 13, 8),
    (2, 4, 2, 5, 9, 16),
    (1, 2, 1, 1, 577, 64),
    (1, 3, 3, 1, 1, 4),
    (1, 2, 2, 6, 1025, 32),
    (1, 2, 1, 3, 3, 256),
    (2, 16, 16, 130, 130, 8),
    (1, 2, 1, 40, 4100, 4),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True])
def test_all_reductions_match_reference(shape, causal):
    q, k = attention_inputs(*shape, seed=sum(shape))
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
        assert_scores_close(torch.ops.vtprune.attention_scores(q, k, **kwargs), reference.attention_scores(q, k, **kwargs))


@pytest.mark.parametrize("via", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_dtypes_and_entry_points(via, dtype):
    # low-precision inputs are upcast exactly, so the reference on the same tensors is the oracle
    q, k = attention_inputs(2, 4, 2, 33, 577, 64, dtype, seed=1)
    for query_reduce, head_reduce in [("mean", "mean"), ("max", "none"), ("sum", "max")]:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=True)
        assert_scores_close(run_op("attention_scores", q, k, via=via, **kwargs), reference.attention_scores(q, k, **kwargs))


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous_inputs(layout):
    q, k = attention_inputs(2, 4, 2, 9, 31, 16, seed=2, layout=layout)
    assert not q.is_contiguous() and not k.is_contiguous()
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce)
        expected = reference.attention_scores(q.contiguous(), k.contiguous(), **kwargs)
        assert_scores_close(torch.ops.vtprune.attention_scores(q, k, **kwargs), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_lse_from_reference_logits(causal):
    q, k = attention_inputs(2, 4, 2, 17, 40, 16, seed=3)
    lse = lse_from_logits(q, k, scale=0.3, causal=causal)
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(scale=0.3, query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
        expected = reference.attention_scores(q, k, lse=lse, **kwargs)
        assert_scores_close(torch.ops.vtprune.attention_scores(q, k, lse=lse, **kwargs), expected)
        # a consistent lse gives the softmax itself
        assert_scores_close(torch.ops.vtprune.attention_scores(q, k, lse=lse, **kwargs),
                            reference.attention_scores(q, k, **kwargs))


@pytest.mark.parametrize("causal", [False, True])
def test_lse_from_flash_attention(causal):
    q, k = attention_inputs(2, 4, 2, 65, 65, 32, seed=4)
    lse = lse_from_flash(q, k, causal=causal)
    for query_reduce, head_reduce in [("mean", "mean"), ("max", "mean"), ("sum", "none")]:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
        assert_scores_close(ops.attention_scores(q, k, lse=lse, **kwargs), reference.attention_scores(q, k, lse=lse, **kwargs))


def test_lse_non_contiguous():
    q, k = attention_inputs(1, 4, 4, 6, 11, 8, seed=5)
    lse = lse_from_logits(q, k).transpose(1, 2).contiguous().transpose(1, 2)
    assert not lse.is_contiguous()
    assert_scores_close(torch.ops.vtprune.attention_scores(q, k, lse=lse), reference.attention_scores(q, k, lse=lse))


def test_explicit_scale_and_default_scale():
    q, k = attention_inputs(1, 2, 2, 4, 10, 25, seed=6)
    default = torch.ops.vtprune.attention_scores(q, k)
    assert_scores_close(default, reference.attention_scores(q, k, scale=0.2))  # 25 ** -0.5
    assert_scores_close(torch.ops.vtprune.attention_scores(q, k, scale=-1.5), reference.attention_scores(q, k, scale=-1.5))


def test_probabilities_sum_to_one_per_row():
    check_probabilities_sum_to_one(torch.ops.vtprune.attention_scores)


def test_nan_rows_propagate_like_the_reference():
    check_nan_propagates_like_the_reference(torch.ops.vtprune.attention_scores)


def test_result_does_not_depend_on_thread_count():
    q, k = attention_inputs(2, 4, 2, 130, 300, 16, seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [torch.ops.vtprune.attention_scores(q, k, query_reduce=r, head_reduce=h) for r, h in REDUCES]
        torch.set_num_threads(max(2, threads))
        many = [torch.ops.vtprune.attention_scores(q, k, query_reduce=r, head_reduce=h) for r, h in REDUCES]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


def test_large_logits_stay_finite():
    # logits of +-100 would overflow exp without the row max
    q, k = attention_inputs(1, 2, 2, 5, 50, 8, seed=10)
    q = q * 30
    assert_scores_close(torch.ops.vtprune.attention_scores(q, k), reference.attention_scores(q, k))
    assert torch.isfinite(torch.ops.vtprune.attention_scores(q, k, query_reduce="max", head_reduce="max")).all()


def test_exp_accuracy_over_the_float_range():
    # one query row, D=1, lse=0: p_j = exp(k_j) exactly as the kernel's exp computes it
    x = torch.cat([torch.linspace(-100, 100, 20001), torch.tensor([float("nan"), float("inf"), float("-inf"), 88.72])])
    q, k = torch.ones(1, 1, 1, 1), x.view(1, 1, -1, 1)
    kwargs = dict(scale=1.0, query_reduce="sum", head_reduce="none", lse=torch.zeros(1, 1, 1))
    out = torch.ops.vtprune.attention_scores(q, k, **kwargs)
    # ~1 ulp; below e^-86.9 (~2e-38) results flush to 0
    torch.testing.assert_close(out, reference.attention_scores(q, k, **kwargs), rtol=2e-7, atol=2e-38, equal_nan=True)


def test_inputs_that_require_grad():
    # the kernel is not differentiable, but it must run on tensors from a model that tracks grads
    q, k = attention_inputs(1, 2, 1, 4, 9, 8, seed=11)
    out = torch.ops.vtprune.attention_scores(q.requires_grad_(), k.requires_grad_(), query_reduce="max", head_reduce="mean")
    assert_scores_close(out.detach(), reference.attention_scores(q.detach(), k.detach(), query_reduce="max", head_reduce="mean"))
