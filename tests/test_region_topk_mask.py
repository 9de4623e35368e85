"""region_topk_mask: the C++ CPU kernel against the reference, plus properties."""
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vtprune_kernels  # noqa: F401
from op_cases import ENTRY_POINTS, FLOAT_DTYPES, region_inputs, run_op
from vtprune_kernels import reference


@pytest.mark.parametrize("via", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("B,N,R", [(3, 577, 4), (2, 1025, 1), (4, 1, 1), (2, 50, 9), (1, 30, 40)])
def test_matches_reference(via, dtype, B, N, R):
    scores, ids, k = region_inputs(B, N, R, dtype, seed=N + R)
    out = run_op("region_topk_mask", scores, ids, k, via=via)
    assert out.dtype == torch.bool and out.shape == (B, N)
    assert torch.equal(out, reference.region_topk_mask(scores, ids, k))


@pytest.mark.parametrize("shared_ids", [False, True])
@pytest.mark.parametrize("tie_levels,nan_fraction", [(3, 0.0), (None, 0.3), (2, 0.4), (None, 1.0)])
def test_ties_and_nan(shared_ids, tie_levels, nan_fraction):
    scores, ids, k = region_inputs(3, 200, 5, seed=11, shared_ids=shared_ids, tie_levels=tie_levels,
                                   nan_fraction=nan_fraction)
    assert torch.equal(torch.ops.vtprune.region_topk_mask(scores, ids, k), reference.region_topk_mask(scores, ids, k))


def test_ties_go_to_the_lower_index_and_nan_ranks_last():
    scores = torch.tensor([[1.0, float("nan"), 2.0, 2.0, 1.0, float("nan")]])
    ids = torch.tensor([0, 0, 0, 0, 1, 1])
    out = torch.ops.vtprune.region_topk_mask(scores, ids, torch.tensor([[3, 1]]))
    assert out.tolist() == [[True, False, True, True, True, False]]
    out = torch.ops.vtprune.region_topk_mask(scores, ids, torch.tensor([[1, 2]]))
    assert out.tolist() == [[False, False, True, False, True, True]]


def test_empty_regions_and_extreme_k():
    # region 1 is empty (k = 0), region 0 keeps all, region 2 keeps none
    scores = torch.randn(2, 12)
    ids = torch.tensor([0] * 5 + [2] * 7)
    k = torch.tensor([[5, 0, 0], [2, 0, 7]])
    out = torch.ops.vtprune.region_topk_mask(scores, ids, k)
    assert out[0].tolist() == [True] * 5 + [False] * 7
    assert out[1, 5:].all() and int(out[1, :5].sum()) == 2
    assert torch.equal(out, reference.region_topk_mask(scores, ids, k))


def test_non_contiguous_inputs():
    scores, ids, k = region_inputs(3, 64, 4, seed=12)
    scores_t = scores.t().contiguous().t()
    ids_t = ids.t().contiguous().t()
    k_t = k.t().contiguous().t()
    assert not (scores_t.is_contiguous() or ids_t.is_contiguous() or k_t.is_contiguous())
    assert torch.equal(torch.ops.vtprune.region_topk_mask(scores_t, ids_t, k_t), reference.region_topk_mask(scores, ids, k))
    ids_1d = (torch.arange(128) // 2 % 4)[::2]  # strided [N]
    assert not ids_1d.is_contiguous()
    sizes = torch.bincount(ids_1d, minlength=4).expand(3, 4)
    assert torch.equal(torch.ops.vtprune.region_topk_mask(scores, ids_1d, sizes // 2),
                       reference.region_topk_mask(scores, ids_1d.contiguous(), sizes // 2))


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 40),
    R=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    tie_levels=st.sampled_from([None, 2, 4]),
)
def test_property_exactly_k_per_region_and_best_kept(N, R, seed, tie_levels):
    scores, ids, k = region_inputs(2, N, R, seed=seed, tie_levels=tie_levels)
    out = torch.ops.vtprune.region_topk_mask(scores, ids, k)
    for b in range(2):
        for r in range(R):
            members = (ids[b] == r).nonzero().flatten()
            kept, dropped = members[out[b, members]], members[~out[b, members]]
            assert len(kept) == int(k[b, r])
            for i in kept:  # every kept token ranks before every dropped one
                for j in dropped:
                    si, sj = float(scores[b, i]), float(scores[b, j])
                    assert si > sj or (si == sj and i < j)
    assert not out[ids.expand(2, N) >= R].any()


def contiguous_region_cases():
    """(scores, region_ids, k) with regions of contiguous tokens (the vectorised path of the CPU
    kernel, csrc/cpu/region_keys.cpp) and HIVTP-like quadrants of a grid: sizes around the vector
    widths, ties, NaN, signed zeros, one repeated value."""
    g = torch.Generator().manual_seed(5)
    cases = []
    grid = torch.arange(24)
    quadrants = ((grid[:, None] // 12) * 2 + grid[None, :] // 12).flatten()
    for size, ids in [(s, torch.arange(3 * s) // s) for s in (1, 2, 7, 16, 17, 31, 144, 145, 577)] + [(144, quadrants)]:
        N, R = ids.numel(), int(ids.max()) + 1
        for kind in ("randn", "ties", "nan", "zeros", "equal"):
            scores = torch.randn(2, N, generator=g)
            if kind == "ties":
                scores = torch.randint(0, 3, (2, N), generator=g).float()
            elif kind == "nan":
                scores[torch.rand(2, N, generator=g) < 0.3] = float("nan")
            elif kind == "zeros":
                scores = torch.where(torch.rand(2, N, generator=g) < 0.5, 0.0, -0.0) + (torch.rand(2, N) < 0.2).float()
            elif kind == "equal":
                scores = torch.full((2, N), 0.25)
            k = torch.randint(0, size + 1, (2, R), generator=g)
            cases.append((scores, ids, k))
    return cases


def check_contiguous_regions():
    for scores, ids, k in contiguous_region_cases():
        for dtype in (torch.float32, torch.bfloat16):
            s = scores.to(dtype)
            assert torch.equal(torch.ops.vtprune.region_topk_mask(s, ids, k), reference.region_topk_mask(s, ids, k))


def test_contiguous_regions_and_quadrants():
    check_contiguous_regions()


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_contiguous_regions_with_a_capped_instruction_set(capability):
    # Every copy of the vectorised loops (csrc/cpu/region_keys.cpp) gives the reference's answer:
    # VTPRUNE_CPU_CAPABILITY caps the copy (read once per process, hence a subprocess). "avx512"
    # is what the in-process test runs on a CPU that has it.
    code = "import test_region_topk_mask as t; t.check_contiguous_regions()"
    env = dict(os.environ, VTPRUNE_CPU_CAPABILITY=capability)
    run = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


def test_bad_cpu_capability_is_named():
    code = "import torch, vtprune_kernels; torch.ops.vtprune.region_topk_mask(torch.rand(1, 4), torch.zeros(4, dtype=torch.long), torch.tensor([[1]]))"
    env = dict(os.environ, VTPRUNE_CPU_CAPABILITY="sse9")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "VTPRUNE_CPU_CAPABILITY='sse9'" in run.stderr


def test_large_region_takes_the_radix_selection():
    # regions above 65536 tokens are selected by the radix passes (csrc/cpu/region_topk_mask.cpp)
    g = torch.Generator().manual_seed(6)
    scores = torch.randint(0, 1000, (1, 70001), generator=g).float()
    scores[0, ::7] = float("nan")
    ids = (torch.arange(70001) >= 70000).long()
    for keep in (1, 12345, 69999):
        k = torch.tensor([[keep, 1]])
        assert torch.equal(torch.ops.vtprune.region_topk_mask(scores, ids, k), reference.region_topk_mask(scores, ids, k))
