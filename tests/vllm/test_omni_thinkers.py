"""The Qwen2.5-Omni and Qwen3-Omni thinkers in vLLM (``qwen2_5_omni.py``, ``qwen3_omni.py``): stock vLLM against
transformers, then the pruned thinker against transformers + ``apply()`` on the transformers thinker, audio passed
through.

Per model one tiny full checkpoint (``checkpoints.qwen2_5_omni``: ``Qwen2_5OmniForConditionalGeneration``, served
under both of vLLM's architecture names; ``checkpoints.qwen3_omni``: ``Qwen3OmniMoeForConditionalGeneration``).
Engines, one at a time:
- stock vLLM: the prompt log-probabilities of transformers' thinker on an image, a video with an image, an audio
  clip with an image and an audio clip alone (so the tiny checkpoint is a fair test);
- pruned (VisPruner keep 10): kept indices, greedy tokens and prompt log-probabilities of ``apply()`` (images
  batched and chunked, a video with an image, audio with an image: the clip keeps all its placeholders and its
  features); ``use_audio_in_video`` refused;
- keep everything (keep 1000): the stock engine's log-probabilities and tokens.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Tuple

import pytest
import torch

import checkpoints
from harness import TOKEN_BUDGET, Engine, VideoFps, _processed, audio, image, reference, reference_logprobs, run_prompts, video, worst
from vtprune_kernels import VisPruner, apply

IMAGE = checkpoints.QWEN_IMAGE
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
AUDIO = checkpoints.QWEN_OMNI_AUDIO
METHOD = VisPruner(keep=10, step=2)


@dataclasses.dataclass(frozen=True)
class OmniCase:
    """One Omni model under test. architectures: vLLM's stock names for it (the keep-everything engine is switched
    from the first, the pruned one from the last); sizes: (width, height) of the test images, whose merged grids are
    3x4, 5x3 and 6x6 (keep 10 prunes each); video_fps: the frame rate videos are sampled at; stock_tolerance: the
    largest prompt log-probability difference between stock vLLM and transformers on the tiny checkpoint."""

    build: Callable
    architectures: Tuple[str, ...]
    sizes: List[Tuple[int, int]]
    video_fps: float
    stock_tolerance: float

    def engine(self) -> dict:
        return dict(max_images=2, max_videos=1, max_audios=1, mm_processor_kwargs={"fps": self.video_fps})

    def prompts(self):
        """(prompt, images, videos, audios): an image; a video then an image; an audio clip then an image; audio alone."""
        video_size = self.sizes[0]
        return [
            (f"USER: {IMAGE}\nWhat is shown here? ASSISTANT:", [image(*self.sizes[2], seed=1)], [], []),
            (f"USER: {VIDEO} then {IMAGE}\nWhat happens? ASSISTANT:", [image(*self.sizes[1], seed=2)],
             [video(4, *video_size, seed=3, fps=self.video_fps)], []),
            (f"USER: {AUDIO} and {IMAGE}\nWhat is heard? ASSISTANT:", [image(*self.sizes[0], seed=4)], [], [audio(1.0, seed=5)]),
            (f"USER: {AUDIO}\nWhat is heard? ASSISTANT:", [], [], [audio(1.5, seed=6)]),
        ]


CASES = {
    # 0.5 s per temporal patch of 2 frames: a video's frames step by int(f * 0.5 * 25) = 12 positions (at the
    # processor's default 2 fps, 1 s per patch, the step would not tell second_per_grid_ts from 1)
    "qwen2_5_omni": OmniCase(
        checkpoints.qwen2_5_omni, ("Qwen2_5OmniModel", "Qwen2_5OmniForConditionalGeneration"),
        [(112, 84), (84, 140), (168, 168)], video_fps=4.0, stock_tolerance=1e-3,
    ),
    # 16 px patches; 1 s per temporal patch: frames step by 1 x 25 positions (vLLM's default is 2 s per patch). At
    # 4 fps (0.5 s, 12.5 positions) vLLM truncates the step to 12 and transformers keeps 12.5 (its positions are floats)
    "qwen3_omni": OmniCase(
        checkpoints.qwen3_omni, ("Qwen3OmniMoeForConditionalGeneration",),
        [(128, 96), (96, 160), (192, 192)], video_fps=2.0, stock_tolerance=1e-4,
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]


@pytest.fixture(scope="module")
def checkpoint(case, checkpoint_dir):
    from transformers import AutoProcessor

    name = next(key for key, value in CASES.items() if value is case)
    path, thinker = case.build(f"{checkpoint_dir}/{name}")
    return path, thinker, VideoFps(AutoProcessor.from_pretrained(path), case.video_fps)


@pytest.fixture(scope="module")
def stock(case, checkpoint):
    """The stock engine's (prompt log-probabilities, greedy tokens) of the case's prompts."""
    engine = Engine(checkpoint[0], {"architectures": [case.architectures[0]]}, **case.engine())
    try:
        prompts = case.prompts()
        return run_prompts(engine, prompts, logprobs=True), run_prompts(engine, prompts, logprobs=False)
    finally:
        engine.close()


def test_stock_vllm_matches_transformers(case, checkpoint, stock):
    """Stock vLLM's thinker and transformers' agree on the tiny checkpoint (images, video, audio)."""
    _, thinker, processor = checkpoint
    for (text, images, videos, audios), logprobs in zip(case.prompts(), stock[0]):
        inputs = _processed(processor, text, images or None, videos, audios)
        with torch.no_grad():
            logits = thinker(**inputs).logits[0].float()
        ids = inputs["input_ids"][0]
        expected = torch.log_softmax(logits[:-1], -1).gather(1, ids[1:, None])[:, 0].tolist()
        assert worst(logprobs, expected) < case.stock_tolerance


def test_keeping_everything_is_stock(case, checkpoint, stock):
    """keep >= every frame's tokens: the pruned thinker (under the first architecture name) gives the stock
    engine's prompt log-probabilities and tokens (images, video, audio)."""
    from vtprune_kernels.integrations.vllm import hf_overrides

    engine = Engine(checkpoint[0], hf_overrides(case.architectures[0], "vispruner", keep=1000), **case.engine())
    try:
        prompts = case.prompts()
        logprobs, greedy = run_prompts(engine, prompts, logprobs=True), run_prompts(engine, prompts, logprobs=False)
    finally:
        engine.close()
    assert greedy == stock[1]
    for got, expected in zip(logprobs, stock[0]):
        assert worst(got, expected) < 1e-4


