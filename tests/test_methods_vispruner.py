"""VisPruner vs the published algorithm (tests/paper_references.py), budgets, arguments."""
import pytest
import torch

import paper_references
from methods_support import backends, one_cpu_thread, quantised, sign_prototypes  # noqa: F401
from vtprune_kernels import VisPruner
from vtprune_kernels.methods import Captured, Needs

BACKENDS = backends("region_topk_mask", "cosine_dedup_mask")
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "n_tokens, keep, ratio, step",
    [
        (576, 64, 0.5, 8),  # LLaVA-1.5 grid 24x24 (577 - [CLS])
        (729, 64, 0.5, 8),  # 27x27 (SigLIP-384)
        (729, 191, 0.3, 8),  # odd residual sizes every round
        (576, 575, 0.5, 8),
        (100, 33, 0.5, 3),
        (7, 2, 0.5, 8),
        (7, 1, 0.5, 8),
        (1, 1, 0.5, 8),
        (50, 20, 0.0, 8),  # diverse only
        (50, 20, 1.0, 8),  # important only
    ],
)
def test_matches_published_algorithm_on_random_scores(backend, n_tokens, keep, ratio, step):
    g = torch.Generator().manual_seed(n_tokens * 31 + keep)
    cls_attn = torch.rand(2, n_tokens, generator=g).softmax(-1)
    features = torch.randn(2, n_tokens, 24, generator=g)
    method = VisPruner(keep, important_ratio=ratio, step=step)
    mask = method.select(cls_attn, features, backend=backend)
    assert mask.dtype == torch.bool and mask.shape == (2, n_tokens)
    assert torch.equal(mask, paper_references.vispruner(cls_attn, features, keep, ratio, step))
    assert mask.sum(1).tolist() == [min(keep, n_tokens)] * 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n_tokens, keep", [(576, 64), (729, 97), (33, 9)])
def test_matches_published_algorithm_on_ties_and_nan(backend, dtype, n_tokens, keep):
    """Few score levels, a few NaN scores and features drawn from 4 prototypes: the important
    stage and every de-duplication round are decided by the tie rule."""
    g = torch.Generator().manual_seed(n_tokens + keep)
    cls_attn = quantised((3, n_tokens), 4, g)
    cls_attn[torch.rand(3, n_tokens, generator=g) < 0.05] = float("nan")
    prototypes = sign_prototypes(4, 16, g)
    features = prototypes[torch.randint(0, 4, (3, n_tokens), generator=g)]
    features = features * 2.0 ** torch.randint(-2, 3, (3, n_tokens, 1), generator=g)  # exact rescaling
    cls_attn, features = cls_attn.to(dtype), features.to(dtype)
    mask = VisPruner(keep).select(cls_attn, features, backend=backend)
    assert torch.equal(mask, paper_references.vispruner(cls_attn.float(), features.float(), keep))
    assert mask.sum(1).tolist() == [keep] * 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("keep", [1, 2, 3, 16, 17, 39, 40, 41, 100])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_budget_is_exactly_min_keep_n(backend, keep, ratio):
    g = torch.Generator().manual_seed(keep)
    cls_attn, features = torch.rand(2, 40, generator=g), torch.randn(2, 40, 8, generator=g)
    mask = VisPruner(keep, important_ratio=ratio, step=5).select(cls_attn, features, backend=backend)
    assert mask.sum(1).tolist() == [min(keep, 40)] * 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_important_tokens_are_the_top_scores(backend):
    g = torch.Generator().manual_seed(5)
    cls_attn, features = torch.rand(3, 576, generator=g), torch.randn(3, 576, 16, generator=g)
    method = VisPruner(64, important_ratio=0.5)
    mask = method.select(cls_attn, features, backend=backend)
    n_important, n_diverse = method.budgets(576)
    assert (n_important, n_diverse) == (32, 32)
    top = cls_attn.topk(n_important, dim=1).indices
    assert bool(mask.gather(1, top).all())


def test_budgets_follow_the_published_int_product():
    assert VisPruner(64).budgets(576) == (32, 32)
    assert VisPruner(65).budgets(576) == (32, 33)
    assert VisPruner(1000).budgets(576) == (288, 288)  # keep >= N: all kept
    assert VisPruner(100, important_ratio=0.29).budgets(576) == (int(100 * 0.29), 100 - int(100 * 0.29))


def test_needs_and_select_captured():
    method = VisPruner(8)
    assert method.needs(True) == Needs(vision_layers=None, query_rows="cls", features=True)
    assert method.needs(False) == Needs(vision_layers=None, query_rows="all", features=True)
    g = torch.Generator().manual_seed(1)
    scores, features = torch.rand(2, 36, generator=g), torch.randn(2, 36, 8, generator=g)
    expected = method.select(scores, features, backend="reference")
    with_cls = Captured(grid=(6, 6), cls_attn=scores, features=features)
    without_cls = Captured(grid=(6, 6), received=scores, features=features)
    assert torch.equal(method.select_captured(with_cls, backend="reference"), expected)
    assert torch.equal(method.select_captured(without_cls, backend="reference"), expected)
    with pytest.raises(ValueError, match="cls_attn and received"):
        method.select_captured(Captured(grid=(6, 6), features=features))
    with pytest.raises(ValueError, match="features"):
        method.select_captured(Captured(grid=(6, 6), cls_attn=scores))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(keep=-1), "keep"),
        (dict(keep=0), "keep must be >= 1"),
        (dict(keep=2.5), "keep"),
        (dict(keep=True), "keep"),
        (dict(keep=4, important_ratio=1.5), "important_ratio"),
        (dict(keep=4, important_ratio=-0.1), "important_ratio"),
        (dict(keep=4, step=0), "step"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VisPruner(**kwargs)


def test_bad_select_arguments():
    method = VisPruner(4)
    scores, features = torch.rand(2, 10), torch.randn(2, 10, 3)
    with pytest.raises(ValueError, match="features"):
        method.select(scores, torch.randn(2, 9, 3))
    with pytest.raises(ValueError, match="cls_attn"):
        method.select(scores[0], features)
    with pytest.raises(ValueError, match="cls_attn"):
        method.select(scores.long(), features)
    with pytest.raises(ValueError, match="backend"):
        method.select(scores, features, backend="gpu")


@pytest.mark.parametrize("with_valid", [False, True])
def test_stages_are_disjoint_and_unite_to_the_selection(with_valid):
    g = torch.Generator().manual_seed(4)
    scores, features = torch.rand(3, 36, generator=g), torch.randn(3, 36, 8, generator=g)
    valid = (torch.rand(3, 36, generator=g) < 0.7) if with_valid else None
    method = VisPruner(12, important_ratio=0.5, step=3)
    important, diverse = method.select_stages(scores, features, valid=valid)
    assert not bool((important & diverse).any())
    assert torch.equal(important | diverse, method.select(scores, features, valid=valid))
    assert important.sum(1).tolist() == [6, 6, 6]
    top = scores.masked_fill(~valid, -1) if with_valid else scores
    assert torch.equal(important, torch.zeros_like(important).scatter(1, top.topk(6, dim=1).indices, True))
