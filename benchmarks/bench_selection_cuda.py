"""GPU benchmarks of the CUDA C++ selection kernels against what a user would otherwise run.

GPU only (skipped without a CUDA device). Each group times the CUDA op (``validate=False``: the hot
path) next to its baselines, synchronising after every call:

- region_topk_mask: a torch.topk per segment (a Python loop over the regions, as the published
  code does), the best vectorised torch form when all regions are equal contiguous blocks (one
  batched topk of the largest k, then a rank mask), and the C++ CPU kernel.
- window_argmax_mask: the vectorised torch form (masked fill, window view, max) and the CPU kernel.
- cosine_dedup_mask: VisPruner's published loop on the GPU, batched over the images (per round:
  gather A and B, normalise, one GEMM, amax, sort), the Gram matrix once + vectorised rounds (float32),
  and the CPU kernel.
- allocate_budget: vectorised torch water-filling on the GPU and the CPU kernel.
(baselines.py holds the shared baselines.)
The CPU kernel is timed as a caller with GPU tensors would use it: copy in, run, copy back.

Run: ``pytest benchmarks/bench_selection_cuda.py --benchmark-only``.
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
from timing import synced

import vtprune_kernels  # noqa: F401
from vtprune_kernels import _library, ops
from vtprune_kernels.demo.measure import peak_memory

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and _library.HAS_CUDA_KERNELS), reason="needs a CUDA device and the CUDA kernels"
)


def via_cpu(op, *args, **kwargs):
    """The CPU path from GPU tensors: copy in, run the C++ CPU kernel, copy the result back."""
    return op(*(a.cpu() if isinstance(a, torch.Tensor) else a for a in args), backend="cpu", **kwargs).cuda()


# ---------------------------------------------------------------- region_topk_mask
# (B rows, R equal contiguous regions of S tokens): PTP's 9 tiles of 256, HIVTP's 4 regions of 144,
# VisPruner's one region of 576, and many 16-token regions.
REGION_SHAPES = {"ptp_9x256": (8, 9, 256), "hivtp_4x144": (16, 4, 144), "vispruner_1x576": (16, 1, 576),
                 "many_256x16": (8, 256, 16)}


def region_case(B, R, S, device="cuda"):
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(B, R * S, generator=g)
    ids = torch.arange(R).repeat_interleave(S)
    k = torch.randint(0, S + 1, (B, R), generator=g)
    return scores.to(device), ids.to(device), k.to(device)


@pytest.mark.parametrize("shape", list(REGION_SHAPES))
@pytest.mark.parametrize("impl", ["cuda", "torch_topk_per_segment", "torch_topk_equal_blocks", "cpu"])
def test_region_topk_mask(benchmark, shape, impl):
    B, R, S = REGION_SHAPES[shape]
    benchmark.group = f"region_topk_mask {shape}"
    scores, ids, k = region_case(B, R, S)
    if impl == "cuda":
        fn = synced(ops.region_topk_mask, scores, ids, k, backend="cuda", validate=False)
    elif impl == "torch_topk_per_segment":
        if R * B > 64:
            pytest.skip("per-segment Python loop: too many segments to time")
        fn = synced(topk_per_segment, scores, ids, k)
    elif impl == "torch_topk_equal_blocks":
        fn = synced(topk_equal_blocks_vectorised, scores, k, S)
    else:
        fn = synced(via_cpu, ops.region_topk_mask, scores, ids, k, validate=False)
    benchmark(fn)


# ---------------------------------------------------------------- window_argmax_mask

@pytest.mark.parametrize("grid", [24, 48])
@pytest.mark.parametrize("impl", ["cuda", "torch_vectorised", "cpu"])
def test_window_argmax_mask(benchmark, grid, impl):
    benchmark.group = f"window_argmax_mask 16x{grid}x{grid} 2x2"
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(16, grid, grid, generator=g).cuda()
    exclude = (torch.rand(16, grid, grid, generator=g) < 0.25).cuda()
    if impl == "cuda":
        fn = synced(ops.window_argmax_mask, scores, exclude, (2, 2), backend="cuda")
    elif impl == "torch_vectorised":
        fn = synced(window_argmax_vectorised, scores, exclude, (2, 2))
    else:
        fn = synced(via_cpu, ops.window_argmax_mask, scores, exclude, (2, 2))
    benchmark(fn)


# ---------------------------------------------------------------- cosine_dedup_mask
# (images, tokens, channels, candidates removed as important, n_keep): a LLaVA-NeXT image as 5 tiles
# of 576 with T=64 per tile (32 important + 32 diverse), one long 2880-token image at C=4096, and a
# batch of 8 such images (the binding sorts them one Gram matrix per chunk: see its peak memory).
DEDUP_SHAPES = {
    "llava_next_5x576_c1024": (5, 576, 1024, 32, 32),
    "long_1x2880_c4096": (1, 2880, 4096, 64, 64),
    "batch_8x3000_c1024": (8, 3000, 1024, 64, 64),
}


def dedup_case(B, N, C, n_important, n_keep):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, N, C, generator=g).half().cuda()
    order_scores = torch.rand(B, N, generator=g).cuda()
    candidates = torch.ones(B, N, dtype=torch.bool, device="cuda")
    candidates.scatter_(1, order_scores.topk(n_important).indices, False)
    return x, candidates, order_scores, torch.full((B,), n_keep, device="cuda")


@pytest.mark.parametrize("shape", list(DEDUP_SHAPES))
@pytest.mark.parametrize("impl", ["cuda", "gram_once_gpu", "published_loop_gpu", "cpu"])
def test_cosine_dedup_mask(benchmark, shape, impl):
    benchmark.group = f"cosine_dedup_mask {shape}"
    x, candidates, order_scores, n_keep = dedup_case(*DEDUP_SHAPES[shape])
    if impl == "cuda":
        fn = synced(ops.cosine_dedup_mask, x, candidates, order_scores, n_keep, backend="cuda", validate=False)
        benchmark.extra_info["peak_extra_memory_mib"] = peak_memory(fn, "cuda") / 2**20
    elif impl == "cpu" and DEDUP_SHAPES[shape][0] * DEDUP_SHAPES[shape][1] > 10_000:
        pytest.skip("CPU kernel on a batch of long images: too slow to time")
    elif impl == "published_loop_gpu":
        fn = synced(published_dedup_loop, x, ranked_residual(candidates, order_scores), int(n_keep[0]))
    elif impl == "gram_once_gpu":
        fn = synced(dedup_gram_once, x.float(), ranked_residual(candidates, order_scores), int(n_keep[0]))
    else:
        fn = synced(via_cpu, ops.cosine_dedup_mask, x, candidates, order_scores, n_keep, validate=False)
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)


# ---------------------------------------------------------------- allocate_budget

@pytest.mark.parametrize("impl", ["cuda", "torch_water_filling", "cpu"])
def test_allocate_budget(benchmark, impl):
    benchmark.group = "allocate_budget 64x13"
    g = torch.Generator().manual_seed(3)
    weights = torch.rand(64, 13, generator=g).cuda()
    capacity = torch.full((64, 13), 256, device="cuda")
    total = torch.full((64,), 1152, device="cuda")
    if impl == "cuda":
        fn = synced(ops.allocate_budget, weights, total, capacity, backend="cuda", validate=False)
    elif impl == "torch_water_filling":
        fn = synced(budget_water_filling_vectorised, weights, total, capacity)
    else:
        fn = synced(via_cpu, ops.allocate_budget, weights, total, capacity, validate=False)
    benchmark(fn)
