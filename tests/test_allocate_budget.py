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


# Exact ties of the fractional parts, worked in rationals: (weights, total, capacity, expected).
EXACT_TIE_CASES = [
    # 5 * [8, 5, 2] / 15 = 2 + 2/3, 1 + 2/3, 0 + 2/3: equal fractions, the lower indices win
    ([8.0, 5.0, 2.0], 5, [100, 3, 3], [3, 2, 0]),
    # 6 * [0.1, 0.2, 0.3] / 0.6 = 1, 2, 3 exactly (float64 rounding would leave 0.999... or 2.000...1)
    ([0.1, 0.2, 0.3], 6, [10, 10, 10], [1, 2, 3]),
    # 7 * [1, 1, 1, 1] / 4: fractions 3/4 each, 3 leftover units to the first three
    ([3.0, 3.0, 3.0, 3.0], 7, [9, 9, 9, 9], [2, 2, 2, 1]),
    # fixed region first (share 14 >= 2), then 8 re-shared 1:1:1: fractions 2/3 each
    ([12.0, 1.0, 1.0, 1.0], 10, [2, 9, 9, 9], [2, 3, 3, 2]),
    # 10 * [0.3, 0.3, 0.4] / 1.0: 3, 3, 4 up to float64 rounding (0.3 is not exactly 3/10): exact
    # rationals put each share within 1e-16 of an integer, on its side: floors 2 or 3
    ([0.3, 0.3, 0.4], 10, [10, 10, 10], [3, 3, 4]),
]


@pytest.mark.parametrize("via", ENTRY_POINTS + ("reference",))
@pytest.mark.parametrize("weights,total,capacity,expected", EXACT_TIE_CASES)
def test_exact_ties_of_fractional_parts(via, weights, total, capacity, expected):
    args = (torch.tensor([weights], dtype=torch.float64), torch.tensor([total]), torch.tensor([capacity]))
    assert run_op("allocate_budget", *args, via=via).tolist() == [expected]
    for dtype in FLOAT_DTYPES:  # the same weights in other dtypes (where they are exact)
        w = args[0].to(dtype)
        if torch.equal(w.double(), args[0]):
            assert run_op("allocate_budget", w, *args[1:], via=via).tolist() == [expected]


@pytest.mark.parametrize("via", ENTRY_POINTS + ("reference",))
def test_capacities_near_int64_max(via):
    big = 2**62
    weights = torch.tensor([[1e-30, 1e30, 1.0], [1.0, 1.0, 0.0], [1.0, 2.0, 0.5]], dtype=torch.float64)
    capacity = torch.tensor([[big, big, 5], [big, big, big], [2**63 - 1, 2**63 - 1, 0]])
    total = torch.tensor([big + 3, big, 2**63 - 1])
    out = run_op("allocate_budget", weights, total, capacity, via=via)
    assert out.tolist()[:2] == [[0, big, 3], [big // 2, big // 2, 0]]
    assert out.sum(1).tolist() == total.tolist() and bool((out <= capacity).all())
    assert torch.equal(out, reference.allocate_budget(weights, total, capacity))
    with pytest.raises(ValueError, match=r"total\[0\]"):  # 9 units more than the capacities hold
        run_op("allocate_budget", weights[:1, :2], torch.tensor([2**63 - 1]), torch.tensor([[big, big - 10]]), via=via)


@settings(max_examples=60, deadline=None)
@given(
    S=st.integers(1, 9),
    levels=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    total=st.integers(0, 60),
)
def test_property_integer_weights_tie_exactly(S, levels, seed, total):
    # weights from a few integer levels: equal shares and equal fractional parts everywhere
    g = torch.Generator().manual_seed(seed)
    weights = torch.randint(0, levels + 1, (2, S), generator=g).double()
    capacity = torch.randint(0, 15, (2, S), generator=g)
    total_t = torch.minimum(torch.tensor([total, total // 2]), capacity.sum(1))
    out = torch.ops.vtprune.allocate_budget(weights, total_t, capacity)
    assert torch.equal(out, reference.allocate_budget(weights, total_t, capacity))
