"""attention_scores: the C++ CPU kernel against the float64 reference, under every CPU
capability (default, AVX2, AVX-512: each that this CPU supports) with one reference per case."""
import pytest
import torch

import vtprune_kernels  # noqa: F401  (registers torch.ops.vtprune)
from attention_checks import (
    REDUCES,
    assert_scores_close,
    check_nan_propagates_like_the_reference,
    check_probabilities_sum_to_one,
)
from cpu_capabilities import CPU_CAPABILITIES, running_on
from op_cases import ENTRY_POINTS, FLOAT_DTYPES, attention_inputs, lse_from_flash, lse_from_logits, run_op
from vtprune_kernels import ops, reference

# (B, Hq, Hk, M, N, D): odd sizes, GQA, [CLS] row only (M=1, and M=2..5: rows read straight from
# K), one key (N=1), D=256, D not a multiple of the vector width (25, 33), several row blocks and
# key chunks per unit (M > 128, N = 1025/4100), several chunks (small B*H), partial register
# tiles in both directions (M, N not multiples of the tile); direct rows at D = 16, 32, 64, 128
# (1 to 16 vectors on each instruction set) with a partial last group of keys.
SHAPES = [
    (1, 2, 1, 1, 50, 16),
    (1, 2, 2, 2, 37, 32),
    (1, 1, 1, 1, 100, 128),
    (2, 4, 4, 7, 13, 8),
    (2, 4, 2, 5, 9, 16),
    (1, 2, 1, 1, 577, 64),
    (1, 3, 3, 1, 1, 4),
    (1, 2, 2, 6, 1025, 32),
    (1, 2, 1, 3, 3, 256),
    (2, 16, 16, 130, 130, 8),
    (1, 2, 1, 40, 4100, 4),
    (1, 4, 2, 577, 577, 25),
    (2, 2, 1, 2, 33, 33),
    (1, 2, 2, 300, 1025, 64),
]


def test_every_capability_is_exercised():
    """The CPU has at least the portable path; x86-64 machines of this project have AVX2."""
    assert CPU_CAPABILITIES[0] == "default"
    assert set(CPU_CAPABILITIES) <= {"default", "avx2", "avx512"}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True])
def test_all_reductions_match_reference(shape, causal):
    q, k = attention_inputs(*shape, seed=sum(shape))
    cases = [dict(query_reduce=qr, head_reduce=hr, causal=causal) for qr, hr in REDUCES]
    expected = [reference.attention_scores(q, k, **kwargs) for kwargs in cases]
    for name in CPU_CAPABILITIES:
        with running_on(name):
            for kwargs, want in zip(cases, expected):
                assert_scores_close(torch.ops.vtprune.attention_scores(q, k, **kwargs), want)


@pytest.mark.parametrize("via", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_dtypes_and_entry_points(via, dtype):
    # low-precision inputs are upcast exactly, so the reference on the same tensors is the oracle
    q, k = attention_inputs(2, 4, 2, 33, 577, 64, dtype, seed=1)
    for query_reduce, head_reduce in [("mean", "mean"), ("max", "none"), ("sum", "max")]:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=True)
        expected = reference.attention_scores(q, k, **kwargs)
        for name in CPU_CAPABILITIES:
            with running_on(name):
                assert_scores_close(run_op("attention_scores", q, k, via=via, **kwargs), expected)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous_inputs(layout):
    # M = 2 reads K's rows directly, M = 40 packs them: both see the strides
    for M in (2, 40):
        q, k = attention_inputs(2, 4, 2, M, 31, 16, seed=2, layout=layout)
        assert not q.is_contiguous() and not k.is_contiguous()
        for query_reduce, head_reduce in REDUCES:
            kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce)
            expected = reference.attention_scores(q.contiguous(), k.contiguous(), **kwargs)
            for name in CPU_CAPABILITIES:
                with running_on(name):
                    assert_scores_close(torch.ops.vtprune.attention_scores(q, k, **kwargs), expected)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("M", [3, 17, 150])  # rows read from K directly / one tile stripe / several
def test_lse_from_reference_logits(causal, M):
    q, k = attention_inputs(2, 4, 2, M, 40 if M < 150 else 333, 16, seed=3)
    lse = lse_from_logits(q, k, scale=0.3, causal=causal)
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(scale=0.3, query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
        expected = reference.attention_scores(q, k, lse=lse, **kwargs)
        softmax = reference.attention_scores(q, k, **kwargs)
        for name in CPU_CAPABILITIES:
            with running_on(name):
                actual = torch.ops.vtprune.attention_scores(q, k, lse=lse, **kwargs)
                assert_scores_close(actual, expected)
                assert_scores_close(actual, softmax)  # a consistent lse gives the softmax itself


def test_lse_that_is_not_a_normaliser():
    """Any lse is allowed: p = exp(scale * q.k - lse) may exceed 1, overflow to inf, and an lse of
    NaN or -inf poisons its row (every key, the hidden ones too), as in the reference."""
    q, k = attention_inputs(1, 2, 2, 40, 70, 8, seed=12)
    lse = lse_from_logits(q, k, causal=True) - 3.0
    lse[0, 0, 5] = -100.0   # p up to e^100: inf
    lse[0, 1, 7] = float("nan")
    lse[0, 1, 30] = float("-inf")
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=True, lse=lse)
        expected = reference.attention_scores(q, k, **kwargs)
        for name in CPU_CAPABILITIES:
            with running_on(name):
                actual = torch.ops.vtprune.attention_scores(q, k, **kwargs)
                assert torch.equal(actual.isnan(), expected.isnan()) and torch.equal(actual.isinf(), expected.isinf()), kwargs
                assert_scores_close(actual, expected)


