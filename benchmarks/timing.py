"""Timing helpers of the benchmark suites.

``synced(fn, *args)``: a call that waits for its CUDA work, for pytest-benchmark on a GPU.

``paired_best(first, second)``: paired timing for ratios on a shared machine. pytest-benchmark
runs all rounds of one benchmark before the next, so when other processes load the machine for a
while, two benchmarks meant to be compared can see different loads. Here two calls alternate (a, b, a, b, ...) and the fastest run of each is kept: both see the same load
and the ratio of the two minima is the least disturbed estimate.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

from vtprune_kernels.demo.measure import paired_fastest


def paired_best(first: Callable[[], object], second: Callable[[], object], pairs: int = 3) -> Tuple[float, float]:
    """(fastest first(), fastest second()) in seconds over ``pairs`` alternating runs after one
    warm-up run of each (CUDA work is synchronised inside every timed run): the demo's
    ``paired_fastest``, on the GPU when there is one."""
    return paired_fastest(first, second, "cuda" if torch.cuda.is_available() else "cpu", repeats=pairs)


def synced(fn: Callable[..., object], *args, **kwargs) -> Callable[[], object]:
    """``fn(*args, **kwargs)`` as a no-argument call that returns after its CUDA work has run."""

    def run():
        out = fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out

    return run