@pytest.fixture(scope="module")
def pruned(case, checkpoint, stock):  # after the stock engine (one engine at a time)
    from vtprune_kernels.integrations.vllm import hf_overrides

    path, thinker, processor = checkpoint
    engine = Engine(path, hf_overrides(case.architectures[-1], "vispruner", keep=10, step=2), **case.engine())
    engine.selections()  # the start-up profiling's dummy items
    yield engine, thinker, processor
    engine.close()


def test_batch_of_images_matches_apply(case, pruned):
    """Three image requests together, each prefilled in chunks: greedy tokens and kept indices as apply()."""
    engine, thinker, processor = pruned
    requests = [(f"USER: {IMAGE}\nWhat is shown here? ASSISTANT:", [image(w, h, seed=10 + i)]) for i, (w, h) in enumerate(case.sizes)]
    got = engine.greedy(requests)
    selections = engine.selections()
    expected = [reference(thinker, processor, METHOD, text, images) for text, images in requests]
    assert [tokens for tokens, _ in got] == [tokens for tokens, _ in expected]
    assert sorted(selections) == sorted(sel for _, sels in expected for sel in sels)
    assert all(length > TOKEN_BUDGET for _, length in got), "test precondition: prompts must be chunked"


def test_two_images_logprobs_match_apply(case, pruned):
    engine, thinker, processor = pruned
    sizes = case.sizes
    text, images = f"USER: {IMAGE}\n{IMAGE}\nWhat is shown here? ASSISTANT:", [image(*sizes[0], seed=20), image(*sizes[2], seed=21)]
    (logprobs,) = engine.prompt_logprobs([(text, images)])
    assert engine.selections() == reference(thinker, processor, METHOD, text, images)[1]
    assert worst(logprobs, reference_logprobs(thinker, processor, METHOD, text, images)) < 1e-3