@pytest.mark.parametrize("causal", [False, True])
def test_lse_from_flash_attention(causal):
    q, k = attention_inputs(2, 4, 2, 65, 65, 32, seed=4)
    lse = lse_from_flash(q, k, causal=causal)
    for query_reduce, head_reduce in [("mean", "mean"), ("max", "mean"), ("sum", "none")]:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
        expected = reference.attention_scores(q, k, lse=lse, **kwargs)
        for name in CPU_CAPABILITIES:
            with running_on(name):
                assert_scores_close(ops.attention_scores(q, k, lse=lse, **kwargs), expected)


def test_lse_non_contiguous():
    q, k = attention_inputs(1, 4, 4, 6, 11, 8, seed=5)
    lse = lse_from_logits(q, k).transpose(1, 2).contiguous().transpose(1, 2)
    assert not lse.is_contiguous()
    expected = reference.attention_scores(q, k, lse=lse)
    for name in CPU_CAPABILITIES:
        with running_on(name):
            assert_scores_close(torch.ops.vtprune.attention_scores(q, k, lse=lse), expected)


def test_explicit_scale_and_default_scale():
    q, k = attention_inputs(1, 2, 2, 4, 10, 25, seed=6)
    default_scale = reference.attention_scores(q, k, scale=0.2)  # 25 ** -0.5
    negative_scale = reference.attention_scores(q, k, scale=-1.5)
    for name in CPU_CAPABILITIES:
        with running_on(name):
            assert_scores_close(torch.ops.vtprune.attention_scores(q, k), default_scale)
            assert_scores_close(torch.ops.vtprune.attention_scores(q, k, scale=-1.5), negative_scale)


@pytest.mark.parametrize("name", CPU_CAPABILITIES)
def test_probabilities_sum_to_one_per_row(name):
    with running_on(name):
        check_probabilities_sum_to_one(torch.ops.vtprune.attention_scores)


@pytest.mark.parametrize("name", CPU_CAPABILITIES)
def test_nan_rows_propagate_like_the_reference(name):
    with running_on(name):
        check_nan_propagates_like_the_reference(torch.ops.vtprune.attention_scores)


@pytest.mark.parametrize("name", CPU_CAPABILITIES)
def test_result_does_not_depend_on_thread_count(name):
    q, k = attention_inputs(2, 4, 2, 130, 300, 16, seed=9)
    threads = torch.get_num_threads()
    with running_on(name):
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
    expected = reference.attention_scores(q, k)
    for name in CPU_CAPABILITIES:
        with running_on(name):
            assert_scores_close(torch.ops.vtprune.attention_scores(q, k), expected)
            assert torch.isfinite(torch.ops.vtprune.attention_scores(q, k, query_reduce="max", head_reduce="max")).all()


@pytest.mark.parametrize("rows", [1, 20])  # logits read from K directly / from the tiled GEMM
def test_exp_accuracy_over_the_float_range(rows):
    # D=1, q=1, lse=0: p_j = exp(k_j) exactly as the kernel's exp computes it
    x = torch.cat([torch.linspace(-100, 100, 20001), torch.tensor([float("nan"), float("inf"), float("-inf"), 88.72])])
    q, k = torch.ones(1, 1, rows, 1), x.view(1, 1, -1, 1)
    kwargs = dict(scale=1.0, query_reduce="max", head_reduce="none", lse=torch.zeros(1, 1, rows))
    expected = reference.attention_scores(q, k, **kwargs)
    for name in CPU_CAPABILITIES:
        with running_on(name):
            out = torch.ops.vtprune.attention_scores(q, k, **kwargs)
            # ~1 ulp; below e^-86.9 (~2e-38) results flush to 0
            torch.testing.assert_close(out, expected, rtol=2e-7, atol=2e-38, equal_nan=True)


def test_softmax_exp_accuracy_near_the_row_maximum():
    # one row, D=1, q=1: p_j = exp(k_j - max) / sum, the exp on arguments in [-100, 0]
    x = torch.cat([torch.linspace(-100, 0, 20001), torch.tensor([-87.5, -87.0, -86.5])])
    q, k = torch.ones(1, 1, 1, 1), x.view(1, 1, -1, 1)
    kwargs = dict(scale=1.0, query_reduce="sum", head_reduce="none")
    expected = reference.attention_scores(q, k, **kwargs)
    for name in CPU_CAPABILITIES:
        with running_on(name):
            out = torch.ops.vtprune.attention_scores(q, k, **kwargs)
            torch.testing.assert_close(out, expected, rtol=2e-6, atol=2e-38)


def test_inputs_that_require_grad():
    # the kernel is not differentiable, but it must run on tensors from a model that tracks grads
    q, k = attention_inputs(1, 2, 1, 4, 9, 8, seed=11)
    out = torch.ops.vtprune.attention_scores(q.requires_grad_(), k.requires_grad_(), query_reduce="max", head_reduce="mean")
    assert_scores_close(out.detach(), reference.attention_scores(q.detach(), k.detach(), query_reduce="max", head_reduce="mean"))


def test_capabilities_agree_with_each_other():
    """Every path computes the same thing: results agree to float32 rounding at a real size."""
    q, k = attention_inputs(2, 16, 16, 577, 577, 64, seed=13)
    results = {}
    for name in CPU_CAPABILITIES:
        with running_on(name):
            results[name] = torch.ops.vtprune.attention_scores(q, k)
    for name, out in results.items():
        torch.testing.assert_close(out, results["default"], rtol=1e-5, atol=1e-9, msg=name)
