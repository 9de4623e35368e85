"""The selection ops against the strongest plain-torch formulation we could write of each, and
against what the published methods run (per-segment ``topk`` loops, VisPruner's per-round loop).

Per group, contenders timed by pytest-benchmark one after the other, plus, on the vtprune entry, a
paired comparison with the strongest baseline in the same process (the two calls alternate, the
fastest of each is kept: ``extra_info["paired_vtprune_s"]``, ``["paired_baseline_s"]``,
``["speedup"]``), which is the figure a loaded machine disturbs least. Shapes are the models':

- region_topk_mask: PTP's 5 LLaVA-NeXT regions of 576 (keep 288) and HIVTP's 2x2 regions of the
  24x24 grid (keep 36), batch 8. Strongest baseline: one batched ``topk`` of the largest budget and a
  rank mask (``topk_equal_blocks_vectorised``); published: a ``topk`` per (row, region).
- cosine_dedup_mask: 5 tiles x 576 tokens x 1024 channels, 16 important removed, 16 diverse kept.
  Strongest baselines: the Gram matrix once (float32 and float64) and vectorised rounds
  (``dedup_gram_once``); published: VisPruner's per-round loop. Also duplicate-heavy features: one
  image of 3000 tokens x 1024 channels from flat regions (3/4 of the tokens exact copies of 3
  vectors, thousands of exactly tied maxima per round), against the float32 Gram-once baseline.
- window_argmax_mask: HIVTP's 2x2 windows on 8 x 24x24. Baseline: masked fill, a window view, max.
- allocate_budget: PTP's budgets, 64 images x 5 regions. Baseline: vectorised water-filling.
- wrapper overhead: ``vtprune_kernels.ops.<op>`` against ``torch.ops.vtprune.<op>`` on tiny inputs.
The machine (CPU model, ISA, threads) is printed in the header and stored in the JSON.
CUDA shapes live in bench_selection_cuda.py.

Run: ``pytest benchmarks/bench_selection.py --benchmark-only``
"""
import pytest
import torch
from baselines import (
    budget_water_filling_vectorised,
    dedup_gram_once,
    published_dedup_loop,
    ranked_residual,
    topk_equal_blocks_vectorised,
    topk_per_segment,
    window_argmax_vectorised,
)
from timing import paired_best

import vtprune_kernels  # noqa: F401
from vtprune_kernels import ops, reference


def record_paired(benchmark, vtprune, baseline, pairs=5):
    """Times vtprune and the strongest baseline alternately; stores both minima and the speedup."""
    fast, slow = paired_best(vtprune, baseline, pairs=pairs)
    benchmark.extra_info.update(paired_vtprune_s=fast, paired_baseline_s=slow, speedup=slow / fast)


# ---------------------------------------------------------------- region_topk_mask

REGION_CASES = {"ptp-5x576": (8, 5, 576, 288), "hivtp-4x144": (8, 4, 144, 36)}  # (B, R, size, keep)


def region_inputs(case):
    B, R, size, keep = REGION_CASES[case]
    scores = torch.rand(B, R * size, generator=torch.Generator().manual_seed(0))
    region_ids = torch.arange(R * size) // size
    return scores, region_ids, torch.full((B, R), keep, dtype=torch.int64), size


@pytest.mark.parametrize("case", sorted(REGION_CASES))
@pytest.mark.parametrize("impl", ["vtprune", "topk-batched", "topk-loop"])
def test_region_topk_mask(benchmark, impl, case):
    benchmark.group = f"region_topk_mask {case}"
    scores, ids, k, size = region_inputs(case)
    vtprune = lambda: ops.region_topk_mask(scores, ids, k)  # noqa: E731
    batched = lambda: topk_equal_blocks_vectorised(scores, k, size)  # noqa: E731
    assert torch.equal(vtprune(), batched())
    if impl == "vtprune":
        record_paired(benchmark, vtprune, batched, pairs=50)
        benchmark(vtprune)
    elif impl == "topk-batched":
        benchmark(batched)
    else:
        benchmark(topk_per_segment, scores, ids, k)


# ---------------------------------------------------------------- cosine_dedup_mask

DEDUP_SHAPE = (5, 576, 1024, 16, 16)  # tiles, tokens, channels, important tokens, diverse tokens kept


def dedup_inputs():
    B, N, C, n_imp, n_div = DEDUP_SHAPE
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, N, C, generator=g)
    scores = torch.rand(B, N, generator=g)
    ranked = scores.argsort(dim=1, descending=True, stable=True)
    candidates = torch.ones(B, N, dtype=torch.bool).scatter(1, ranked[:, :n_imp], False)
    n_keep = torch.full((B,), n_div, dtype=torch.int64)
    return x, candidates, scores, n_keep, ranked_residual(candidates, scores)