@pytest.mark.parametrize("index", [1, 2], ids=["video-and-image", "audio-and-image"])
def test_mixed_prompt_matches_apply(case, pruned, index):
    """A video (pruned per frame; temporal positions at frame x second_per_grid x 25) with an image, or an audio clip
    (passed through) with an image: kept indices, greedy tokens and every prompt log-probability as apply()."""
    engine, thinker, processor = pruned
    prompt = case.prompts()[index]
    text, images, videos, audios = prompt
    ((tokens, _),) = run_prompts(engine, [prompt], logprobs=False)
    selections = engine.selections()
    (logprobs,) = run_prompts(engine, [prompt], logprobs=True)
    engine.selections()
    expected_tokens, expected_selection = reference(thinker, processor, METHOD, text, images, videos, audios)
    assert tokens == expected_tokens
    assert sorted(selections) == sorted(expected_selection)  # vLLM encodes the image and the video apart
    expected = reference_logprobs(thinker, processor, METHOD, text, images, videos, audios=audios)
    assert worst(logprobs, expected) < 1e-3


def test_audio_passes_through(case, pruned, stock):
    """The audio clip keeps every placeholder (the pruned prompt is apply()'s token for token), and the prompt
    up to the image, the clip included, has the stock engine's log-probabilities: its features and positions
    are stock vLLM's."""
    from vllm import SamplingParams

    engine, thinker, processor = pruned
    prompts = case.prompts()
    text, images, videos, audios = prompts[2]
    params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False, prompt_logprobs=0)
    (out,) = engine.llm.generate([{"prompt": text, "multi_modal_data": {"image": images, "audio": audios}}], params, use_tqdm=False)
    engine.selections()
    inputs = _processed(processor, text, images or None, videos, audios)
    with torch.no_grad(), apply(thinker, METHOD) as handle:
        prepared = handle.prepare_inputs(**inputs)
    assert list(out.prompt_token_ids) == prepared["input_ids"][0].tolist()
    audio_token = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    count = int((inputs["input_ids"] == audio_token).sum())
    assert count > 0 and list(out.prompt_token_ids).count(audio_token) == count
    image_start = list(out.prompt_token_ids).index(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    got = [d[t].logprob for d, t in zip(out.prompt_logprobs[1:], out.prompt_token_ids[1:])]
    assert image_start > count
    assert worst(got[: image_start - 1], stock[0][2][: image_start - 1]) < 1e-5
    # audio alone: nothing to prune, the stock engine's every log-probability and token
    assert run_prompts(engine, prompts[3:], logprobs=True)[0] == pytest.approx(stock[0][3], abs=1e-5)
    assert run_prompts(engine, prompts[3:], logprobs=False) == stock[1][3:]
    assert engine.selections() == []


def test_audio_in_video_is_refused(case, pruned):
    """A video with its audio interleaved (``use_audio_in_video``) is refused with the reason, in the request."""
    from vllm import SamplingParams

    engine, _, _ = pruned
    prompt = {
        "prompt": f"USER: {VIDEO}\nWhat happens? ASSISTANT:",
        "multi_modal_data": {"video": case.prompts()[1][2], "audio": [audio(2.0, seed=6)]},
        "mm_processor_kwargs": {"use_audio_in_video": True},
    }
    with pytest.raises(ValueError, match="use_audio_in_video=True .* is not supported with pruning"):
        engine.llm.generate([prompt], SamplingParams(max_tokens=1), use_tqdm=False)
