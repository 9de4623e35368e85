"""Qwen2.5-VL shapes: a 1024 x 1024 image is 74 x 74 = 5476 patches, 37 x 37 = 1369 merged tokens.

Ops at the released Qwen2.5-VL-7B tower's sizes (random inputs):
- ``attention_scores`` of one full-attention block: B=1, H=16, M=N=5476, D=80, received attention
  (head mean, row mean), the vtprune kernel against eager softmax-then-reduce (the dense map is
  16 x 5476 x 5476 floats, 1.8 GiB);
- ``cosine_dedup_mask`` of VisPruner keeping 25% (342) of the 1369 merged tokens: 171 diverse
  among the 1198 unimportant, on the merger's inputs (4 x 1280 = 5120 channels), against the
  published per-round loop.

End to end on ``qwen_vl_models.qwen2_5_vl_model()`` (Qwen2.5-VL's tower structure at reduced width,
the 12-layer hidden-1024 language model of the LLaVA benchmarks), one 1024 x 1024 image:
- prefill unpruned and with VisPruner keeping 25% (342 of 1369), also timed paired;
- the image stage (``prepare_inputs``) with VisPruner and with Uniform at the same budget: both run
  the whole tower, merge the kept tokens and rebuild the prompt and its M-RoPE positions; only
  VisPruner captures the full-attention block's scores and selects (``extra_info``: scoring time
  inside ``vtprune::attention_scores``, selection time, a paired timing of the two).

Run: ``HF_HUB_OFFLINE=1 pytest benchmarks/bench_qwen_vl.py --benchmark-only``
"""
import pytest
import torch
from baselines import published_dedup_loop, ranked_residual
from pruning_benchmarks import bench_image_stage, bench_prefill
from qwen_vl_models import image_inputs, qwen2_5_vl_model
from timing import synced

from vtprune_kernels import _library, ops
from vtprune_kernels.demo.op_bench import eager_attention_scores

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROUNDS = dict(rounds=2, warmup_rounds=1, iterations=1)
MERGED = 1369
KEEP = 342  # 25 %
FULL_ATTENTION = (1, 16, 5476, 80)  # B, H, N, D of a Qwen2.5-VL-7B full-attention block on 1024 x 1024


def _device(impl):
    if impl.endswith("cuda") or impl.endswith("triton"):
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
        if impl.endswith("triton") and not _library.HAS_TRITON:
            pytest.skip("needs triton")
        return "cuda"
    return "cpu"


@pytest.mark.parametrize("impl", ["vtprune-cpu", "eager-cpu", "vtprune-triton", "eager-cuda"])
def test_attention_scores_full_attention_block(benchmark, impl):
    device = _device(impl)
    B, H, N, D = FULL_ATTENTION
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(B, H, N, D, generator=g).to(device) for _ in range(2))
    fn = eager_attention_scores if impl.startswith("eager") else (
        lambda q, k: ops.attention_scores(q, k, backend="triton" if device == "cuda" else "cpu"))
    benchmark.group = "Qwen2.5-VL attention_scores 1x16x5476x5476, d=80 (fp32, received)"
    if device == "cuda":
        benchmark(synced(fn, q, k))
    else:
        benchmark.pedantic(fn, args=(q, k), rounds=2 if impl.startswith("eager") else 5, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["vtprune-cpu", "published-loop-cpu", "vtprune-cuda", "published-loop-cuda"])
def test_cosine_dedup_merged_grid(benchmark, impl):
    device = _device(impl)
    if impl == "vtprune-cuda" and not _library.HAS_CUDA_KERNELS:
        pytest.skip("vtprune_kernels built without CUDA kernels")
    n_important = KEEP // 2
    n_diverse = KEEP - n_important
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, MERGED, 4 * 1280, generator=g).to(device)
    scores = torch.rand(1, MERGED, generator=g).to(device)
    ranked = scores.argsort(dim=1, descending=True, stable=True)
    candidates = torch.ones(1, MERGED, dtype=torch.bool, device=device).scatter(1, ranked[:, :n_important], False)
    benchmark.group = f"Qwen2.5-VL cosine_dedup_mask 1369 x 5120, keep {n_diverse} of {MERGED - n_important}"
    if impl.startswith("vtprune"):
        call = synced(torch.ops.vtprune.cosine_dedup_mask, x, candidates, scores, torch.tensor([n_diverse], device=device), 8)
    else:
        call = synced(published_dedup_loop, x, ranked_residual(candidates, scores), n_diverse)
    benchmark(call)


@pytest.fixture(scope="module")
def qwen():
    model = qwen2_5_vl_model().to(DEVICE)
    inputs = {k: v.to(DEVICE) for k, v in image_inputs().items()}
    assert int(inputs["mm_token_type_ids"].sum()) == MERGED
    return model, inputs


@pytest.mark.benchmark(group="Qwen2.5-VL prefill, 1024x1024 image (1369 merged tokens)")
@pytest.mark.parametrize("keep", [None, KEEP], ids=["unpruned", "vispruner-25"])
def test_prefill(benchmark, qwen, keep):
    bench_prefill(benchmark, *qwen, keep, device=DEVICE, rounds=ROUNDS, pairs=2)


@pytest.mark.benchmark(group="Qwen2.5-VL image stage, 1024x1024 image, 25% kept")
@pytest.mark.parametrize("method_name", ["vispruner", "uniform"])
def test_image_stage(benchmark, qwen, method_name):
    bench_image_stage(benchmark, *qwen, method_name, KEEP, device=DEVICE, rounds=ROUNDS, pairs=2)
