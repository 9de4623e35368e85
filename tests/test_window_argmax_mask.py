"""window_argmax_mask: the C++ CPU kernel against the reference, plus properties."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vtprune_kernels  # noqa: F401
from op_cases import ENTRY_POINTS, FLOAT_DTYPES, run_op, window_inputs
from vtprune_kernels import ops, reference


@pytest.mark.parametrize("via", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize(
    "B,H,W,window",
    [(2, 24, 24, (2, 2)), (1, 7, 9, (2, 3)), (3, 1, 1, (1, 1)), (2, 5, 5, (8, 8)), (1, 33, 35, (4, 1)), (1, 1, 577, (1, 7))],
)
def test_matches_reference(via, dtype, B, H, W, window):
    scores, exclude = window_inputs(B, H, W, dtype, seed=H * W)
    out = run_op("window_argmax_mask", scores, exclude, list(window), via=via)
    assert out.dtype == torch.bool and out.shape == (B, H, W)
    assert torch.equal(out, reference.window_argmax_mask(scores, exclude, window))


@pytest.mark.parametrize("tie_levels,nan_fraction", [(2, 0.0), (None, 0.4), (1, 0.0), (None, 1.0)])
def test_ties_and_nan(tie_levels, nan_fraction):
    scores, exclude = window_inputs(2, 10, 11, seed=5, tie_levels=tie_levels, nan_fraction=nan_fraction)
    out = torch.ops.vtprune.window_argmax_mask(scores, exclude, [3, 2])
    assert torch.equal(out, reference.window_argmax_mask(scores, exclude, (3, 2)))


def test_hand_worked_windows():
    nan = float("nan")
    scores = torch.tensor([[[1.0, 3.0, 3.0], [3.0, nan, 0.0], [nan, 5.0, 1.0]]])
    exclude = torch.tensor([[[False, True, False], [False, False, False], [True, True, True]]])
    out = torch.ops.vtprune.window_argmax_mask(scores, exclude, [2, 2])
    # window (0,0): 3.0 at (0,1) excluded, 3.0 at (1,0) wins over 1.0 and NaN; window (0,1): the
    # first 3.0 wins; window (1,0): every cell excluded; window (1,1): 1.0 at (2,2) is excluded too
    assert out.tolist() == [[[False, False, True], [True, False, False], [False, False, False]]]


def test_all_excluded_marks_nothing_and_none_excluded_marks_one_per_window():
    scores = torch.randn(2, 6, 6)
    assert not torch.ops.vtprune.window_argmax_mask(scores, torch.ones(2, 6, 6, dtype=torch.bool), [2, 3]).any()
    out = torch.ops.vtprune.window_argmax_mask(scores, torch.zeros(2, 6, 6, dtype=torch.bool), [2, 3])
    assert out.reshape(2, 3, 2, 2, 3).sum((2, 4)).eq(1).all()


def test_non_contiguous_inputs():
    scores, exclude = window_inputs(2, 12, 10, seed=6)
    scores_t = scores.transpose(1, 2).contiguous().transpose(1, 2)
    exclude_t = exclude.transpose(1, 2).contiguous().transpose(1, 2)
    assert not scores_t.is_contiguous() and not exclude_t.is_contiguous()
    assert torch.equal(torch.ops.vtprune.window_argmax_mask(scores_t, exclude_t, [3, 4]),
                       reference.window_argmax_mask(scores, exclude, (3, 4)))


@settings(max_examples=60, deadline=None)
@given(
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    wh=st.integers(1, 5),
    ww=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    tie_levels=st.sampled_from([None, 1, 3]),
)
def test_property_one_best_allowed_cell_per_window(H, W, wh, ww, seed, tie_levels):
    scores, exclude = window_inputs(1, H, W, seed=seed, tie_levels=tie_levels)
    out = torch.ops.vtprune.window_argmax_mask(scores, exclude, [wh, ww])[0]
    assert not (out & exclude[0]).any()
    for i0 in range(0, H, wh):
        for j0 in range(0, W, ww):
            win, ex = out[i0 : i0 + wh, j0 : j0 + ww], exclude[0, i0 : i0 + wh, j0 : j0 + ww]
            s = scores[0, i0 : i0 + wh, j0 : j0 + ww]
            assert int(win.sum()) == (0 if ex.all() else 1)
            if win.any():
                flat, allowed = s.flatten(), ~ex.flatten()
                best = int(win.flatten().nonzero())
                # the chosen cell is the maximum; an earlier allowed cell is strictly smaller
                assert flat[best] == flat[allowed].max()
                assert (flat[:best][allowed[:best]] < flat[best]).all()


BACKENDS = ("cpu", "auto", "reference")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window", [(2**62, 2**62), (2**63 - 1, 2**63 - 1), (2**63 - 1, 3), (4, 2**62), 10**6])
def test_window_larger_than_the_grid_is_one_partial_window(backend, window):
    # (2**62, 2**62) used to overflow wh * W to 0 and divide by it; (2**63 - 1, ...) to mark nothing
    scores, exclude = window_inputs(2, 9, 13, seed=21, exclude_fraction=0.3)
    wh, ww = (window, window) if isinstance(window, int) else window
    expected = reference.window_argmax_mask(scores, exclude, (min(wh, 9), min(ww, 13)))
    assert torch.equal(ops.window_argmax_mask(scores, exclude, window, backend=backend), expected)
    if wh >= 9 and ww >= 13:  # one window: one cell per image
        assert expected.sum((1, 2)).tolist() == [1, 1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "window",
    [(2.5, 2), 2.5, None, True, (2, False), (2,), (1, 2, 3), "2", (2, "2"), (0, 2), (2, -1), 2**63, (2, 2**64)],
    ids=repr,
)
def test_window_must_be_positive_integers(backend, window):
    scores, exclude = window_inputs(1, 6, 6, seed=22)
    with pytest.raises(ValueError, match=r"\bwindow\b"):
        ops.window_argmax_mask(scores, exclude, window, backend=backend)


def test_window_accepts_integer_like_sizes():
    scores, exclude = window_inputs(1, 6, 7, seed=23)
    expected = reference.window_argmax_mask(scores, exclude, (2, 3))
    for window in [(2, 3), [2, 3], torch.Size([2, 3]), (torch.tensor(2), 3)]:
        assert torch.equal(ops.window_argmax_mask(scores, exclude, window), expected)
