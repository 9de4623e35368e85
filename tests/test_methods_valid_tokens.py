"""Methods restricted to ``valid`` tokens (what survives LLaVA-NeXT's unpadding).

Oracles: the from-the-paper references (tests/paper_references.py) run on the valid tokens alone
(VisPruner: the row compacted to its valid tokens; HIVTP: the valid rectangle cropped as a grid of
its own), mapped back to the full grid.
"""
import pytest
import torch

import paper_references as paper
from methods_support import backends, one_cpu_thread, quantised, sign_prototypes  # noqa: F401
from vtprune_kernels.methods import HIVTP, PTP, Random, Uniform, VisPruner
from vtprune_kernels.methods.base import Captured

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _rectangle_mask(batch, grid, rects):
    """bool [batch, h*w] with row b's rectangle (top, left, height, width) set (None: empty)."""
    h, w = grid
    valid = torch.zeros(batch, h, w, dtype=torch.bool)
    for b, rect in enumerate(rects):
        if rect is not None:
            top, left, height, width = rect
            valid[b, top : top + height, left : left + width] = True
    return valid.reshape(batch, h * w)


RECTS = [(0, 0, 6, 6), (1, 0, 4, 6), (0, 2, 6, 3), (5, 0, 1, 6), None, (0, 0, 6, 6), (2, 1, 3, 5)]


@pytest.mark.parametrize("backend", backends("region_topk_mask", "cosine_dedup_mask"))
@pytest.mark.parametrize("keep", [1, 5, 12, 40])
def test_vispruner_with_valid_equals_the_paper_on_the_valid_tokens(backend, keep):
    gen = torch.Generator().manual_seed(keep)
    B, N, C = 6, 37, 16
    scores = quantised((B, N), 5, gen)  # many ties
    features = sign_prototypes(4, C, gen)[torch.randint(0, 4, (B, N), generator=gen)]  # duplicate features
    valid = torch.rand(B, N, generator=gen) < torch.tensor([1.0, 0.7, 0.4, 0.1, 0.0, 0.9])[:, None]
    method = VisPruner(keep=keep, step=3)
    got = method.select(scores, features, valid=valid, backend=backend)
    for b in range(B):
        idx = valid[b].nonzero().flatten()
        expected = torch.zeros(N, dtype=torch.bool)
        if idx.numel():
            sub = paper.vispruner(scores[b, idx][None], features[b, idx][None], keep, step=3)[0]
            expected[idx[sub]] = True
        assert torch.equal(got[b], expected), f"row {b}"
        assert int(got[b].sum()) == min(keep, int(valid[b].sum()))


def test_vispruner_all_valid_equals_no_valid():
    gen = torch.Generator().manual_seed(1)
    scores, features = torch.rand(3, 25, generator=gen), torch.randn(3, 25, 8, generator=gen)
    method = VisPruner(keep=7, step=2)
    assert torch.equal(method.select(scores, features, valid=torch.ones(3, 25, dtype=torch.bool)), method.select(scores, features))


@pytest.mark.parametrize("backend", backends("region_topk_mask", "window_argmax_mask"))
def test_hivtp_with_valid_runs_on_each_rectangle_as_its_own_grid(backend):
    gen = torch.Generator().manual_seed(3)
    grid = (6, 6)
    received = quantised((len(RECTS), 36), 7, gen)
    valid = _rectangle_mask(len(RECTS), grid, RECTS)
    got = HIVTP().select(received, grid, valid=valid, backend=backend)
    for b, rect in enumerate(RECTS):
        expected = torch.zeros(6, 6, dtype=torch.bool)
        if rect is not None:
            top, left, height, width = rect
            crop = received[b].reshape(6, 6)[top : top + height, left : left + width].reshape(1, -1)
            expected[top : top + height, left : left + width] = paper.hivtp(crop, (height, width))[0].reshape(height, width)
        assert torch.equal(got[b], expected.reshape(-1)), f"row {b}"


def test_uniform_with_valid_spreads_over_each_rectangle():
    grid = (6, 6)
    valid = _rectangle_mask(len(RECTS), grid, RECTS)
    method = Uniform(keep=4)
    got = method.select(grid, len(RECTS), valid=valid)
    for b, rect in enumerate(RECTS):
        expected = torch.zeros(6, 6, dtype=torch.bool)
        if rect is not None:
            top, left, height, width = rect
            sub = method.select((height, width), 1)[0].reshape(height, width)
            expected[top : top + height, left : left + width] = sub
        assert torch.equal(got[b], expected.reshape(-1)), f"row {b}"
        assert int(got[b].sum()) == min(4, int(valid[b].sum()))


@pytest.mark.parametrize("backend", backends("region_topk_mask"))
def test_random_with_valid_keeps_exactly_min_keep_valid_among_the_valid(backend):
    gen = torch.Generator().manual_seed(2)
    valid = torch.rand(5, 30, generator=gen) < torch.tensor([1.0, 0.5, 0.2, 0.0, 0.8])[:, None]
    method = Random(keep=9, seed=3)
    got = method.select(30, 5, valid=valid, backend=backend)
    assert got.sum(1).tolist() == valid.sum(1).clamp(max=9).tolist()
    assert not bool((got & ~valid).any())
    assert torch.equal(got, Random(keep=9, seed=3).select(30, 5, valid=valid, backend=backend))  # seeded


def test_spatial_methods_reject_a_valid_set_that_is_not_a_rectangle():
    valid = torch.ones(1, 16, dtype=torch.bool)
    valid[0, 5] = False
    with pytest.raises(ValueError, match="valid.*rectangle"):
        Uniform(keep=3).select((4, 4), 1, valid=valid)
    with pytest.raises(ValueError, match="valid.*rectangle"):
        HIVTP().select(torch.rand(1, 16), (4, 4), valid=valid)


@pytest.mark.parametrize(
    "valid, message",
    [
        (torch.ones(2, 16, dtype=torch.int64), "valid must be a bool tensor"),
        (torch.ones(2, 15, dtype=torch.bool), r"valid must have shape \[B=2, N=16\]"),
        ([[True] * 16] * 2, "valid must be a bool tensor"),
    ],
)
def test_bad_valid_names_the_argument(valid, message):
    with pytest.raises(ValueError, match=message):
        VisPruner(keep=3).select(torch.rand(2, 16), torch.randn(2, 16, 4), valid=valid)
    with pytest.raises(ValueError, match=message):
        Random(keep=3).select((4, 4), 2, valid=valid)


def test_ptp_rejects_captured_valid():
    captured = Captured(
        grid=(2, 2), cls_regions=torch.randn(2, 4), b_scores=torch.rand(2, 4), c_scores=torch.rand(2, 4),
        valid=torch.ones(2, 4, dtype=torch.bool),
    )
    with pytest.raises(ValueError, match="valid"):
        PTP().select_captured(captured)
