"""allocate_budget: the C++ CPU kernel (common/budget.h) against the reference, plus properties."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vtprune_kernels  # noqa: F401
from op_cases import BUDGET_HAND_CASES, ENTRY_POINTS, FLOAT_DTYPES, budget_inputs, run_op
from vtprune_kernels import reference

WEIGHT_DTYPES = FLOAT_DTYPES + (torch.float64,)


@pytest.mark.parametrize("via", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", WEIGHT_DTYPES, ids=str)
@pytest.mark.parametrize("B,S", [(4, 5), (1, 1), (3, 13), (2, 577)])
def test_matches_reference(via, dtype, B, S):
    weights, total, capacity = budget_inputs(B, S, dtype, seed=B * S)
    out = run_op("allocate_budget", weights, total, capacity, via=via)
    assert out.dtype == torch.int64 and out.shape == (B, S)
    assert torch.equal(out, reference.allocate_budget(weights, total, capacity))


@pytest.mark.parametrize("weights,total,capacity,expected", BUDGET_HAND_CASES)
def test_hand_worked_examples(weights, total, capacity, expected):
    out = torch.ops.vtprune.allocate_budget(torch.tensor([weights]), torch.tensor([total]), torch.tensor([capacity]))
    assert out.tolist() == [expected]


def test_non_contiguous_inputs():
    weights, total, capacity = budget_inputs(6, 4, seed=3)
    w_t, cap_t = weights.t().contiguous().t(), capacity.t().contiguous().t()
    total_s = torch.stack([total, total], 1)[:, 0]
    assert not (w_t.is_contiguous() or cap_t.is_contiguous() or total_s.is_contiguous())
    assert torch.equal(torch.ops.vtprune.allocate_budget(w_t, total_s, cap_t), reference.allocate_budget(weights, total, capacity))


@settings(max_examples=80, deadline=None)
@given(
    B=st.integers(1, 3),
    S=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    zero_fraction=st.sampled_from([0.0, 0.5, 1.0]),
    max_capacity=st.integers(0, 30),
)
def test_property_sums_to_total_within_capacity(B, S, seed, zero_fraction, max_capacity):
    weights, total, capacity = budget_inputs(B, S, seed=seed, zero_fraction=zero_fraction, max_capacity=max_capacity)
    out = torch.ops.vtprune.allocate_budget(weights, total, capacity)
    assert torch.equal(out.sum(1), total)
    assert ((out >= 0) & (out <= capacity)).all()
    assert torch.equal(out, reference.allocate_budget(weights, total, capacity))
