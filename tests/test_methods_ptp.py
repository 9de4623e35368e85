"""PTP vs the paper's formulas (tests/paper_references.py), budgets, arguments."""
import math

import pytest
import torch

import paper_references
from methods_support import backends, one_cpu_thread, quantised, sign_prototypes  # noqa: F401
from vtprune_kernels import PTP
from vtprune_kernels.methods import Captured, Needs

BACKENDS = backends("allocate_budget", "region_topk_mask")
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "S, T, prune_ratio, alpha",
    [
        (7, 256, 0.5, 0.5),  # InternVL: 6 tiles + thumbnail, 16x16 tokens after pixel shuffle
        (13, 256, 0.75, 0.5),
        (5, 64, 0.5, 0.0),
        (5, 64, 0.5, 1.0),
        (3, 9, 0.9, 0.3),
        (2, 7, 0.0, 0.5),  # nothing pruned
        (1, 256, 0.5, 0.5),  # a single tile: one region gets the whole budget
        (1, 5, 0.5, 0.5),
    ],
)
def test_matches_paper_formulas_on_random_scores(backend, S, T, prune_ratio, alpha):
    g = torch.Generator().manual_seed(S * 1000 + T)
    cls_regions = torch.randn(S, 48, generator=g)
    b_scores, c_scores = torch.rand(S, T, generator=g), torch.rand(S, T, generator=g) ** 3
    method = PTP(prune_ratio=prune_ratio, alpha=alpha)
    mask = method.select(cls_regions, b_scores, c_scores, backend=backend)
    assert mask.dtype == torch.bool and mask.shape == (S, T)
    assert torch.equal(mask, paper_references.ptp(cls_regions, b_scores, c_scores, prune_ratio, alpha))
    assert int(mask.sum()) == math.floor((1 - prune_ratio) * S * T + 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("S, T", [(7, 256), (5, 9), (1, 16)])
def test_matches_paper_formulas_on_ties_and_nan(backend, dtype, S, T):
    """[CLS] embeddings from 2 prototypes (exactly equal region scores), 4 score levels, NaN."""
    g = torch.Generator().manual_seed(S + T)
    cls_regions = sign_prototypes(2, 16, g)[torch.randint(0, 2, (S,), generator=g)]
    b_scores, c_scores = quantised((S, T), 4, g), quantised((S, T), 4, g)
    b_scores[torch.rand(S, T, generator=g) < 0.05] = float("nan")
    cls_regions, b_scores, c_scores = cls_regions.to(dtype), b_scores.to(dtype), c_scores.to(dtype)
    mask = PTP().select(cls_regions, b_scores, c_scores, backend=backend)
    expected = paper_references.ptp(cls_regions.float(), b_scores.float(), c_scores.float())
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_maps_normalise_to_zeros(backend):
    """Constant b and c give s = 0 everywhere (no NaN): the first R_i tokens of each region."""
    S, T = 4, 10
    cls_regions = torch.randn(S, 8)
    mask = PTP().select(cls_regions, torch.full((S, T), 0.3), torch.full((S, T), 7.0), backend=backend)
    budgets = mask.sum(1)
    for i in range(S):
        assert mask[i, : int(budgets[i])].all() and not mask[i, int(budgets[i]) :].any()
    assert int(budgets.sum()) == 20


def test_total_rounds_half_up():
    assert PTP(prune_ratio=0.5).total_keep(1, 5) == 3  # 2.5 -> 3 (Python round would give 2)
    assert PTP(prune_ratio=0.5).total_keep(1, 7) == 4  # 3.5 -> 4
    assert PTP(prune_ratio=0.5).total_keep(7, 256) == 896
    mask = PTP(prune_ratio=0.5).select(torch.randn(1, 4), torch.rand(1, 5), torch.rand(1, 5), backend="reference")
    assert int(mask.sum()) == 3


def test_region_weights_favour_tiles_like_the_thumbnail():
    thumbnail = torch.tensor([1.0, 0.0, 0.0])
    cls_regions = torch.stack([torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]), thumbnail])
    weights = PTP.region_weights(cls_regions)
    # a = (0, 1/sqrt2, 1) -> min-max (0, 1/sqrt2, 1) -> softmax
    a = torch.tensor([0.0, 2**-0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(weights, a.exp() / a.exp().sum(), rtol=0, atol=1e-15)
    assert torch.equal(PTP.region_weights(torch.randn(1, 8)), torch.ones(1, dtype=torch.float64))


def test_needs_and_select_captured():
    method = PTP(vision_layer=8, llm_layer=1)
    assert method.needs(True) == Needs(
        vision_layers=(8,), query_rows="cls", cls_embedding=True, llm_probe_layer=1
    )
    with pytest.raises(ValueError, match="CLS"):
        method.needs(False)
    cls_regions, b_scores, c_scores = torch.randn(3, 8), torch.rand(3, 16), torch.rand(3, 16)
    captured = Captured(grid=(4, 4), cls_regions=cls_regions, b_scores=b_scores, c_scores=c_scores)
    expected = method.select(cls_regions, b_scores, c_scores, backend="reference")
    assert torch.equal(method.select_captured(captured, backend="reference"), expected)
    with pytest.raises(ValueError, match="c_scores"):
        method.select_captured(Captured(grid=(4, 4), cls_regions=cls_regions, b_scores=b_scores))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prune_ratio=1.0), "prune_ratio"),
        (dict(prune_ratio=-0.1), "prune_ratio"),
        (dict(alpha=1.1), "alpha"),
        (dict(alpha=-1), "alpha"),
        (dict(vision_layer=2.0), "vision_layer"),
        (dict(llm_layer=0.5), "llm_layer"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PTP(**kwargs)


def test_bad_select_arguments():
    method = PTP()
    cls_regions, scores = torch.randn(3, 8), torch.rand(3, 16)
    with pytest.raises(ValueError, match="c_scores"):
        method.select(cls_regions, scores, torch.rand(3, 15))
    with pytest.raises(ValueError, match="cls_regions"):
        method.select(torch.randn(2, 8), scores, scores)
    with pytest.raises(ValueError, match="b_scores"):
        method.select(cls_regions, scores[0], scores)
    with pytest.raises(ValueError, match="weights"):  # a NaN embedding reaches the budget check
        method.select(torch.full((3, 8), float("nan")), scores, scores)
