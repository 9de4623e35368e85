"""cosine_dedup_mask: the C++ CPU kernel (a float32 Gram filter, exact cosines where it cannot decide)
against the per-round reference, on random, exact-lattice and duplicate (flat-region) features."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vtprune_kernels  # noqa: F401
from cpu_capabilities import CPU_CAPABILITIES, running_on
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


@pytest.mark.parametrize("N,C", [(576, 64), (577, 64), (577, 1030)])
def test_vispruner_shape(N, C):
    # one LLaVA-NeXT tile: the 16 most important tokens removed, 16 diverse kept (~68 rounds); at
    # C = 1030 the CPU kernel's filter Gram matrix is summed in 5 slices of channels
    x, _, order_scores, _ = dedup_inputs(1, N, C, seed=N)
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


def test_zero_channels():
    # C = 0: every vector is the zero vector (cosine 0 with everything), with and without rounds
    candidates = torch.ones(2, 10, dtype=torch.bool)
    order_scores = torch.rand(2, 10, generator=torch.Generator().manual_seed(0))
    for n_keep in ([3, 0], [10, 10]):
        assert_matches_reference(torch.zeros(2, 10, 0), candidates, order_scores, torch.tensor(n_keep), step=2)
    empty = torch.ops.vtprune.cosine_dedup_mask(torch.zeros(0, 5, 0), torch.ones(0, 5, dtype=torch.bool),
                                                torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 2)
    assert empty.shape == (0, 5)


def test_many_nan_rows_match_reference():
    # rows holding NaN or inf (each its own class) among ordinary ones, a NaN row in B poisons the round
    x, candidates, order_scores, _ = dedup_inputs(1, 200, 16, seed=5, candidate_fraction=0.9)
    x[0, 10:60, 3] = float("nan")
    x[0, 60:70, 0] = float("inf")
    for n_keep, step in [(16, 8), (150, 3)]:
        assert_matches_reference(x, candidates, order_scores, torch.tensor([n_keep]), step=step)


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


def copies_of_few_vectors(N, C, *, seed, distinct):
    """[1, N, C]: every row a copy of one of `distinct` Gaussian vectors (few classes, thousands of
    exact ties per round); one of them is the zero vector."""
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(distinct, C, generator=g)
    vectors[0] = 0.0
    return vectors[torch.randint(0, distinct, (N,), generator=g)][None]


def reference_on_copies(x, candidates, order_scores, n_keep, step):
    """reference.cosine_dedup_mask for one image of few distinct rows (no NaN), from the cosines of the
    distinct rows only (cosine_gram depends on the two vectors alone): m(a) = the maximum over the
    classes present in B of the cosines of a's class."""
    distinct, class_of = torch.unique(x[0], dim=0, return_inverse=True)
    cos = reference.cosine_gram(distinct)
    cand = candidates[0].nonzero().flatten()
    R = cand[reference.descending_order(order_scores[0, cand].double())]
    while (r := min(step, len(R) - int(n_keep[0]))) > 0:
        A, Bset = R[0::2], R[1::2]
        in_b = torch.zeros(len(distinct), dtype=torch.bool).index_fill_(0, class_of[Bset], True)
        m = cos.masked_fill(~in_b, float("-inf")).amax(1)[class_of[A]]  # -inf when B is empty
        A = A[reference.descending_order(m)]
        R = torch.cat([A[min(r, len(A)) :], Bset])
    return torch.zeros_like(candidates).index_fill_(1, R, True)


def test_thousands_of_copies_match_reference():
    # 3000 tokens, copies of 40 vectors: each round's maxima are one run of exact ties over nearly all
    # of A. One maximum per class of identical rows keeps this well under a second (it took 20-40 s
    # when every member of A re-checked every copy in B, in every one of the ~370 rounds).
    x = copies_of_few_vectors(3000, 128, seed=11, distinct=40)
    _, candidates, order_scores, _ = dedup_inputs(1, 3000, 1, seed=11, candidate_fraction=0.9, tie_levels=5)
    for n_keep in (16, 1000):
        args = (x, candidates, order_scores, torch.tensor([n_keep]), 8)
        out = torch.ops.vtprune.cosine_dedup_mask(*args)
        assert int(out.sum()) == n_keep
        assert torch.equal(out, reference_on_copies(*args))


