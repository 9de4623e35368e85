"""The algorithms of the CUDA kernels of region_topk_mask and cosine_dedup_mask, run on the host.

No GPU is needed: ``csrc/tests/sim_selection.cpp`` replays each kernel step for step, serially, with
the same shared helpers (``csrc/common/*.h``: rank keys, radix-selection decisions, bitonic network,
de-dup round bookkeeping, m(a) from a sorted Gram row), and shuffles the orders the kernels leave to
atomics. These tests feed it random and adversarial cases and compare its masks with the plain
references (``vtprune_kernels.reference``), so a wrong decision in the GPU algorithm fails here even
where no GPU exists. What the simulation cannot show (races, barriers, launch configuration, the
CUDA sort itself) is tests/test_cuda_ops.py's job on a GPU.

cosine_dedup_mask: the Gram kernel (cosine_gram.cu) is replayed on its own and must give the
reference's cosines (``reference.cosine_gram``) bit for bit; the rounds kernel receives what the
binding (csrc/cuda/binding.cpp) gives it, built here from those cosines: the Gram matrix padded to
Np columns, NaN stored as +inf (the NaN marker), every row sorted descending. Equal values are put
in a random order first, since the CUDA sort's order among ties is unspecified.
"""
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from op_cases import FLOAT_DTYPES, generator
from vtprune_kernels import reference

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "build" / "host_tests" / "sim_selection"

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("g++") is None, reason="needs make and g++"
)


