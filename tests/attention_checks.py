"""Backend-independent checks of attention_scores: each takes ``scores_fn(q, k, **kwargs)`` (any
backend's entry point, on the inputs' device), so the CPU and the GPU test files share them."""
import itertools

import torch

from op_cases import HEAD_REDUCES, QUERY_REDUCES, attention_inputs
from vtprune_kernels import reference

REDUCES = list(itertools.product(QUERY_REDUCES, HEAD_REDUCES))


def assert_scores_close(actual, expected):
    """fp32 accumulation against the float64 reference (rounded to fp32); NaN where it has NaN."""
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    atol = 1e-6 * max(1.0, float(expected.abs().nan_to_num().max()))
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=1e-5, atol=atol, equal_nan=True)


def check_probabilities_sum_to_one(scores_fn, N=577, device="cpu"):
    """Independent of the reference: every head's query-sum sums to M over the keys."""
    q, k = attention_inputs(2, 3, 1, 12, N, 16, seed=7)
    out = scores_fn(q.to(device), k.to(device), query_reduce="sum", head_reduce="none", causal=True).cpu()
    torch.testing.assert_close(out.sum(-1), torch.full((2, 3), 12.0), rtol=1e-5, atol=0)
    # causal: the last key is only seen by the last row, whose share is in (0, 1)
    assert ((out[..., -1] > 0) & (out[..., -1] < 1)).all()


def check_nan_propagates_like_the_reference(scores_fn, device="cpu"):
    """A NaN query row poisons its row's softmax, a NaN key every row that sees it, in all 9 reductions."""
    q, k = attention_inputs(2, 4, 2, 6, 9, 8, seed=8)
    q[0, 1, 2, 3] = float("nan")  # one query row of one head
    k[1, 0, 4, 0] = float("nan")  # one key seen by every row of heads 0 and 1
    for causal in (False, True):
        for query_reduce, head_reduce in REDUCES:
            kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
            expected = reference.attention_scores(q, k, **kwargs)
            actual = scores_fn(q.to(device), k.to(device), **kwargs).cpu()
            assert expected.isnan().any()
            assert torch.equal(actual.isnan(), expected.isnan()), kwargs
            assert_scores_close(actual, expected)
