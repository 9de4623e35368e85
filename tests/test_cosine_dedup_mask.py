"""cosine_dedup_mask: the C++ CPU kernel (a float32 Gram filter, exact cosines where it cannot decide)
against the per-round reference, on random, exact-lattice and duplicate (flat-region) features."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vtprune_kernels  # noqa: F401
from op_cases import ENTRY_POINTS, FLOAT_DTYPES, dedup_inputs, exact_unit_vectors, flat_region_features, run_op
from vtprune_kernels import ops, reference


def assert_matches_reference(x, candidates, order_scores, n_keep, step=8, via="torch.ops"):
    out = run_op("cosine_dedup_mask", x, candidates, order_scores, n_keep, step, via=via)
    assert out.dtype == torch.bool and out.shape == candidates.shape
    assert torch.equal(out, reference.cosine_dedup_mask(x, candidates, order_scores, n_keep, step))
    return out


@pytest.mark.parametrize("via", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("B,N,C,step", [(2, 130, 32, 8), (3, 60, 16, 3), (2, 1, 8, 8), (1, 40, 5, 1)])
def test_random_features_match_reference(via, dtype, B, N, C, step):
    assert_matches_reference(*dedup_inputs(B, N, C, dtype, seed=N + C), step=step, via=via)


@pytest.mark.parametrize("N", [576, 577])
def test_vispruner_shape(N):
    # one LLaVA-NeXT tile: the 16 most important tokens removed, 16 diverse kept (~68 rounds)
    x, _, order_scores, _ = dedup_inputs(1, N, 64, seed=N)
    candidates = torch.ones(1, N, dtype=torch.bool).scatter(1, order_scores.topk(16).indices, False)
    out = assert_matches_reference(x, candidates, order_scores, torch.tensor([16]))
    assert out.sum(1).tolist() == [16]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tie_levels", [None, 3])
def test_exact_cosine_ties_match_reference(seed, tie_levels):
    # every cosine is an exact multiple of 0.25: the max over B ties a lot, so the stable order decides
    x, candidates, order_scores, n_keep = dedup_inputs(2, 90, 8, seed=seed, exact=True, tie_levels=tie_levels)
    assert_matches_reference(x, candidates, order_scores, n_keep, step=4)
    for dtype in (torch.float16, torch.bfloat16):  # +-0.5 and 0 are exact in every dtype
        assert_matches_reference(x.to(dtype), candidates, order_scores.to(dtype), n_keep, step=4)


def test_duplicate_and_zero_vectors():
    x = exact_unit_vectors(12, 8, seed=3).repeat(3, 1)[None]  # every vector three times: cosine 1 ties
    x[0, 5] = 0.0  # a zero vector has cosine 0 with everything (F.normalize)
    candidates = torch.ones(1, 36, dtype=torch.bool)
    order_scores = torch.linspace(1, 0, 36)[None]
    for keep in (0, 1, 7, 12, 35, 36, 50):
        assert_matches_reference(x, candidates, order_scores, torch.tensor([keep]))


def test_nan_features_and_nan_order_scores():
    x, candidates, order_scores, n_keep = dedup_inputs(2, 50, 8, seed=4)
    x[0, 3, 2] = float("nan")
    x[1, 10] = float("inf")
    order_scores[0, ::7] = float("nan")
    order_scores[1, 5:20] = 0.5
    assert_matches_reference(x, candidates, order_scores, n_keep, step=5)
    assert_matches_reference(x, candidates, order_scores, torch.tensor([3, 1]), step=2)


def test_n_keep_bounds():
    x, candidates, order_scores, _ = dedup_inputs(3, 30, 8, seed=5)
    n_cand = candidates.sum(1)
    assert not torch.ops.vtprune.cosine_dedup_mask(x, candidates, order_scores, torch.zeros(3, dtype=torch.long), 8).any()
    for keep in (n_cand, n_cand + 5):
        assert torch.equal(torch.ops.vtprune.cosine_dedup_mask(x, candidates, order_scores, keep, 8), candidates)
    out = torch.ops.vtprune.cosine_dedup_mask(x, candidates, order_scores, n_cand - 1, 8)
    assert torch.equal(out.sum(1), n_cand - 1) and not (out & ~candidates).any()


def test_no_candidates():
    x, _, order_scores, n_keep = dedup_inputs(2, 20, 4, seed=6)
    none = torch.zeros(2, 20, dtype=torch.bool)
    assert not torch.ops.vtprune.cosine_dedup_mask(x, none, order_scores, n_keep, 8).any()


def test_non_contiguous_inputs():
    x, candidates, order_scores, n_keep = dedup_inputs(2, 40, 16, seed=7)
    x_t = x.transpose(0, 1).contiguous().transpose(0, 1)
    wide = torch.zeros(2, 80)
    wide[:, ::2] = order_scores
    scores_s = wide[:, ::2]
    cand_t = candidates.t().contiguous().t()
    assert not (x_t.is_contiguous() or scores_s.is_contiguous() or cand_t.is_contiguous())
    out = torch.ops.vtprune.cosine_dedup_mask(x_t, cand_t, scores_s, n_keep, 4)
    assert torch.equal(out, reference.cosine_dedup_mask(x, candidates, order_scores, n_keep, 4))


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 40),
    step=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
    exact=st.booleans(),
)
def test_property_keeps_min_of_n_keep_and_candidates(N, step, seed, exact):
    x, candidates, order_scores, n_keep = dedup_inputs(1, N, 8, seed=seed, exact=exact, tie_levels=3)
    out = assert_matches_reference(x, candidates, order_scores, n_keep, step=step)
    assert int(out.sum()) == min(int(n_keep), int(candidates.sum()))
    assert not (out & ~candidates).any()


def test_features_that_require_grad():
    x, candidates, order_scores, n_keep = dedup_inputs(2, 30, 8, seed=8)
    out = torch.ops.vtprune.cosine_dedup_mask(x.requires_grad_(), candidates, order_scores, n_keep, 4)
    assert torch.equal(out, reference.cosine_dedup_mask(x.detach(), candidates, order_scores, n_keep, 4))


# ---------------------------------------------------------------- duplicate features (flat regions)


@pytest.mark.parametrize("via", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("B,N,C,step,regions", [(2, 130, 32, 8, 4), (3, 61, 16, 3, 2), (1, 577, 64, 8, 6)])
def test_duplicate_features_match_reference(via, dtype, B, N, C, step, regions):
    # identical vectors at different positions: their cosines are equal, whatever GEMM blocking would
    # round them to, so the maxima tie exactly and the stable order (position) decides
    _, candidates, order_scores, n_keep = dedup_inputs(B, N, C, seed=N + regions)
    x = flat_region_features(B, N, C, seed=N, regions=regions).to(dtype)
    assert_matches_reference(x, candidates, order_scores.to(dtype), n_keep, step=step, via=via)


def test_identical_vectors_rank_by_position():
    # 8 identical vectors ranked 0..7: every m(a) is exactly 1. Round 1 (r = 5): A = [0, 2, 4, 6] keeps
    # its order and all of it leaves, R = [1, 3, 5, 7]; round 2 (r = 1): A = [1, 5], 1 leaves.
    x = torch.randn(1, 1, 24).expand(1, 8, 24).contiguous()
    candidates = torch.ones(1, 8, dtype=torch.bool)
    order_scores = torch.linspace(1, 0, 8)[None]
    for via in ENTRY_POINTS + ("reference",):
        out = run_op("cosine_dedup_mask", x, candidates, order_scores, torch.tensor([3]), 8, via=via)
        assert out[0].nonzero().flatten().tolist() == [3, 5, 7], via


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.25])
def test_duplicates_in_two_groups_tie_at_exactly_one(scale):
    # two flat regions of different colours: within each, cosines of copies are exactly 1 (also for a
    # power-of-two multiple), so the two groups' maxima tie and positions decide
    g = torch.Generator().manual_seed(3)
    u, v = torch.randn(2, 40, generator=g)
    x = torch.stack([u if i % 3 else scale * v for i in range(30)])[None]
    candidates = torch.ones(1, 30, dtype=torch.bool)
    order_scores = torch.rand(1, 30, generator=g)
    for keep in (1, 2, 5, 13):
        assert_matches_reference(x, candidates, order_scores, torch.tensor([keep]), step=4)


def test_cosine_formula_properties():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, 33, generator=g)
    x[5] = x[2]  # a duplicate
    x[7] = 8.0 * x[3]  # a power-of-two multiple
    x[9] = 0.0  # a zero vector
    cos = reference.cosine_gram(x)
    assert torch.equal(cos, cos.T)
    assert torch.equal(cos[5], cos[2]) and cos[2, 5] == 1.0 and cos[3, 7] == 1.0
    assert (cos[9] == 0.0).all()
    assert (cos.diagonal()[torch.arange(12) != 9] == 1.0).all()
    # the definition, term by term: sequential float64 sums, one IEEE rounding per operation
    for i, j in [(0, 1), (2, 6), (4, 11)]:
        dot = nx = ny = 0.0
        for a, b in zip(x[i].double().tolist(), x[j].double().tolist()):
            dot, nx, ny = dot + a * b, nx + a * a, ny + b * b
        assert cos[i, j].item() == dot / math.sqrt(max(nx, 1e-24) * max(ny, 1e-24))


@pytest.mark.parametrize("backend", ["cpu", "auto", "reference"])
@pytest.mark.parametrize("step", [2.5, "8", None, True, 0, -3, 2**63])
def test_step_must_be_a_positive_integer(backend, step):
    args = dedup_inputs(1, 10, 4, seed=9)
    with pytest.raises(ValueError, match=r"\bstep\b"):
        ops.cosine_dedup_mask(*args, step, backend=backend)
