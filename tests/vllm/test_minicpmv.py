"""MiniCPM-V 4.6 beyond test_models.py's ``minicpmv4_6-*`` cases (the per-method checks against ``apply()``):
- keeping everything is stock vLLM: a budget above every unit's tokens gives the prompt log-probabilities of the
  stock architecture on the same checkpoint (the capture hooks change nothing, every unit's tokens are gathered in
  order), with images of one unit, of equal units and of mixed units (padded rows) and a video; the pruned engine
  logs every unit's full index range;
- ``downsample_mode="4x"`` (no window merger) selects as ``apply()`` does."""
from __future__ import annotations

import pytest

import checkpoints
from harness import Engine, _processed, image, reference, video

IMAGES = [(448, 336), (300, 500), (200, 150)]  # 5 units of 3x5 tokens; 5x3 + 4x4 and 2x7 slices; one 4x4 unit


@pytest.fixture(scope="module")
def checkpoint(checkpoint_dir):
    return checkpoints.minicpmv4_6(f"{checkpoint_dir}/minicpmv4_6-everything")


def _requests():
    text = f"USER: {checkpoints.MINICPMV_IMAGE}\\n{checkpoints.MINICPMV_IMAGE}\\nWhat is shown here? ASSISTANT:"
    video_text = f"USER: {checkpoints.MINICPMV_VIDEO} then {checkpoints.MINICPMV_IMAGE}\\nWhat happens? ASSISTANT:"
    requests = [(text, [image(*IMAGES[0], seed=1), image(*IMAGES[1], seed=2)]), (video_text, [image(*IMAGES[2], seed=3)])]
    return requests, [[], [video(4, 112, 84, seed=4)]]


def _logprobs(path, overrides):
    engine = Engine(path, overrides, max_images=2, max_videos=1, enable_prefix_caching=False)
    try:
        engine.selections() if overrides else None  # drop the start-up profiling's dummy images
        requests, videos = _requests()
        logprobs = engine.prompt_logprobs(requests, videos=videos)
        return logprobs, engine.selections() if overrides else None
    finally:
        engine.close()


def test_keeping_everything_is_stock_vllm(checkpoint):
    from vtprune_kernels.integrations.vllm import hf_overrides

    path, model = checkpoint
    stock, _ = _logprobs(path, None)
    pruned, selections = _logprobs(path, hf_overrides("MiniCPMV4_6ForConditionalGeneration", "vispruner", 10**4))
    assert [len(p) for p in pruned] == [len(p) for p in stock]
    worst = max(abs(a - b) for p, s in zip(pruned, stock) for a, b in zip(p, s))
    assert worst < 1e-5, f"keeping everything moves the prompt log-probabilities by up to {worst}"
    # every unit of the images and video frames (as the checkpoint's processor cuts them) keeps its whole grid
    from transformers import AutoProcessor

    processor, units = AutoProcessor.from_pretrained(path), []
    for (text, images), clips in zip(*_requests()):
        inputs = _processed(processor, text, images, clips)
        for key in ("target_sizes", "target_sizes_videos"):
            units += [(h // 4) * (w // 4) for h, w in inputs.get(key, []).tolist()] if key in inputs else []
    assert len(units) > 10 and len(set(units)) > 1, "test precondition: units of several sizes"
    assert sorted(selections) == sorted(list(range(n)) for n in units)


class _FourX:
    """The checkpoint's processor with ``downsample_mode="4x"`` (no window merger: 2 x 2 patches per token), which the
    model call then receives too (transformers' processor does not pass it on)."""

    def __init__(self, processor):
        self._processor = processor

    def __call__(self, *args, **kwargs):
        out = self._processor(*args, downsample_mode="4x", **kwargs)
        out["downsample_mode"] = "4x"
        return out

    def __getattr__(self, name):
        return getattr(self._processor, name)


def test_downsample_mode_4x_matches_apply(checkpoint):
    """The engine's ``downsample_mode="4x"`` (mm_processor_kwargs): no window merger, every layer (VisPruner's last
    one here) attends over patches, a token per 2 x 2 of them; kept indices and greedy tokens as apply()'s."""
    from transformers import AutoProcessor

    from vtprune_kernels import VisPruner
    from vtprune_kernels.integrations.vllm import hf_overrides

    path, model = checkpoint
    engine = Engine(
        path, hf_overrides("MiniCPMV4_6ForConditionalGeneration", "vispruner", 10, step=2), max_images=1,
        enable_prefix_caching=False, mm_processor_kwargs={"downsample_mode": "4x"},
    )
    try:
        engine.selections()
        requests = [(f"USER: {checkpoints.MINICPMV_IMAGE}\nWhat is shown here? ASSISTANT:", [image(w, h, seed=40 + i)])
                    for i, (w, h) in enumerate([(300, 500), (200, 150)])]
        got = engine.greedy(requests)
        selections = engine.selections()
    finally:
        engine.close()
    processor = _FourX(AutoProcessor.from_pretrained(path))
    expected = [reference(model, processor, VisPruner(keep=10, step=2), text, images) for text, images in requests]
    assert [tokens for tokens, _ in got] == [tokens for tokens, _ in expected]
    assert sorted(selections) == sorted(sel for _, sels in expected for sel in sels)
    assert sum(len(s) for s in selections) == 10 * len(selections) and max(max(s) for s in selections) >= 50  # 4x grids
