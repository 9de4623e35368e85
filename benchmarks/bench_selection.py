"""The selection ops against what the published methods do with plain torch.

- region_topk_mask vs a loop of torch.topk per (row, region) (PTP tiles, HIVTP regions);
- cosine_dedup_mask vs VisPruner's per-round loop (gather, normalise, GEMM, max, sort, concat),
  on 5 LLaVA-NeXT tiles x 576 tokens x 1024 channels keeping 16 diverse of the 560 unimportant;
- window_argmax_mask vs unfold + argmax (HIVTP's 2x2 windows on the 24x24 grid);
- allocate_budget vs the Python reference (PTP's region budgets).
CUDA cases skip without a GPU.

Run: ``pytest benchmarks/bench_selection.py --benchmark-only``
"""
import pytest
import torch
from baselines import published_dedup_loop, ranked_residual, topk_per_segment, window_unfold_argmax
from timing import synced

import vtprune_kernels  # noqa: F401
from vtprune_kernels import _library, ops

HAS_CUDA = torch.cuda.is_available()


def device_or_skip(impl):
    if impl.endswith("cuda"):
        if not HAS_CUDA:
            pytest.skip("needs a CUDA device")
        if impl.startswith("vtprune") and not _library.HAS_CUDA_KERNELS:
            pytest.skip("vtprune_kernels built without CUDA kernels")
        return "cuda"
    return "cpu"


def timed(benchmark, device, fn, *args):
    benchmark(synced(fn, *args)) if device == "cuda" else benchmark(fn, *args)


# ---------------------------------------------------------------- region_topk_mask

REGION_CASES = {
    # PTP on LLaVA-NeXT: 5 regions (4 tiles + thumbnail) of 576 tokens, keep half, batch 8
    "ptp-5x576": (8, 5, 576, 288),
    # HIVTP: 2x2 regions of the 24x24 grid, keep 25%, batch 8
    "hivtp-4x144": (8, 4, 144, 36),
}


def region_inputs(case, device):
    B, R, size, keep = REGION_CASES[case]
    scores = torch.rand(B, R * size, generator=torch.Generator().manual_seed(0)).to(device)
    region_ids = torch.arange(R * size, device=device) // size
    return scores, region_ids, torch.full((B, R), keep, dtype=torch.int64, device=device)


@pytest.mark.parametrize("case", sorted(REGION_CASES))
@pytest.mark.parametrize("impl", ["vtprune-cpu", "topk-loop-cpu", "vtprune-cuda", "topk-loop-cuda"])
def test_region_topk_mask(benchmark, impl, case):
    device = device_or_skip(impl)
    benchmark.group = f"region_topk_mask {case}"
    fn = topk_per_segment if impl.startswith("topk-loop") else torch.ops.vtprune.region_topk_mask
    timed(benchmark, device, fn, *region_inputs(case, device))


# ---------------------------------------------------------------- cosine_dedup_mask

DEDUP_SHAPE = (5, 576, 1024, 16, 16)  # tiles, tokens, channels, important tokens, diverse tokens kept


def dedup_inputs(device):
    B, N, C, n_imp, n_div = DEDUP_SHAPE
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, N, C, generator=g).to(device)
    scores = torch.rand(B, N, generator=g).to(device)
    ranked = scores.argsort(dim=1, descending=True, stable=True)
    candidates = torch.ones(B, N, dtype=torch.bool, device=device).scatter(1, ranked[:, :n_imp], False)
    n_keep = torch.full((B,), n_div, dtype=torch.int64, device=device)
    return x, candidates, scores, n_keep, ranked_residual(candidates, scores)


@pytest.mark.parametrize("impl", ["vtprune-cpu", "published-loop-cpu", "vtprune-cuda", "published-loop-cuda"])
def test_cosine_dedup_mask(benchmark, impl):
    device = device_or_skip(impl)
    benchmark.group = "cosine_dedup_mask 5 tiles x 576 x 1024, keep 16 of 560"
    x, candidates, scores, n_keep, residual = dedup_inputs(device)
    if impl.startswith("vtprune"):
        timed(benchmark, device, torch.ops.vtprune.cosine_dedup_mask, x, candidates, scores, n_keep, 8)
    else:
        timed(benchmark, device, published_dedup_loop, x, residual, DEDUP_SHAPE[4])


# ---------------------------------------------------------------- window_argmax_mask

WINDOW_SHAPE = (8, 24, 24, 2)  # batch, grid, grid, window


@pytest.mark.parametrize("impl", ["vtprune-cpu", "unfold-argmax-cpu", "vtprune-cuda", "unfold-argmax-cuda"])
def test_window_argmax_mask(benchmark, impl):
    device = device_or_skip(impl)
    B, H, W, w = WINDOW_SHAPE
    benchmark.group = f"window_argmax_mask {B}x{H}x{W}, {w}x{w} windows"
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(B, H, W, generator=g).to(device)
    exclude = (torch.rand(B, H, W, generator=g) < 0.25).to(device)
    if impl.startswith("vtprune"):
        timed(benchmark, device, torch.ops.vtprune.window_argmax_mask, scores, exclude, [w, w])
    else:
        timed(benchmark, device, window_unfold_argmax, scores, exclude, (w, w))


# ---------------------------------------------------------------- allocate_budget


@pytest.mark.parametrize("impl", ["vtprune-cpu", "reference-cpu", "vtprune-cuda"])
def test_allocate_budget(benchmark, impl):
    device = device_or_skip(impl)
    benchmark.group = "allocate_budget 64 images x 5 regions"
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(64, 5, generator=g).softmax(-1).to(device)
    capacity = torch.full((64, 5), 576, dtype=torch.int64, device=device)
    total = torch.full((64,), 1440, dtype=torch.int64, device=device)
    backend = "reference" if impl.startswith("reference") else ("cuda" if device == "cuda" else "cpu")
    timed(benchmark, device, lambda: ops.allocate_budget(weights, total, capacity, backend=backend, validate=False))
