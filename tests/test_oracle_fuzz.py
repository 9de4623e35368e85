"""Every backend of the selection ops against the independent oracles (tests/oracles.py) on random
and adversarial inputs drawn by hypothesis: ties, NaN, +-0, +-inf, duplicate and zero feature
vectors, power-of-two multiples, windows beyond the grid (up to 2**63 - 1), budgets whose fractional
parts tie exactly, capacities near 2**63. Backends: the C++ kernels (through vtprune_kernels.ops and
torch.ops), the reference, and CUDA when a GPU is present."""
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import oracles
import vtprune_kernels  # noqa: F401
from vtprune_kernels import _library, ops

BACKENDS = ["cpu", "auto", "reference"] + (
    ["cuda"] if torch.cuda.is_available() and _library.HAS_CUDA_KERNELS else []
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPECIAL = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1.0, -1.0, 0.5]


def run(name, backend, *args):
    device = "cuda" if backend == "cuda" else "cpu"
    moved = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    kwargs = {} if name == "window_argmax_mask" else {"validate": backend != "cuda"}
    return getattr(ops, name)(*moved, backend=backend, **kwargs).cpu()


def scores_strategy(n, tie_prone):
    """n float32 scores: a few levels (exact ties) or arbitrary floats, with the special values mixed in."""
    value = st.sampled_from([0.0, 1.0, 2.0]) if tie_prone else st.floats(-4.0, 4.0, width=32)
    return st.lists(st.one_of(value, st.sampled_from(SPECIAL)), min_size=n, max_size=n)


@st.composite
def region_case(draw):
    B, N, R = draw(st.integers(1, 3)), draw(st.integers(1, 24)), draw(st.integers(1, 4))
    scores = [draw(scores_strategy(N, draw(st.booleans()))) for _ in range(B)]
    shared = draw(st.booleans())
    ids = draw(st.lists(st.integers(0, R - 1), min_size=N, max_size=N))
    rows = [ids] * B if shared else [draw(st.lists(st.integers(0, R - 1), min_size=N, max_size=N)) for _ in range(B)]
    k = [[draw(st.integers(0, row.count(r))) for r in range(R)] for row in rows]
    return scores, (ids if shared else rows), k


@FUZZ
@given(case=region_case())
def test_region_topk_mask(case):
    scores, ids, k = case
    expected = oracles.region_topk(scores, ids, k)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        s = torch.tensor(scores, dtype=torch.float32).to(dtype)
        widened = s.float().tolist()  # what the op ranks: the scores in the input dtype
        want = expected if dtype == torch.float32 else oracles.region_topk(widened, ids, k)
        for backend in BACKENDS:
            got = run("region_topk_mask", backend, s, torch.tensor(ids), torch.tensor(k))
            assert got.tolist() == want, (backend, dtype)


@st.composite
def window_case(draw):
    B, H, W = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    tie_prone = draw(st.booleans())
    scores = [[draw(scores_strategy(W, tie_prone)) for _ in range(H)] for _ in range(B)]
    exclude = [[draw(st.lists(st.booleans(), min_size=W, max_size=W)) for _ in range(H)] for _ in range(B)]
    size = st.one_of(st.integers(1, 10), st.sampled_from([2**31, 2**62, 2**63 - 1]))
    return scores, exclude, (draw(size), draw(size))


@FUZZ
@given(case=window_case())
def test_window_argmax_mask(case):
    scores, exclude, window = case
    expected = oracles.window_argmax(scores, exclude, window)
    for backend in BACKENDS:
        got = run("window_argmax_mask", backend, torch.tensor(scores), torch.tensor(exclude), window)
        assert got.tolist() == expected, backend


