"""The references themselves, against hand-worked examples and literal (pure Python, loop by
loop) readings of the docs/design.md definitions. The kernels are tested against the references
elsewhere; these tests make sure the oracle says what the contract says."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from op_cases import BUDGET_HAND_CASES, budget_inputs, causal_visible, dedup_inputs, region_inputs, window_inputs
from vtprune_kernels import reference

NAN = float("nan")


def rank_key(score: float, index: int):
    """Sort key of the tie rule: higher first, NaN after every number, then lower index."""
    return (math.isnan(score), 0.0 if math.isnan(score) else -score, index)


# ---------------------------------------------------------------- descending_order


def test_descending_order_tie_rule():
    values = torch.tensor([3.0, NAN, 3.0, 5.0, float("-inf"), NAN, float("inf")])
    assert reference.descending_order(values).tolist() == [6, 3, 0, 2, 4, 1, 5]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, -2.5, NAN, float("inf"), float("-inf")]), min_size=0, max_size=30))
def test_descending_order_is_the_tie_rule_sort(values):
    expected = sorted(range(len(values)), key=lambda i: rank_key(values[i], i))
    assert reference.descending_order(torch.tensor(values, dtype=torch.float64)).tolist() == expected


# ---------------------------------------------------------------- attention_scores


def literal_attention_scores(q, k, scale, query_reduce, head_reduce, causal, lse=None):
    """docs/design.md 2.1 loop by loop in Python floats: p per (b, h, i, j), heads reduced, then rows."""
    B, Hq, M, D = q.shape
    Hk, N = k.shape[1], k.shape[2]
    visible = causal_visible(M, N) if causal else torch.ones(M, N, dtype=torch.bool)
    p = [[[[0.0] * N for _ in range(M)] for _ in range(Hq)] for _ in range(B)]
    for b in range(B):
        for h in range(Hq):
            kv = h // (Hq // Hk)
            for i in range(M):
                logits = [scale * sum(float(q[b, h, i, d]) * float(k[b, kv, j, d]) for d in range(D)) for j in range(N)]
                seen = [j for j in range(N) if visible[i, j]]
                norm = float(lse[b, h, i]) if lse is not None else math.log(sum(math.exp(logits[j]) for j in seen))
                for j in seen:
                    p[b][h][i][j] = math.exp(logits[j] - norm)
    head = {"mean": lambda v: sum(v) / len(v), "max": max}
    query = {"sum": sum, "mean": lambda v: sum(v) / len(v), "max": max}[query_reduce]
    if head_reduce == "none":
        return torch.tensor(
            [[[query([p[b][h][i][j] for i in range(M)]) for j in range(N)] for h in range(Hq)] for b in range(B)]
        )
    return torch.tensor(
        [
            [query([head[head_reduce]([p[b][h][i][j] for h in range(Hq)]) for i in range(M)]) for j in range(N)]
            for b in range(B)
        ]
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("query_reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("head_reduce", ["mean", "max", "none"])
def test_attention_scores_literal(causal, query_reduce, head_reduce):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 3, 2, generator=g), torch.randn(2, 2, 5, 2, generator=g)  # GQA: 2 query heads per kv head
    kwargs = dict(scale=0.7, query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
    expected = literal_attention_scores(q, k, 0.7, query_reduce, head_reduce, causal).float()
    torch.testing.assert_close(reference.attention_scores(q, k, **kwargs), expected, rtol=1e-6, atol=1e-7)


def test_attention_scores_literal_with_lse():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 1, 4, 4, generator=g)
    lse = torch.randn(1, 2, 3, generator=g)  # any lse: p = exp(logit - lse), not renormalised
    expected = literal_attention_scores(q, k, 0.5, "sum", "max", True, lse).float()
    out = reference.attention_scores(q, k, scale=0.5, query_reduce="sum", head_reduce="max", causal=True, lse=lse)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)


def test_attention_scores_hand_worked_reduce_order():
    # two heads, two rows, two keys; logits ln(a/b) make softmax rows exact fractions:
    # head 0 rows: [0.8, 0.2], [0.5, 0.5]; head 1 rows: [0.2, 0.8], [0.9, 0.1]
    def row(a):
        return [math.log(a), 0.0]

    rows = [[row(4.0), row(1.0)], [row(0.25), row(9.0)]]
    q = torch.tensor(rows, dtype=torch.float64)[None]  # [1, 2, 2, 2]; with k = identity, logits = q
    k = torch.eye(2, dtype=torch.float64)[None, None]
    out = {
        (qr, hr): reference.attention_scores(q, k, scale=1.0, query_reduce=qr, head_reduce=hr)[0].tolist()
        for qr in ("sum", "max")
        for hr in ("mean", "max")
    }
    # heads first: head max rows [0.8, 0.8], [0.9, 0.5]; head mean rows [0.5, 0.5], [0.7, 0.3]
    assert out[("max", "max")] == pytest.approx([0.9, 0.8])
    assert out[("sum", "max")] == pytest.approx([1.7, 1.3])
    assert out[("max", "mean")] == pytest.approx([0.7, 0.5])  # rows first would give 0.85 and 0.65
    assert out[("sum", "mean")] == pytest.approx([1.2, 0.8])


def test_attention_scores_causal_is_right_aligned():
    q, k = torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 4, 1)  # uniform logits
    out = reference.attention_scores(q, k, query_reduce="sum", head_reduce="none", causal=True)
    # row 0 is position 2 (keys 0..2), row 1 is position 3 (keys 0..3)
    assert out[0, 0].tolist() == pytest.approx([1 / 3 + 1 / 4] * 3 + [1 / 4])


# ---------------------------------------------------------------- region_topk_mask


@pytest.mark.parametrize("seed", range(6))
def test_region_topk_mask_brute_force(seed):
    scores, ids, k = region_inputs(2, 30, 4, seed=seed, tie_levels=3 if seed % 2 else None, nan_fraction=0.2)
    out = reference.region_topk_mask(scores, ids, k)
    for b in range(2):
        for r in range(4):
            members = [j for j in range(30) if int(ids[b, j]) == r]
            best = sorted(members, key=lambda j: rank_key(float(scores[b, j]), j))[: int(k[b, r])]
            assert [j for j in members if out[b, j]] == sorted(best)


# ---------------------------------------------------------------- window_argmax_mask


@pytest.mark.parametrize("seed", range(6))
def test_window_argmax_mask_brute_force(seed):
    H, W, wh, ww = 7, 8, 3, 2
    scores, exclude = window_inputs(1, H, W, seed=seed, tie_levels=2 if seed % 2 else None, nan_fraction=0.2)
    out = reference.window_argmax_mask(scores, exclude, (wh, ww))
    expected = torch.zeros_like(out)
    for i0 in range(0, H, wh):
        for j0 in range(0, W, ww):
            cells = [(i, j) for i in range(i0, min(H, i0 + wh)) for j in range(j0, min(W, j0 + ww)) if not exclude[0, i, j]]
            if cells:
                i, j = min(cells, key=lambda c: rank_key(float(scores[0, c[0], c[1]]), c[0] * W + c[1]))
                expected[0, i, j] = True
    assert torch.equal(out, expected)


# ---------------------------------------------------------------- cosine_dedup_mask


def literal_cosine_dedup(x, candidates, order_scores, n_keep, step):
    """docs/design.md 2.4 with Python lists and floats, for one row: the loop runs while r > 0 (no
    separate "n_keep > 0" guard, so n_keep = 0 keeps nothing); a zero vector has cosine 0
    (F.normalize divides by max(norm, 1e-12))."""
    N, C = x.shape
    rows = [[float(v) for v in x[j]] for j in range(N)]
    norms = [max(math.sqrt(sum(v * v for v in r)), 1e-12) for r in rows]

    def cos(a, b):
        return sum((rows[a][c] / norms[a]) * (rows[b][c] / norms[b]) for c in range(C))

    R = sorted((j for j in range(N) if candidates[j]), key=lambda j: rank_key(float(order_scores[j]), j))
    while (r := min(step, len(R) - n_keep)) > 0:
        A, B = R[0::2], R[1::2]
        m = []
        for a in A:
            sims = [cos(a, b) for b in B]
            m.append(NAN if any(math.isnan(s) for s in sims) else max(sims, default=float("-inf")))
        order = sorted(range(len(A)), key=lambda i: rank_key(m[i], i))
        R = [A[i] for i in order][min(r, len(A)) :] + B
    return [j in R for j in range(N)]


@pytest.mark.parametrize("seed", range(8))
def test_cosine_dedup_mask_literal(seed):
    exact = seed % 2 == 1  # exact cosines: ties between maxima decided by the stable order
    x, candidates, order_scores, n_keep = dedup_inputs(2, 24, 6, seed=seed, exact=exact, tie_levels=3 if exact else None)
    if seed == 2:
        x[0, 3] = 0.0
        order_scores[1, ::4] = NAN
    step = 1 + seed % 4
    out = reference.cosine_dedup_mask(x, candidates, order_scores, n_keep, step)
    for b in range(2):
        expected = literal_cosine_dedup(x[b], candidates[b], order_scores[b], int(n_keep[b]), step)
        assert out[b].tolist() == expected


def test_cosine_dedup_mask_hand_worked():
    # ranked R = [0, 1, 2, 3, 4] (scores descending); vectors on the unit circle at angles
    # 0, 90, 10, 180, 95 degrees. n_keep = 3, step = 8: r = 2. A = [0, 2, 4], B = [1, 3]:
    # m(0) = max(cos 90, cos 180) = 0, m(2) = max(cos 80, cos 170) = 0.17, m(4) = max(cos 5, cos 85) = 0.996
    # order by m: [4, 2, 0] -> drop 4 and 2 -> R = [0, 1, 3]
    angles = torch.tensor([0.0, 90.0, 10.0, 180.0, 95.0]) * math.pi / 180
    x = torch.stack([angles.cos(), angles.sin()], -1)[None]
    out = reference.cosine_dedup_mask(x, torch.ones(1, 5, dtype=torch.bool), torch.linspace(1, 0, 5)[None],
                                      torch.tensor([3]), 8)
    assert out[0].tolist() == [True, True, False, True, False]


def test_cosine_dedup_mask_n_keep_zero_keeps_nothing():
    x, candidates, order_scores, _ = dedup_inputs(1, 10, 4, seed=0)
    assert not reference.cosine_dedup_mask(x, candidates, order_scores, torch.tensor([0]), 8).any()


# ---------------------------------------------------------------- allocate_budget


@pytest.mark.parametrize("weights,total,capacity,expected", BUDGET_HAND_CASES)
def test_allocate_budget_hand_worked(weights, total, capacity, expected):
    out = reference.allocate_budget(torch.tensor([weights]), torch.tensor([total]), torch.tensor([capacity]))
    assert out.tolist() == [expected]


def exact_water_filling(weights, total, capacity):
    """Real-number shares of docs/design.md 2.5 (before rounding) and the fixed flags, in exact rationals."""
    from fractions import Fraction

    w = [Fraction(v) for v in weights]
    fixed, rem = [False] * len(w), Fraction(total)
    while True:
        free = [i for i in range(len(w)) if not fixed[i]]
        wsum = sum(w[i] for i in free)
        share = {i: rem * w[i] / wsum if wsum > 0 else rem / len(free) for i in free}
        full = [i for i in free if share[i] >= capacity[i]]
        if not full:
            return share, fixed
        for i in full:
            fixed[i] = True
            rem -= capacity[i]


@settings(max_examples=80, deadline=None)
@given(S=st.integers(1, 10), seed=st.integers(0, 2**31 - 1), zero_fraction=st.sampled_from([0.0, 0.5, 1.0]))
def test_allocate_budget_properties(S, seed, zero_fraction):
    weights, total, capacity = budget_inputs(1, S, torch.float64, seed=seed, zero_fraction=zero_fraction)
    out = reference.allocate_budget(weights, total, capacity)[0].tolist()
    cap = capacity[0].tolist()
    assert sum(out) == int(total[0]) and all(0 <= c <= m for c, m in zip(out, cap))
    share, fixed = exact_water_filling(weights[0].tolist(), int(total[0]), cap)
    for i in range(S):  # fixed regions get their capacity; the others their share rounded down or up
        assert out[i] == cap[i] if fixed[i] else abs(out[i] - share[i]) <= 1
