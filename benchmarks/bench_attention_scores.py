"""attention_scores: the vtprune kernels against eager softmax-then-reduce and the reference.

Received attention (head mean, query mean), fp32, at two shapes:
- ``llava-next``: B=5 tiles, H=16, M=N=577, D=64 (a LLaVA-NeXT 672x672 image through CLIP-L/14-336);
- ``n4096``: B=1, H=16, M=N=4096, D=64 (a long sequence: the eager [M, N] maps take 1 GiB each).
``benchmark.extra_info["peak_extra_mib"]`` holds the peak extra memory of one call: on the CPU
resident pages in a fresh process (peak_memory.py), on CUDA the allocator's peak
(``vtprune_kernels.demo.measure.peak_memory``).
GPU cases (Triton kernel, eager on CUDA) skip without a GPU.

Run: ``pytest benchmarks/bench_attention_scores.py --benchmark-only``
"""
import pytest
import torch

import vtprune_kernels  # noqa: F401
from peak_memory import cpu_peak_extra_bytes
from timing import synced

from vtprune_kernels import _library, ops
from vtprune_kernels.demo.measure import peak_memory
from vtprune_kernels.demo.op_bench import eager_attention_scores

SHAPES = {"llava-next": (5, 16, 577, 577, 64), "n4096": (1, 16, 4096, 4096, 64)}
HAS_CUDA = torch.cuda.is_available()


IMPLS = {
    "vtprune-cpu": ("cpu", lambda q, k: ops.attention_scores(q, k, backend="cpu")),
    "eager-cpu": ("cpu", eager_attention_scores),
    "reference-cpu": ("cpu", lambda q, k: ops.attention_scores(q, k, backend="reference")),
    "vtprune-triton": ("cuda", lambda q, k: ops.attention_scores(q, k, backend="triton")),
    "eager-cuda": ("cuda", eager_attention_scores),
}


def inputs(shape_name, device="cpu", *, seed=0):
    B, H, M, N, D = SHAPES[shape_name]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, M, D, generator=g)
    k = torch.randn(B, H, N, D, generator=g)
    return q.to(device), k.to(device)


def memory_case(impl, shape_name):
    """(call, warm_up) for peak_memory.cpu_peak_extra_bytes."""
    _, fn = IMPLS[impl]
    q, k = inputs(shape_name)
    q_small, k_small = q[:1, :2, :8], k[:1, :2, :8]
    return (lambda: fn(q, k)), (lambda: fn(q_small, k_small))


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("impl", list(IMPLS))
def test_attention_scores(benchmark, impl, shape_name):
    device, fn = IMPLS[impl]
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("needs a CUDA device")
    if impl == "vtprune-triton" and not _library.HAS_TRITON:
        pytest.skip("needs triton")
    if impl == "reference-cpu" and shape_name == "n4096":
        pytest.skip("the float64 reference needs ~6 GiB at N=4096")
    q, k = inputs(shape_name, device)
    benchmark.group = f"attention_scores {shape_name} (fp32, head mean, query mean)"
    if device == "cuda":
        benchmark.extra_info["peak_extra_mib"] = peak_memory(lambda: fn(q, k), "cuda") / 2**20
        benchmark(synced(fn, q, k))
    else:
        benchmark.extra_info["peak_extra_mib"] = cpu_peak_extra_bytes(
            "bench_attention_scores", "memory_case", impl, shape_name) / 2**20
        slow = impl == "reference-cpu" or (impl == "eager-cpu" and shape_name == "n4096")
        benchmark.pedantic(fn, args=(q, k), rounds=3 if slow else 10, warmup_rounds=1)
