"""``vtprune bench``: time every op at the shapes real models give it, against a plain baseline.

A direct timing loop (no pytest needed, so it works from an installed wheel and on CUDA):
each case builds its inputs once (seeded), then times ``vtprune_kernels.ops.<op>`` with
``backend="auto"`` (the C++ CPU kernel, or the Triton / CUDA C++ kernel on CUDA) and a
baseline: for attention_scores the eager computation published code uses (softmax of the full
attention matrix in the input dtype), for the selection ops the plain PyTorch reference.
The repository's pytest-benchmark suites (``make bench``) cover more shapes and dtypes.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .. import ops, reference
from .measure import time_call


@dataclasses.dataclass(frozen=True)
class Case:
    """One timed situation: which op, where its shape comes from, and how to build its inputs."""

    op: str
    name: str
    shape: str
    build: Callable[[torch.device, torch.Generator], dict]
    run: Callable[..., object]
    baseline_name: str
    baseline: Callable[..., object]


def _randn(gen, *shape, device, dtype=torch.float32):
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def eager_attention_scores(q, k, *, query_reduce="mean", causal=False, head_groups=1):
    """What published code computes: the full softmax(q k^T) map, then reductions."""
    k = k.repeat_interleave(head_groups, dim=1) if head_groups > 1 else k
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        M, N = logits.shape[-2:]
        visible = torch.ones(M, N, dtype=torch.bool, device=q.device).tril(N - M)
        logits = logits.masked_fill(~visible, float("-inf"))
    p = logits.softmax(-1).float().mean(1)
    return p.amax(-2) if query_reduce == "max" else p.mean(-2)


def _attention_case(name, shape, B, H, M, N, D, *, Hk=None, query_reduce="mean", causal=False, dtype=torch.float32):
    Hk = Hk or H

    def build(device, gen):
        return dict(q=_randn(gen, B, H, M, D, device=device, dtype=dtype), k=_randn(gen, B, Hk, N, D, device=device, dtype=dtype))

    return Case(
        op="attention_scores",
        name=name,
        shape=shape,
        build=build,
        run=lambda q, k: ops.attention_scores(q, k, query_reduce=query_reduce, causal=causal),
        baseline_name="eager softmax(QK^T)",
        baseline=lambda q, k: eager_attention_scores(q, k, query_reduce=query_reduce, causal=causal, head_groups=H // Hk),
    )


def _selection_case(op: str, name: str, shape: str, build, *, validates: bool = True) -> Case:
    """A selection op timed through ``vtprune_kernels.ops`` (value checks off where the op has
    them: inputs are valid by construction) against its plain PyTorch reference."""
    extra = dict(validate=False) if validates else {}
    return Case(
        op, name, shape, build,
        run=lambda **a: getattr(ops, op)(**a, **extra),
        baseline_name="reference", baseline=lambda **a: getattr(reference, op)(**a),
    )


def _region_topk_case(name, shape, B, N, R, keep_per_region):
    def build(device, gen):
        scores = _randn(gen, B, N, device=device)
        region_ids = (torch.arange(N) * R // N).to(device)
        k = torch.full((B, R), keep_per_region, dtype=torch.int64, device=device)
        return dict(scores=scores, region_ids=region_ids, k=k)

    return _selection_case("region_topk_mask", name, shape, build)


def _window_case(name, shape, B, H, W, window):
    def build(device, gen):
        scores = _randn(gen, B, H, W, device=device)
        exclude = torch.rand(B, H, W, generator=gen).lt(0.25).to(device)
        return dict(scores=scores, exclude=exclude, window=window)

    return _selection_case("window_argmax_mask", name, shape, build, validates=False)


def _dedup_case(name, shape, B, N, C, n_candidates, n_keep):
    def build(device, gen):
        x = _randn(gen, B, N, C, device=device)
        candidates = torch.zeros(B, N, dtype=torch.bool)
        for b in range(B):
            candidates[b, torch.randperm(N, generator=gen)[:n_candidates]] = True
        return dict(
            x=x,
            candidates=candidates.to(device),
            order_scores=_randn(gen, B, N, device=device),
            n_keep=torch.full((B,), n_keep, dtype=torch.int64, device=device),
        )

    return _selection_case("cosine_dedup_mask", name, shape, build)


def _budget_case(name, shape, B, S, capacity, total):
    def build(device, gen):
        return dict(
            weights=torch.rand(B, S, generator=gen).to(device),
            total=torch.full((B,), total, dtype=torch.int64, device=device),
            capacity=torch.full((B, S), capacity, dtype=torch.int64, device=device),
        )

    return _selection_case("allocate_budget", name, shape, build)


def cases() -> List[Case]:
    """The benchmarked situations, from the published methods on LLaVA-1.5 / NeXT / InternVL."""
    return [
        _attention_case("VisPruner [CLS] row, LLaVA-1.5 batch 2", "q[2,16,1,64] k[2,16,577,64]", 2, 16, 1, 577, 64),
        _attention_case("HIVTP all rows, LLaVA-1.5 batch 2", "q,k[2,16,577,64]", 2, 16, 577, 577, 64),
        _attention_case("VisPruner [CLS], LLaVA-NeXT 5 tiles", "q[5,16,1,64] k[5,16,577,64]", 5, 16, 1, 577, 64),
        _attention_case(
            "PTP instruction rows, causal GQA", "q[1,28,32,128] k[1,4,3360,128]", 1, 28, 32, 3360, 128,
            Hk=4, query_reduce="max", causal=True,
        ),
        _region_topk_case("VisPruner important, keep 72 of 576", "[2,576] R=1", 2, 576, 1, 72),
        _region_topk_case("PTP 13 tiles x 256", "[1,3328] R=13", 1, 3328, 13, 128),
        _window_case("HIVTP 2x2 windows, 24x24 grid", "[2,24,24] w=2", 2, 24, 24, (2, 2)),
        _dedup_case("VisPruner diverse, CLIP-L features", "x[2,576,1024] 504 cand -> 72", 2, 576, 1024, 504, 72),
        _budget_case("PTP budgets, 13 regions", "[1,13] cap 256", 1, 13, 256, 1664),
    ]


def run(
    device="cpu",
    *,
    only_ops: Optional[Sequence[str]] = None,
    min_time: float = 0.2,
    max_repeats: int = 100,
    progress: bool = True,
) -> List[Dict[str, object]]:
    """Time every case (or those of ``only_ops``) on ``device``; one dict per case."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("vtprune bench --device cuda: no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device}")
    selected = [c for c in cases() if only_ops is None or c.op in only_ops]
    from tqdm.auto import tqdm

    rows = []
    for case in tqdm(selected, desc="bench", disable=not progress):
        args = case.build(device, torch.Generator().manual_seed(0))
        ours = time_call(lambda: case.run(**args), device, min_time=min_time, max_repeats=max_repeats)
        base = time_call(lambda: case.baseline(**args), device, min_time=min_time, max_repeats=max_repeats)
        rows.append(
            dict(op=case.op, case=case.name, shape=case.shape, device=str(device), vtprune_s=ours,
                 baseline=case.baseline_name, baseline_s=base, speedup=base / ours if ours > 0 else float("inf"))
        )
    return rows


def environment(device) -> Dict[str, object]:
    """What the timings depend on: torch version, threads, device name."""
    device = torch.device(device)
    info = dict(torch=torch.__version__, threads=torch.get_num_threads(), device=str(device))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
