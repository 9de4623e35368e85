"""The Triton attention_scores kernels at model shapes: two passes vs the model's lse reused.

GPU only (skipped without a CUDA device). Every call is followed by a synchronisation.

- ``internvit``: InternViT-300M, 13 tiles x 4 layers stacked in the batch (B=52), 16 heads,
  M=N=1025, d=64, bf16 (HIVTP's received attention: head mean, query mean; and a head max).
  Yardstick: the model's own flash attention forward over the same q/k (what computes the lse).
- ``cls``: the [CLS] row only (M=1) of the same tensors (VisPruner).
- ``ptp``: an LLM layer, 28 query heads over 4 kv heads, d=128, the last 64 rows (instruction)
  of 4096, causal, max over rows of the head mean (PTP).

``extra_info["exp_count"]`` is the number of exponentials of one call (both passes): the kernels
are designed to be bound by exp throughput (H100: ~3.9e12 exp/s), so exp_count / time is the
figure to compare with that bound.

Run: ``pytest benchmarks/bench_triton_attention.py --benchmark-only``
"""
import pytest
import torch

import vtprune_kernels  # noqa: F401
from vtprune_kernels import _library, _triton_backend

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and _library.HAS_TRITON), reason="needs a CUDA device and triton"
)

# name: (B, Hq, Hk, M, N, D, causal, query_reduce, head_reduce)
CASES = {
    "internvit": (52, 16, 16, 1025, 1025, 64, False, "mean", "mean"),
    "internvit-headmax": (52, 16, 16, 1025, 1025, 64, False, "mean", "max"),
    "cls": (52, 16, 16, 1, 1025, 64, False, "mean", "mean"),
    "ptp": (1, 28, 4, 64, 4096, 128, True, "max", "mean"),
}


def inputs(B, Hq, Hk, M, N, D, *, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, Hq, M, D, generator=g, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, Hk, N, D, generator=g, device="cuda", dtype=torch.bfloat16)
    return q, k


def flash_lse(q, k, causal):
    """The log-sum-exp the model's flash attention returns with its output (v = k: same cost)."""
    kk = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    return torch.ops.aten._scaled_dot_product_flash_attention(q, kk, kk, 0.0, causal)[1][..., : q.shape[2]]


def synced(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


@pytest.mark.parametrize("lse_source", ["two-passes", "model-lse", "flash-forward"])
@pytest.mark.parametrize("case", list(CASES))
def test_triton_attention_scores(benchmark, case, lse_source):
    B, Hq, Hk, M, N, D, causal, query_reduce, head_reduce = CASES[case]
    if lse_source == "flash-forward" and case == "ptp":
        pytest.skip("flash's causal mask is top-left aligned: not the instruction rows' mask")
    q, k = inputs(B, Hq, Hk, M, N, D)
    kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
    visible = M * N - (M * (M - 1) // 2 if causal else 0)
    benchmark.group = f"triton attention_scores {case} (bf16, B={B}, Hq={Hq}, M={M}, N={N}, d={D})"
    if lse_source == "two-passes":
        fn = lambda: _triton_backend.attention_scores(q, k, **kwargs)  # noqa: E731
        benchmark.extra_info["exp_count"] = 2 * B * Hq * visible
    elif lse_source == "model-lse":
        lse = flash_lse(q, k, causal)
        fn = lambda: _triton_backend.attention_scores(q, k, lse=lse, **kwargs)  # noqa: E731
        benchmark.extra_info["exp_count"] = B * Hq * visible
    else:  # the yardstick: one attention forward of the model over the same q/k
        fn = lambda: flash_lse(q, k, causal)  # noqa: E731
        benchmark.extra_info["exp_count"] = B * Hq * visible
    synced(fn)()  # compile and warm up
    benchmark(synced(fn))