@st.composite
def dedup_case(draw):
    B, N, C = draw(st.integers(1, 2)), draw(st.integers(1, 16)), draw(st.integers(1, 5))
    palette = draw(st.lists(st.lists(st.floats(-3.0, 3.0, width=32), min_size=C, max_size=C), min_size=1, max_size=3))
    x = []
    for _ in range(B):
        rows = []
        for _ in range(N):  # a copy (flat region), a power-of-two multiple of one, a zero, a special, or new
            kind = draw(st.sampled_from(["copy"] * 4 + ["scaled", "zero", "special", "new"]))
            base = draw(st.sampled_from(palette))
            if kind == "scaled":
                base = [v * draw(st.sampled_from([2.0, 0.5, 4.0])) for v in base]
            elif kind == "zero":
                base = [0.0] * C
            elif kind == "special":
                base = base[:-1] + [draw(st.sampled_from([float("nan"), float("inf")]))]
            elif kind == "new":
                base = draw(st.lists(st.floats(-3.0, 3.0, width=32), min_size=C, max_size=C))
            rows.append(base)
        x.append(rows)
    candidates = [draw(st.lists(st.booleans(), min_size=N, max_size=N)) for _ in range(B)]
    order = [draw(scores_strategy(N, draw(st.booleans()))) for _ in range(B)]
    n_keep = [draw(st.integers(0, N + 1)) for _ in range(B)]
    return x, candidates, order, n_keep, draw(st.integers(1, 4))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=dedup_case())
def test_cosine_dedup_mask(case):
    x, candidates, order, n_keep, step = case
    try:
        expected = oracles.cosine_dedup(x, candidates, order, n_keep, step)
    except oracles.Ambiguous:  # maxima closer than float64 resolves, not equal by construction
        assume(False)
    args = (torch.tensor(x), torch.tensor(candidates), torch.tensor(order), torch.tensor(n_keep), step)
    for backend in BACKENDS:
        assert run("cosine_dedup_mask", backend, *args).tolist() == expected, backend


@st.composite
def budget_case(draw):
    B, S = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    big = draw(st.booleans())  # capacities near 2**62: their sum overflows int64
    weights, capacity, total = [], [], []
    for _ in range(B):  # integer levels make equal shares and exactly tied fractions common
        w = draw(st.lists(st.one_of(st.integers(0, 4).map(float), st.floats(0.0, 10.0, width=32)), min_size=S, max_size=S))
        cap = draw(st.lists(st.integers(2**61, 2**62) if big else st.integers(0, 12), min_size=S, max_size=S))
        weights.append(w)
        capacity.append(cap)
        total.append(draw(st.integers(0, min(sum(cap), 2**63 - 1))))
    return weights, total, capacity


@FUZZ
@given(case=budget_case())
def test_allocate_budget(case):
    weights, total, capacity = case
    expected = oracles.allocate_budget(weights, total, capacity)
    for dtype in (torch.float64, torch.float32):
        w = torch.tensor(weights, dtype=dtype)
        want = expected if dtype == torch.float64 else oracles.allocate_budget(w.double().tolist(), total, capacity)
        for backend in BACKENDS:
            got = run("allocate_budget", backend, w, torch.tensor(total), torch.tensor(capacity))
            assert got.tolist() == want, (backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_issue_examples(backend):
    # the cases the fuzzer found first, kept as plain examples
    w, t, c = torch.tensor([[8.0, 5.0, 2.0]]), torch.tensor([5]), torch.tensor([[100, 3, 3]])
    assert run("allocate_budget", backend, w, t, c).tolist() == [[3, 2, 0]]
    scores, exclude = torch.rand(1, 5, 7), torch.zeros(1, 5, 7, dtype=torch.bool)
    for window in [(2**62, 2**62), (2**63 - 1, 2)]:
        got = run("window_argmax_mask", backend, scores, exclude, window)
        assert got.tolist() == oracles.window_argmax(scores.tolist(), exclude.tolist(), window)
    # identical feature vectors: every cosine exactly 1, positions decide
    x = torch.randn(1, 1, 5).expand(1, 8, 5).contiguous().tolist()
    candidates, order = [[True] * 8], [[1.0 - i / 8 for i in range(8)]]
    expected = oracles.cosine_dedup(x, candidates, order, [3], 8)
    assert expected == [[False, False, False, True, False, True, False, True]]
    got = run("cosine_dedup_mask", backend, torch.tensor(x), torch.tensor(candidates), torch.tensor(order), torch.tensor([3]), 8)
    assert got.tolist() == expected