@pytest.mark.parametrize("impl", ["vtprune", "gram-once-float32", "gram-once-float64", "published-loop"])
def test_cosine_dedup_mask(benchmark, impl):
    benchmark.group = "cosine_dedup_mask 5 tiles x 576 x 1024, keep 16 of 560"
    x, candidates, scores, n_keep, residual = dedup_inputs()
    n_div = DEDUP_SHAPE[4]
    vtprune = lambda: ops.cosine_dedup_mask(x, candidates, scores, n_keep, 8)  # noqa: E731
    gram32 = lambda: dedup_gram_once(x, residual, n_div)  # noqa: E731
    if impl == "vtprune":
        record_paired(benchmark, vtprune, gram32, pairs=15)
        benchmark.pedantic(vtprune, rounds=5, warmup_rounds=1)
    elif impl == "gram-once-float32":
        benchmark.pedantic(gram32, rounds=5, warmup_rounds=1)
    elif impl == "gram-once-float64":
        benchmark.pedantic(dedup_gram_once, args=(x, residual, n_div), kwargs={"dtype": torch.float64}, rounds=3)
    else:
        benchmark.pedantic(published_dedup_loop, args=(x, residual, n_div), rounds=3, warmup_rounds=1)


def filter_gram_products(unit, blocks=3, width=256):
    """The matrix products the CPU kernel's filter Gram matrix is made of, in torch: per tile of unit
    rows [n, C], the upper triangle in `blocks` row blocks, each summed over slices of `width`
    channels (the kernel's own GEMM calls, without its bookkeeping)."""
    for u in unit:
        n, C = u.shape
        step = -(-n // blocks)
        for r0 in range(0, n, step):
            upper = torch.mm(u[r0:r0 + step, :width], u[r0:, :width].t())
            for k0 in range(width, C, width):
                upper += torch.mm(u[r0:r0 + step, k0:k0 + width], u[r0:, k0:k0 + width].t())


def test_cosine_dedup_mask_gram_floor(benchmark):
    """The floor under the kernel: its filter GEMM alone, paired with the whole kernel, beside the
    full float32 bmm the Gram-once baseline runs and a bf16 bmm (what a reduced-precision filter
    would cost)."""
    benchmark.group = "cosine_dedup_mask 5 tiles x 576 x 1024: the filter GEMM alone"
    x, candidates, scores, n_keep, residual = dedup_inputs()
    unit = torch.nn.functional.normalize(torch.gather(x, 1, residual[..., None].expand(-1, -1, x.shape[-1])), dim=-1)
    unit_bf16 = unit.bfloat16()
    kernel_s, gemm_s = paired_best(lambda: ops.cosine_dedup_mask(x, candidates, scores, n_keep, 8),
                                   lambda: filter_gram_products(unit), pairs=5)
    full_s, bf16_s = paired_best(lambda: torch.bmm(unit, unit.transpose(1, 2)),
                                 lambda: torch.bmm(unit_bf16, unit_bf16.transpose(1, 2)), pairs=5)
    benchmark.extra_info.update(paired_vtprune_s=kernel_s, filter_gemm_s=gemm_s, gemm_share=gemm_s / kernel_s,
                                full_float32_bmm_s=full_s, bf16_bmm_s=bf16_s)
    benchmark.pedantic(filter_gram_products, args=(unit,), rounds=5, warmup_rounds=1)


FLAT_SHAPE = (3000, 1024, 3, 0.75, 16, 16)  # tokens, channels, flat regions, copied share, important, kept


def flat_region_inputs(noise=0.0):
    """One image whose tokens are mostly exact copies of a few vectors (flat image regions), or
    near-copies with ``noise`` (float32-rounding-level offsets) added."""
    N, C, regions, copied, n_imp, n_div = FLAT_SHAPE
    g = torch.Generator().manual_seed(0)
    templates = torch.randn(regions, C, generator=g)
    x = torch.randn(1, N, C, generator=g)
    copy = torch.rand(N, generator=g) < copied
    x[0, copy] = templates[torch.randint(0, regions, (int(copy.sum()),), generator=g)]
    if noise:
        x[0, copy] += noise * torch.randn(int(copy.sum()), C, generator=g)
    scores = torch.rand(1, N, generator=g)
    candidates = torch.ones(1, N, dtype=torch.bool).scatter(1, scores.topk(n_imp).indices, False)
    return x, candidates, scores, torch.tensor([n_div]), ranked_residual(candidates, scores)


@pytest.mark.parametrize("impl", ["vtprune", "gram-once-float32"])
def test_cosine_dedup_mask_flat_regions(benchmark, impl):
    N, C, regions, copied, n_imp, n_div = FLAT_SHAPE
    benchmark.group = f"cosine_dedup_mask flat regions: 1 x {N} x {C}, {copied:.0%} copies of {regions} vectors, keep {n_div}"
    x, candidates, scores, n_keep, residual = flat_region_inputs()
    vtprune = lambda: ops.cosine_dedup_mask(x, candidates, scores, n_keep, 8)  # noqa: E731
    gram32 = lambda: dedup_gram_once(x, residual, n_div)  # noqa: E731
    if impl == "vtprune":  # the baseline takes seconds here (~370 rounds over a 2984 x 2984 Gram matrix)
        record_paired(benchmark, vtprune, gram32, pairs=2)
        benchmark.pedantic(vtprune, rounds=3, warmup_rounds=1)
    else:
        benchmark.pedantic(gram32, rounds=2)


@pytest.mark.parametrize("impl", ["vtprune", "gram-once-float32"])
def test_cosine_dedup_mask_near_copies(benchmark, impl):
    N, C, regions, copied, n_imp, n_div = FLAT_SHAPE
    benchmark.group = f"cosine_dedup_mask near-copies: 1 x {N} x {C}, {copied:.0%} copies of {regions} vectors + 1e-7 noise, keep {n_div}"
    x, candidates, scores, n_keep, residual = flat_region_inputs(noise=1e-7)
    vtprune = lambda: ops.cosine_dedup_mask(x, candidates, scores, n_keep, 8)  # noqa: E731
    gram32 = lambda: dedup_gram_once(x, residual, n_div)  # noqa: E731
    if impl == "vtprune":  # every near-copy's cosines are within the float64 bound: exact re-checks
        record_paired(benchmark, vtprune, gram32, pairs=2)
        benchmark.pedantic(vtprune, rounds=2, warmup_rounds=0)
    else:
        benchmark.pedantic(gram32, rounds=2)


# ---------------------------------------------------------------- window_argmax_mask

WINDOW_SHAPE = (8, 24, 24, 2)  # batch, grid, grid, window


@pytest.mark.parametrize("impl", ["vtprune", "torch-vectorised"])
def test_window_argmax_mask(benchmark, impl):
    B, H, W, w = WINDOW_SHAPE
    benchmark.group = f"window_argmax_mask {B}x{H}x{W}, {w}x{w} windows"
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(B, H, W, generator=g)
    exclude = torch.rand(B, H, W, generator=g) < 0.25
    vtprune = lambda: ops.window_argmax_mask(scores, exclude, w)  # noqa: E731
    baseline = lambda: window_argmax_vectorised(scores, exclude, (w, w))  # noqa: E731
    assert torch.equal(vtprune(), baseline())
    if impl == "vtprune":
        record_paired(benchmark, vtprune, baseline, pairs=50)
        benchmark(vtprune)
    else:
        benchmark(baseline)


# ---------------------------------------------------------------- allocate_budget


@pytest.mark.parametrize("impl", ["vtprune", "torch-water-filling", "reference"])
def test_allocate_budget(benchmark, impl):
    benchmark.group = "allocate_budget 64 images x 5 regions"
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(64, 5, generator=g).softmax(-1)
    capacity = torch.full((64, 5), 576, dtype=torch.int64)
    total = torch.full((64,), 1440, dtype=torch.int64)
    vtprune = lambda: ops.allocate_budget(weights, total, capacity)  # noqa: E731
    baseline = lambda: budget_water_filling_vectorised(weights, total, capacity)  # noqa: E731
    assert torch.equal(vtprune(), baseline())
    if impl == "vtprune":
        record_paired(benchmark, vtprune, baseline, pairs=50)
        benchmark(vtprune)
    elif impl == "torch-water-filling":
        benchmark(baseline)
    else:
        benchmark.pedantic(reference.allocate_budget, args=(weights, total, capacity), rounds=5)


# ---------------------------------------------------------------- wrapper overhead


def tiny_inputs():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(1, 8, generator=g)
    return {
        "region_topk_mask": (scores, torch.zeros(8, dtype=torch.int64), torch.tensor([[2]])),
        "window_argmax_mask": (scores.view(1, 2, 4), scores.view(1, 2, 4) > 0.5, [2, 2]),
        "cosine_dedup_mask": (torch.randn(1, 8, 4, generator=g), scores > 0.2, scores, torch.tensor([2]), 8),
        "allocate_budget": (torch.rand(1, 3, generator=g), torch.tensor([4]), torch.full((1, 3), 4)),
    }


@pytest.mark.parametrize("op", sorted(tiny_inputs()))
@pytest.mark.parametrize("entry", ["ops", "torch.ops"])
def test_wrapper_overhead(benchmark, op, entry):
    benchmark.group = f"wrapper overhead: {op} on a tiny input"
    args = tiny_inputs()[op]
    wrapper = getattr(ops, op)
    direct = getattr(torch.ops.vtprune, op)
    if entry == "ops":
        fast, slow = paired_best(lambda: direct(*args), lambda: wrapper(*args), pairs=2000)
        benchmark.extra_info.update(paired_direct_s=fast, paired_wrapper_s=slow, overhead_s=slow - fast)
        benchmark(wrapper, *args)
    else:
        benchmark(direct, *args)
