"""The one-pass roofline of attention_scores on this CPU, measured in the same run as the kernel.

One pass of the op needs the GEMM q.k^T (2*B*H*M*N*D flops) and one exp per logit (B*H*M*N):
its roofline is the GEMM at this machine's sgemm rate plus the exps at its vector exp rate, both
measured with torch (MKL/oneDNN sgemm, ATen's vectorised exp) on the same threads:

- sgemm: the best of ``torch.mm(out=)`` on 1024 x 1024 x 1024 and on the op's own shape
  (512 query rows x D against D x N keys), output preallocated;
- exp: ``torch.exp(out=)`` on 64 Ki floats per thread in [-20, 0] (L2-resident).

``paired_rates`` times each of these probes alternately with the kernel (``timing.paired_best``),
so that on a shared machine the rates and the kernel see the same load.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Tuple

import torch
from timing import paired_best


class Rates(NamedTuple):
    gemm_flops_per_s: float
    exps_per_s: float


def _repeated(fn: Callable[[], object], times: int) -> Callable[[], None]:
    def run():
        for _ in range(times):
            fn()

    return run


def gemm_probes(N: int, D: int) -> List[Tuple[float, Callable[[], None]]]:
    """(flops, call) of each sgemm probe, each call tens of milliseconds long."""
    probes = []
    for m, k, n, times in ((1024, 1024, 1024, 4), (512, D, N, max(1, int(4e9 / (2 * 512 * D * N))))):
        a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        probes.append((2.0 * m * k * n * times, _repeated(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), times)))
    return probes


def exp_probe(threads: int) -> Tuple[float, Callable[[], None]]:
    """(exps, call) of the exp probe."""
    x = torch.rand(65536 * threads) * -20
    y = torch.empty_like(x)
    times = 1000 // threads
    return float(x.numel() * times), _repeated(lambda: torch.exp(x, out=y), times)


def paired_rates(kernel: Callable[[], object], N: int, D: int, threads: int, pairs: int = 3) -> Tuple[Rates, float]:
    """(Rates, fastest kernel time): every probe timed alternately with `kernel` on the current threads."""
    fastest = float("inf")
    gemm = 0.0
    for flops, probe in gemm_probes(N, D):
        kernel_s, probe_s = paired_best(kernel, probe, pairs)
        fastest, gemm = min(fastest, kernel_s), max(gemm, flops / probe_s)
    exps, probe = exp_probe(threads)
    kernel_s, probe_s = paired_best(kernel, probe, pairs)
    return Rates(gemm, exps / probe_s), min(fastest, kernel_s)


def attention_roofline_s(B: int, H: int, M: int, N: int, D: int, r: Rates) -> float:
    """Seconds of one pass at the given rates (non-causal: every row sees all N keys)."""
    return 2.0 * B * H * M * N * D / r.gemm_flops_per_s + 1.0 * B * H * M * N / r.exps_per_s

