"""attention_scores: the vtprune kernels against the strongest plain-torch formulations and the
one-pass roofline, on 1 and 2 CPU threads.

Received attention (head mean, query mean), fp32, at three shapes:
- ``llava-next``: B=5 tiles, H=16, M=N=577, D=64 (a LLaVA-NeXT 672x672 image through CLIP-L/14-336);
- ``n4096``: B=1, H=16, M=N=4096, D=64 (a long sequence: the eager [M, N] maps take 1 GiB each);
- ``cls``: the [CLS] row only, M=1 (VisPruner's score on the same 5 tiles).

CPU contenders: ``vtprune-<capability>`` (the C++ kernel on each instruction set this CPU runs:
default, avx2, avx512, up to VTPRUNE_CPU_CAPABILITY), ``blocked`` (the strongest plain-torch
formulation: ``baselines.blocked_attention_scores``), ``eager`` (softmax of the full map, what
published code does) and ``reference`` (float64; llava-next, 1 thread). Each vtprune row also
records, timed paired in the same process (``timing.paired_best``: the two calls alternate, the
fastest of each is kept), its time against ``blocked`` and ``eager``, and against the roofline
(``cpu_roofline.py``: sgemm + vector exp rates of torch on the same threads, their probes also
timed paired with the kernel), with the CPU model and the capability in ``extra_info``; the run
ends with a table of them (also printed by ``plot_results.py`` from the JSON). GPU cases (Triton
kernel, eager on CUDA) skip without a GPU.

``test_cls_row_read_bound`` times the [CLS] row's floor, one read of K, paired with the kernel and
with eager.

Run: ``pytest benchmarks/bench_attention_scores.py --benchmark-only`` (the kernel's rows only, one
thread: ``-k "vtprune and not -2]"``; the README's "CPU attention figures" give both commands)
An AVX2-only machine, emulated on an AVX-512 one (torch's MKL/oneDNN/ATen kernels and ours all on
AVX2): ``MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
VTPRUNE_CPU_CAPABILITY=avx2 pytest benchmarks/bench_attention_scores.py --benchmark-only``
"""
import contextlib

import pytest
import torch
from baselines import blocked_attention_scores
from cpu_roofline import attention_roofline_s, paired_rates
from machine import cpu_model
from peak_memory import cpu_peak_extra_bytes
from plot_results import attention_table_lines
from timing import paired_best, synced

import vtprune_kernels  # noqa: F401
from vtprune_kernels import _library, ops
from vtprune_kernels.cpu_capability import cpu_capability, supported_cpu_capabilities, use_cpu_capability
from vtprune_kernels.demo.measure import peak_memory
from vtprune_kernels.demo.op_bench import eager_attention_scores

SHAPES = {"llava-next": (5, 16, 577, 577, 64), "n4096": (1, 16, 4096, 4096, 64), "cls": (5, 16, 1, 577, 64)}
THREADS = (1, 2)
HAS_CUDA = torch.cuda.is_available()
_SUPPORTED = supported_cpu_capabilities()
# every capability up to the one in use (VTPRUNE_CPU_CAPABILITY caps it)
CAPABILITIES = _SUPPORTED[: _SUPPORTED.index(cpu_capability()) + 1]
SLOW = {"n4096"}  # fewer rounds and pairs

CPU_IMPLS = {
    **{f"vtprune-{c}": (lambda q, k: ops.attention_scores(q, k, backend="cpu")) for c in CAPABILITIES},
    "blocked": blocked_attention_scores,
    "eager": eager_attention_scores,
    "reference": lambda q, k: ops.attention_scores(q, k, backend="reference"),
}
CUDA_IMPLS = {
    "vtprune-triton": lambda q, k: ops.attention_scores(q, k, backend="triton"),
    "eager-cuda": eager_attention_scores,
}
SUMMARY = []  # rows of the table printed at the end


def inputs(shape_name, device="cpu", *, seed=0):
    B, H, M, N, D = SHAPES[shape_name]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, M, D, generator=g)
    k = torch.randn(B, H, N, D, generator=g)
    return q.to(device), k.to(device)


def capability_of(impl):
    return impl.split("-", 1)[1] if impl.startswith("vtprune-") else None


