"""HIVTP's score capture with and without reusing the tower's log-sum-exp (LSE).

HIVTP scores the received attention of 4 vision layers (indices 6..9). The tower runs to layer 9
under ``VisionScoreCapture(tower, (6, 7, 8, 9), "all", reuse_lse=...)``: the capture attention
function runs the tower's own SDPA kernel, which returns the row LSE, and each scored layer's
q/k go to ``ops.attention_scores``, with ``lse=`` (one pass over the keys) or without (the op
recomputes the normaliser: two passes). The only difference between the contenders is that flag.

- ``capture``: the whole stage, tower layers 0..9 plus the scoring (what a pruned call pays);
- ``scores``: the scoring alone, the 4 ``attention_scores`` calls on the layers' q/k/LSE captured
  once (the part the LSE changes, without the tower's noise).

Each pair is also timed alternately in one process (``timing.paired_best``) into
``extra_info["paired_with_lse_s"]`` / ``["paired_without_lse_s"]``: use those for the ratio on a
loaded machine. Towers (random weights, the 10 layers that run, hidden 1024, 16 heads, d = 64):
``clip_l``: CLIP-L/14-336 (577 tokens, LLaVA-1.5's tower, HIVTP's published setting);
``internvit``: InternViT-300M-448 (1025 tokens). CPU: float32, 2 images / 1 tile. CUDA: bfloat16
(SDPA's flash kernel gives the LSE, the Triton op scores), 2 images / 13 tiles.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest benchmarks/bench_capture_lse.py --benchmark-only``
"""
import pytest
import torch
from timing import paired_best

from vtprune_kernels import ops
from vtprune_kernels.demo.measure import synchronize
from vtprune_kernels.integrations.attention_capture import AttentionCapture
from vtprune_kernels.integrations.capture import VisionScoreCapture
from vtprune_kernels.integrations.vision_runner import describe_tower, run_tower

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
HIVTP_LAYERS = (6, 7, 8, 9)
ROUNDS = dict(rounds=3, warmup_rounds=1, iterations=1)
IMAGES = {"clip_l": 2, "internvit": 13 if DEVICE == "cuda" else 1}


def build_tower(name: str):
    """(VisionTower, pixel_values) with random weights, layers 0..9 only (HIVTP never runs more)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, InternVLVisionConfig, InternVLVisionModel

    torch.manual_seed(0)
    common = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=max(HIVTP_LAYERS) + 1, num_attention_heads=16)
    if name == "clip_l":
        model, size = CLIPVisionModel(CLIPVisionConfig(image_size=336, patch_size=14, **common)), 336
    else:
        config = InternVLVisionConfig(image_size=[448, 448], patch_size=[14, 14], use_absolute_position_embeddings=True, **common)
        model, size = InternVLVisionModel(config), 448
    model = model.eval().to(DEVICE, DTYPE)
    pixels = torch.randn(IMAGES[name], 3, size, size, generator=torch.Generator().manual_seed(1))
    return describe_tower(model), pixels.to(DEVICE, DTYPE)


@pytest.fixture(scope="module", params=sorted(IMAGES))
def tower(request):
    return (request.param, *build_tower(request.param))


def capture_call(tower, pixels, reuse_lse: bool):
    """One HIVTP capture stage; returns the capture (scores() checked)."""

    def call():
        capture = VisionScoreCapture(tower, HIVTP_LAYERS, "all", reuse_lse=reuse_lse)
        with capture, torch.inference_mode():
            run_tower(tower, pixels, feature_layer=max(HIVTP_LAYERS), last_layer=max(HIVTP_LAYERS))
        capture.scores()
        synchronize(DEVICE)
        return capture

    return call


def captured_layers(tower, pixels):
    """The HIVTP layers' ``AttentionCall``s (q, k, lse, scale) from one run of the tower."""
    calls = []
    with AttentionCapture({i: tower.attention_module(i) for i in HIVTP_LAYERS}, calls.append), torch.inference_mode():
        run_tower(tower, pixels, feature_layer=max(HIVTP_LAYERS), last_layer=max(HIVTP_LAYERS))
    assert all(c.lse is not None for c in calls), "the tower's kernel gave no LSE: nothing to compare"
    return calls


def scores_call(calls, reuse_lse: bool):
    def call():
        for c in calls:
            ops.attention_scores(c.query, c.key, scale=c.scale, lse=c.lse if reuse_lse else None)
        synchronize(DEVICE)

    return call


def _record(benchmark, name, with_lse, without_lse, pairs):
    benchmark.extra_info.update(tower=name, device=DEVICE, dtype=str(DTYPE), images=IMAGES[name], layers=list(HIVTP_LAYERS))
    benchmark.extra_info["paired_with_lse_s"], benchmark.extra_info["paired_without_lse_s"] = paired_best(
        with_lse, without_lse, pairs=pairs
    )


@pytest.mark.parametrize("reuse_lse", [True, False], ids=["with_lse", "without_lse"])
def test_hivtp_capture(benchmark, tower, reuse_lse):
    name, vision, pixels = tower
    benchmark.group = f"hivtp capture {name}"
    call = capture_call(vision, pixels, reuse_lse)
    capture = benchmark.pedantic(call, **ROUNDS)
    assert capture.layers_with_lse == (len(HIVTP_LAYERS) if reuse_lse else 0)
    if reuse_lse:
        _record(benchmark, name, call, capture_call(vision, pixels, False), pairs=3)


@pytest.mark.parametrize("reuse_lse", [True, False], ids=["with_lse", "without_lse"])
def test_hivtp_scores(benchmark, tower, reuse_lse):
    name, vision, pixels = tower
    benchmark.group = f"hivtp scores {name}"
    calls = captured_layers(vision, pixels)
    call = scores_call(calls, reuse_lse)
    benchmark.pedantic(call, rounds=10, warmup_rounds=1, iterations=1)
    if reuse_lse:
        _record(benchmark, name, call, scores_call(calls, False), pairs=15)