@pytest.mark.parametrize("noise", [1e-7, 2e-6])
@pytest.mark.parametrize("seed", range(2))
def test_clusters_of_near_copies_match_reference(noise, seed):
    # near-copies (each a copy of one of 3 vectors plus noise at float32 rounding level): their
    # cosines are all within the filter and fast bounds of one another, so every round re-ranks
    # whole clusters by exact cosines; rows with many near partners keep them in a list ranked by
    # exact cosine (the first partner in B is the maximum). Many rounds (steps 8, 3 and 1), exact
    # copies among the near ones (every fifth: no noise), plain rows around
    g = torch.Generator().manual_seed(seed)
    N, C = 240, 24
    x = torch.randn(1, N, C, generator=g)
    near = torch.rand(N, generator=g) < 0.8
    templates = torch.randn(3, C, generator=g)
    x[0, near] = templates[torch.randint(0, 3, (int(near.sum()),), generator=g)]
    offsets = torch.randn(int(near.sum()), C, generator=g)
    offsets[::5] = 0.0
    x[0, near] += noise * offsets
    _, candidates, order_scores, _ = dedup_inputs(1, N, 1, seed=seed, candidate_fraction=0.95)
    for n_keep, step in [(16, 8), (60, 3), (5, 1)]:
        assert_matches_reference(x, candidates, order_scores, torch.tensor([n_keep]), step=step)


def test_reference_on_copies_is_the_reference():
    # the test's oracle above against the reference itself, where the reference is cheap
    x = copies_of_few_vectors(200, 16, seed=12, distinct=6)
    _, candidates, order_scores, _ = dedup_inputs(1, 200, 1, seed=12, tie_levels=3)
    for n_keep, step in [(0, 8), (5, 3), (77, 1)]:
        args = (x, candidates, order_scores, torch.tensor([n_keep]), step)
        assert torch.equal(reference_on_copies(*args), reference.cosine_dedup_mask(*args))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("seed", range(2))
def test_copies_next_to_near_copies_match_reference(dtype, seed):
    # classes of identical rows beside rows that are not identical but have (nearly) the same
    # cosines: one unit in the last place away (in every channel, or in the last one only), a
    # power-of-two multiple (cosine exactly 1 with the original), -0.0 beside 0.0; then with two copies of a NaN row (every round with one in B is
    # all NaN); many rounds (steps 3 and 1), all dtypes
    x = copies_of_few_vectors(150, 24, seed=seed, distinct=5).to(dtype)
    x[0, 1::9] = torch.nextafter(x[0, 1::9], torch.full_like(x[0, 1::9], 10.0))
    x[0, 2::11] *= 2.0
    x[0, 3::13] = -0.0
    last = x[0, 5::7, -1]  # differs from a copy in the last channel only, by one unit in the last place
    x[0, 5::7, -1] = torch.nextafter(last, torch.full_like(last, 10.0))
    _, candidates, order_scores, _ = dedup_inputs(1, 150, 1, seed=seed, candidate_fraction=0.9, tie_levels=3)
    for n_keep, step in [(0, 8), (9, 3), (90, 1)]:
        assert_matches_reference(x, candidates, order_scores.to(dtype), torch.tensor([n_keep]), step=step)
    x[0, 100] = x[0, 4]
    x[0, [4, 100], 5] = float("nan")
    assert_matches_reference(x, candidates, order_scores.to(dtype), torch.tensor([20]), step=3)


@pytest.mark.parametrize("C", [5, 37, 1025])  # below, between and above the vector steps (8 to 32 floats)
def test_every_cpu_capability_gives_identical_masks(C):
    # the fast float64 dots are one copy per instruction set (dedup_dots.cpp), each summing in its own
    # order: every copy must rank by the exact cosines all the same. Gaussian rows (filter runs, fast
    # re-checks), copies beside near-copies (exact re-checks) and a NaN row, odd C for the tails.
    x, candidates, order_scores, _ = dedup_inputs(2, 301, C, seed=C, candidate_fraction=0.9)
    near = x[1, :40].clone()
    x[1, 40:80] = torch.nextafter(near, torch.full_like(near, 10.0))
    x[1, 80:120] = near
    x[0, 7, C // 2] = float("nan")
    cases = [(x, candidates, order_scores, torch.tensor([16, 16]), 8),
             (x.to(torch.bfloat16), candidates, order_scores, torch.tensor([0, 150]), 3)]
    expected = [reference.cosine_dedup_mask(*args) for args in cases]
    for name in CPU_CAPABILITIES:
        with running_on(name):
            for args, want in zip(cases, expected):
                assert torch.equal(torch.ops.vtprune.cosine_dedup_mask(*args), want)