@contextlib.contextmanager
def running(impl, threads):
    """The impl's CPU capability (vtprune rows) and `threads` intra-op threads inside the block."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with use_cpu_capability(capability_of(impl) or cpu_capability()):
            yield
    finally:
        torch.set_num_threads(saved)


def memory_case(impl, shape_name):
    """(call, warm_up) for peak_memory.cpu_peak_extra_bytes (in a fresh process)."""
    fn = CPU_IMPLS[impl]
    q, k = inputs(shape_name)
    q_small, k_small = q[:1, :2, :8], k[:1, :2, :8]
    return (lambda: fn(q, k)), (lambda: fn(q_small, k_small))


def record_comparisons(benchmark, impl, shape_name, threads, fn, q, k):
    """Paired times against blocked and eager, and the paired roofline, into extra_info and SUMMARY."""
    B, H, M, N, D = SHAPES[shape_name]
    pairs = 3 if shape_name in SLOW else (30 if M == 1 else 5)
    kernel = lambda: fn(q, k)  # noqa: E731
    kernel_blocked, blocked_s = paired_best(kernel, lambda: blocked_attention_scores(q, k), pairs=pairs)
    kernel_eager, eager_s = paired_best(kernel, lambda: eager_attention_scores(q, k), pairs=pairs)
    r, kernel_roofline = paired_rates(kernel, N, D, threads, pairs=3)
    roofline_s = attention_roofline_s(B, H, M, N, D, r)
    info = dict(
        shape=shape_name, query_rows=M, cpu_model=cpu_model(), cpu_capability=capability_of(impl), threads=threads,
        vtprune_s=min(kernel_blocked, kernel_eager, kernel_roofline),
        paired_vtprune_vs_blocked_s=kernel_blocked, paired_blocked_s=blocked_s,
        paired_vtprune_vs_eager_s=kernel_eager, paired_eager_s=eager_s,
        roofline_s=roofline_s, sgemm_gflops=r.gemm_flops_per_s / 1e9, exp_gps=r.exps_per_s / 1e9,
        paired_vtprune_vs_roofline_s=kernel_roofline, x_roofline=kernel_roofline / roofline_s,
    )
    benchmark.extra_info.update(info)
    SUMMARY.append(info)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("impl", list(CPU_IMPLS))
def test_attention_scores_cpu(benchmark, impl, shape_name, threads):
    if impl == "reference" and (shape_name != "llava-next" or threads != 1):
        pytest.skip("the float64 reference runs once, at llava-next on 1 thread (~6 GiB at N=4096)")
    fn = CPU_IMPLS[impl]
    q, k = inputs(shape_name)
    benchmark.group = f"attention_scores {shape_name} (fp32, head mean, query mean), {threads} thread(s)"
    with running(impl, threads):
        benchmark.extra_info["cpu_model"] = cpu_model()
        benchmark.extra_info["threads"] = threads
        if threads == 1 and impl in (f"vtprune-{cpu_capability()}", "eager"):
            benchmark.extra_info["peak_extra_mib"] = cpu_peak_extra_bytes(
                "bench_attention_scores", "memory_case", impl, shape_name) / 2**20
        slow = impl == "reference" or shape_name in SLOW
        benchmark.pedantic(fn, args=(q, k), rounds=3 if slow else 10, warmup_rounds=1)
        if impl.startswith("vtprune-"):
            record_comparisons(benchmark, impl, shape_name, threads, fn, q, k)


@pytest.mark.parametrize("threads", THREADS)
def test_cls_row_read_bound(benchmark, threads):
    """The [CLS] row's floor: one read of K (``k.sum()``), timed paired with the kernel and with
    eager; eager / read is the most any kernel that reads K once could gain over eager."""
    q, k = inputs("cls")
    benchmark.group = f"attention_scores cls: the read of K (k.sum()), {threads} thread(s)"
    read = lambda: k.sum()  # noqa: E731
    with running(f"vtprune-{cpu_capability()}", threads):
        kernel_s, read_with_kernel_s = paired_best(lambda: ops.attention_scores(q, k, backend="cpu"), read, pairs=50)
        eager_s, read_with_eager_s = paired_best(lambda: eager_attention_scores(q, k), read, pairs=50)
        read_s = min(read_with_kernel_s, read_with_eager_s)
        benchmark.extra_info.update(
            cpu_model=cpu_model(), cpu_capability=cpu_capability(), threads=threads, paired_vtprune_s=kernel_s,
            paired_eager_s=eager_s, read_s=read_s, vtprune_over_read=kernel_s / read_s, eager_over_read=eager_s / read_s,
        )
        benchmark.pedantic(read, rounds=20, warmup_rounds=1)


@pytest.mark.parametrize("shape_name", ["llava-next", "n4096"])
@pytest.mark.parametrize("impl", list(CUDA_IMPLS))
def test_attention_scores_cuda(benchmark, impl, shape_name):
    if not HAS_CUDA:
        pytest.skip("needs a CUDA device")
    if impl == "vtprune-triton" and not _library.HAS_TRITON:
        pytest.skip("needs triton")
    fn = CUDA_IMPLS[impl]
    q, k = inputs(shape_name, "cuda")
    benchmark.group = f"attention_scores {shape_name} (fp32, head mean, query mean), cuda"
    benchmark.extra_info["peak_extra_mib"] = peak_memory(lambda: fn(q, k), "cuda") / 2**20
    benchmark(synced(fn, q, k))


@pytest.fixture(scope="module", autouse=True)
def _add_summary(bench_summary):
    yield
    if SUMMARY:
        bench_summary.extend([""] + attention_table_lines(SUMMARY))