@pytest.fixture(scope="module")
def sim():
    """Builds the simulation (make -C csrc/tests sim) and returns a runner: (text in) -> mask rows."""
    build = subprocess.run(["make", "-s", "-C", str(ROOT / "csrc" / "tests"), "sim"], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr

    def run(text: str, *, values: bool = False) -> torch.Tensor:
        """The mask rows printed (bool), or with values=True the printed integers (int64, one row per line)."""
        proc = subprocess.run([str(SIM)], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, f"simulation failed (exit {proc.returncode}): {proc.stderr}"
        if values:  # unsigned 64-bit patterns, as int64 bits
            return torch.tensor([[int(v) - (1 << 64) * (int(v) >> 63) for v in line.split()]
                                 for line in proc.stdout.splitlines()], dtype=torch.int64)
        rows = proc.stdout.split()
        return torch.tensor([[c == "1" for c in row] for row in rows], dtype=torch.bool)

    return run


def ints(t: torch.Tensor) -> str:
    return " ".join(str(v) for v in t.flatten().tolist())


def float_bits(scores: torch.Tensor) -> str:
    """The scores as the kernels see them (widened to float32, exact), as unsigned bit patterns."""
    return ints(scores.float().contiguous().view(torch.int32).long() & 0xFFFFFFFF)


def double_bits(values: torch.Tensor) -> str:
    return ints(values.contiguous().view(torch.int64).long() & 0xFFFFFFFFFFFFFFFF)


def special_scores(shape, style, g):
    """float32: 'random', 'ties' (3 levels), 'special' (NaN of both signs, +-inf, +-0 mixed in)."""
    if style == "random":
        return torch.randn(shape, generator=g)
    if style == "ties":
        return torch.randint(0, 3, shape, generator=g).float()
    pool = torch.tensor([float("nan"), -float("nan"), float("-inf"), float("inf"), 0.0, -0.0, 1.0, -1.0])
    values = pool[torch.randint(0, len(pool), shape, generator=g)]
    return torch.where(torch.rand(shape, generator=g) < 0.3, torch.randn(shape, generator=g), values)


# ---------------------------------------------------------------- region_topk_mask

REGION_CASES = [(3, 40, 3, False), (2, 300, 7, True), (2, 700, 2, False), (1, 9, 12, False)]  # (B, N, R, shared_ids)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("style", ["random", "ties", "special"])
@pytest.mark.parametrize("B,N,R,shared_ids", REGION_CASES)
def test_region_topk_simulation_matches_reference(sim, B, N, R, shared_ids, style, dtype):
    seed = N * 10 + R
    g = generator(seed)
    scores = special_scores((B, N), style, g).to(dtype)
    ids = torch.randint(0, R, (N,) if shared_ids else (B, N), generator=g)
    sizes = torch.zeros(B, R, dtype=torch.long).scatter_add_(1, ids.expand(B, N), torch.ones(B, N, dtype=torch.long))
    k = (torch.rand(B, R, generator=g) * (sizes + 1)).long().clamp(max=sizes)
    k[:, 0] = sizes[:, 0]  # a region taken whole (no radix pass)
    text = f"region {seed} {B} {N} {R} {1 if shared_ids else B}\n{float_bits(scores)}\n{ints(ids)}\n{ints(k)}\n"
    assert torch.equal(sim(text), reference.region_topk_mask(scores, ids, k))


# ---------------------------------------------------------------- cosine_dedup_mask


def exact_features(B, N, C, g, support=4):
    """[B, N, C]: `support` (a power of 4) entries of +-1/sqrt(support) per row: unit norm, every cosine
    an exact multiple of 1/support (many exact ties)."""
    cols = torch.rand(B, N, C, generator=g).argsort(-1)[..., :support]
    signs = torch.randint(0, 2, (B, N, support), generator=g).float() * 2 - 1
    return torch.zeros(B, N, C).scatter_(-1, cols, signs / support**0.5)


def sorted_gram_as_binding(x, g, *, nan_marker=True, negative_nans_last=False):
    """(values float64, columns) [B, Np, Np] as csrc/cuda/binding.cpp builds them, ties in random order.

    negative_nans_last: instead of the NaN marker, every NaN gets its sign bit set and sorts last, the
    way a radix sort on IEEE bits ranks a negative NaN (the failure the marker prevents)."""
    B, N, _ = x.shape
    Np = (N + 3) // 4 * 4
    gram = torch.stack([reference.cosine_gram(F.pad(x[b].double(), (0, 0, 0, Np - N))) for b in range(B)])
    if nan_marker:
        gram = gram.nan_to_num(nan=float("inf"), posinf=float("inf"))
    if negative_nans_last:
        bits = gram.view(torch.int64)
        gram = torch.where(gram.isnan(), bits | torch.iinfo(torch.int64).min, bits).view(torch.float64)
    perm = torch.randperm(Np, generator=g)  # a random order among equal values
    shuffled = gram[..., perm]
    keys = shuffled.nan_to_num(nan=float("-inf")) if negative_nans_last else shuffled
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices
    return shuffled.gather(-1, order), perm[order], Np


def gram_text(seed, x, Np):
    B, N, C = x.shape
    return f"gram {seed} {B} {N} {C} {Np}\n{float_bits(x)}\n"


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("B,N,C", [(2, 70, 33), (1, 129, 16), (3, 5, 1), (1, 64, 0)])
def test_gram_simulation_matches_reference_cosines_bit_for_bit(sim, B, N, C, dtype):
    # random features with duplicates (cosine exactly 1), a zero vector, scaled copies and a NaN row;
    # N beyond one 64-row tile and Np > N (zero padding rows), C not a multiple of the kernel's 16
    g = generator(N + C)
    x = torch.randn(B, N, C, generator=g)
    if N > 10 and C > 0:
        x[:, 5:9] = x[:, 1:2]
        x[:, 3] = 0.0
        x[:, 10] = 4.0 * x[:, 2]
        x[0, 4, 0] = float("nan")
    x = x.to(dtype)
    Np = (N + 3) // 4 * 4 + 4
    values = sim(gram_text(N, x, Np), values=True)
    expected = torch.stack([reference.cosine_gram(F.pad(x[b].double(), (0, 0, 0, Np - N))) for b in range(B)])
    assert torch.equal(values.view(torch.float64).reshape(B, Np, Np).nan_to_num(7.0), expected.nan_to_num(7.0))
    if N > 10 and C > 0:  # duplicates and power-of-two multiples: cosine exactly 1; a zero vector: 0
        assert (expected[:, 1, 5:9] == 1.0).all() and (expected[:, 2, 10] == 1.0).all()
        assert (expected[:, 3].nan_to_num(0.0) == 0.0).all()


def dedup_text(seed, x, candidates, order_scores, n_keep, step, values, columns, Np):
    B, N, _ = x.shape
    return (
        f"dedup {seed} {B} {N} {Np} {step}\n{ints(n_keep)}\n{ints(candidates.long())}\n{float_bits(order_scores)}\n"
        f"{double_bits(values)}\n{ints(columns)}\n"
    )


def dedup_case(B, N, C, dtype, seed, *, special):
    """Exact features (duplicates, a zero vector, NaN rows of both signs when `special`), candidates,
    order scores (ties, NaN, +-0, +-inf when `special`), n_keep across [0, N + 2]."""
    g = generator(seed)
    x = exact_features(B, N, C, g)
    if special and N >= 8:
        x[:, N // 2 :: 5] = x[:, : len(range(N // 2, N, 5))]  # duplicate vectors: cosine-1 ties
        x[:, 3] = 0.0  # a zero vector: cosine 0 with everything
        x[0, 1, 0] = float("nan")
        x[-1, 5, 2] = -float("nan")
    candidates = torch.rand(B, N, generator=g) < 0.85
    order_scores = special_scores((B, N), "special" if special else "ties", g).to(dtype)
    n_keep = torch.randint(0, N + 3, (B,), generator=g)
    return x.to(dtype), candidates, order_scores, n_keep, g


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("special", [False, True], ids=["plain", "special"])
@pytest.mark.parametrize("B,N,C,step", [(3, 37, 16, 8), (2, 64, 8, 3), (2, 130, 32, 8), (1, 1, 4, 8), (2, 11, 4, 1)])
def test_dedup_simulation_matches_reference(sim, B, N, C, step, special, dtype):
    seed = N * 7 + C + step
    x, candidates, order_scores, n_keep, g = dedup_case(B, N, C, dtype, seed, special=special)
    values, columns, Np = sorted_gram_as_binding(x, g)
    got = sim(dedup_text(seed, x, candidates, order_scores, n_keep, step, values, columns, Np))
    assert torch.equal(got, reference.cosine_dedup_mask(x, candidates, order_scores, n_keep, step))


def test_dedup_simulation_n_keep_edges(sim):
    # no candidate, every token a candidate, n_keep 0 / n-1 / n / beyond n
    B, N, C = 4, 50, 8
    x, candidates, order_scores, _, g = dedup_case(B, N, C, torch.float32, 5, special=True)
    candidates[1] = False
    candidates[2] = True
    n_cand = candidates.sum(1)
    values, columns, Np = sorted_gram_as_binding(x, g)
    for n_keep in (torch.zeros(B, dtype=torch.long), n_cand, n_cand + 4, (n_cand - 1).clamp(min=0)):
        got = sim(dedup_text(6, x, candidates, order_scores, n_keep, 8, values, columns, Np))
        assert torch.equal(got, reference.cosine_dedup_mask(x, candidates, order_scores, n_keep, 8))


def test_dedup_simulation_detects_negative_nans_sorted_last(sim):
    # Without the NaN marker, a NaN whose sign bit is set (as GPU arithmetic may leave it) sorts last
    # in a radix sort, and m(a) stops propagating it: the masks then differ from the reference. This
    # is the failure the binding's nan_to_num(+inf) prevents; the check shows the simulation sees it.
    differs = 0
    for seed in range(6):
        g = generator(100 + seed)
        x = exact_features(1, 40, 8, g)
        x[0, 2 * seed + 1, 0] = float("nan")
        candidates = torch.ones(1, 40, dtype=torch.bool)
        order_scores = torch.linspace(1, 0, 40)[None]
        n_keep = torch.tensor([10])
        expected = reference.cosine_dedup_mask(x, candidates, order_scores, n_keep, 8)
        marked = sorted_gram_as_binding(x, g)
        assert torch.equal(sim(dedup_text(seed, x, candidates, order_scores, n_keep, 8, *marked)), expected)
        unmarked = sorted_gram_as_binding(x, g, nan_marker=False, negative_nans_last=True)
        differs += not torch.equal(sim(dedup_text(seed, x, candidates, order_scores, n_keep, 8, *unmarked)), expected)
    assert differs > 0
