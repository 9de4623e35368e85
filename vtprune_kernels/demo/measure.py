"""Timing and peak-memory measurement for the demo and the benchmarks.

Peak memory is the allocator's view on both devices, so CPU and CUDA figures mean the same:
the most tensor bytes alive at once during a call, minus the bytes alive when it started.
CUDA reads the caching allocator's statistics; the CPU reads the allocation/free events that
the PyTorch profiler records (every CPU tensor allocation, kernels' workspaces included). The
profiler sees only the calling thread's allocations, so the CPU call runs on one intra-op
thread: a kernel's per-thread workspace is counted once.
Timing and memory are separate calls: the profiler slows the code it watches.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from typing import Callable, List, Tuple

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object], device="cpu", *, warmup: int = 1, repeats: int = 3, min_time: float = 0.0,
    max_repeats: int = 100,
) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` calls: at least ``repeats`` timed
    calls, more until they add up to ``min_time`` seconds (at most ``max_repeats``)."""
    if repeats < 1:
        raise ValueError(f"time_call: repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: List[float] = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_fastest(
    first: Callable[[], object], second: Callable[[], object], device="cpu", *, repeats: int = 3
) -> Tuple[float, float]:
    """(fastest ``first()``, fastest ``second()``) in seconds over ``repeats`` alternating runs
    (first, second, first, ...) after one warm-up call of each. Alternating gives both the same
    machine load, and the minimum is the run least disturbed by it: their ratio is the stable one
    on a shared machine (separate medians of the two can differ by more than the effect)."""
    if repeats < 1:
        raise ValueError(f"paired_fastest: repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    best = [float("inf"), float("inf")]
    for fn in (first, second):
        fn()
    for _ in range(repeats):
        for i, fn in enumerate((first, second)):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


@contextlib.contextmanager
def _stderr_silenced():
    """Discard everything written to file descriptor 2 (native and Python) inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_profile(device="cpu", *, profile_memory: bool = False):
    """``torch.profiler.profile`` of the CPU (and CUDA on a CUDA device) with stderr silenced.

    The profiler logs to file descriptor 2 at every start and stop whatever its log level, and
    warns when a block allocated before it started is freed. Callers profile a repeat of a call
    they already ran unprofiled (messages visible), so nothing new is hidden."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with _stderr_silenced(), profile(activities=activities, profile_memory=profile_memory) as prof:
        yield prof


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    # The profiler records allocations of the calling thread only, not those of the intra-op
    # worker threads: run the call on one intra-op thread so every allocation is seen.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with quiet_profile("cpu", profile_memory=True) as prof:
            fn()
    finally:
        torch.set_num_threads(threads)
    events = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if events is None:
        raise RuntimeError("peak_memory: this torch profiler exposes no allocation events (kineto_results)")
    deltas = sorted((e.start_ns(), e.nbytes()) for e in events.events() if e.name() == "[memory]" and e.device_type().name == "CPU")
    live = peak = 0
    for _, nbytes in deltas:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_memory(fn: Callable[[], object], device="cpu") -> int:
    """Peak extra tensor memory of one call of ``fn()`` in bytes (allocator view, see module doc)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type == "cpu":
        return _cpu_peak_bytes(fn)
    raise ValueError(f"peak_memory: device must be cpu or cuda, got {device}")
