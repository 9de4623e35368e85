"""The pruned vLLM LLaVA-NeXT-Video gives transformers + ``apply()``'s kept indices, greedy tokens and
prompt log-probabilities. vLLM serves this family for videos only, one per prompt, so its tests
are videos (``test_models.py``'s are images): several requests with videos of different lengths
and sizes submitted together (chunked prefill), the per-frame count the processor announces, a
repeated video from the encoder cache, and the LoRA token accounting of a pruned video.
"""
from __future__ import annotations

import pytest

import checkpoints
from harness import TOKEN_BUDGET, Engine, reference, reference_logprobs, video
from vtprune_kernels import Random, VisPruner

ARCHITECTURE = "LlavaNextVideoForConditionalGeneration"
POOLED = 16  # 56 px frames of 7 px patches: 8 x 8, pooled 2x2 to 4 x 4
CASES = {
    "vispruner": ({"method": "vispruner", "keep": 5, "step": 2}, VisPruner(keep=5, step=2)),
    "random": ({"method": "random", "keep": 6, "seed": 3}, Random(keep=6, seed=3)),
}
# (frames, width, height): the processor resizes and crops every frame to 56 x 56
CLIPS = [(4, 70, 56), (3, 56, 90), (5, 64, 64)]


@pytest.fixture(scope="module", params=list(CASES))
def served(request, checkpoint_dir):
    from transformers import AutoProcessor

    from vtprune_kernels.integrations.vllm import hf_overrides

    config, method = CASES[request.param]
    path, model = checkpoints.llava_next_video(f"{checkpoint_dir}/llava_next_video-{request.param}")
    engine = Engine(path, hf_overrides(ARCHITECTURE, **config), max_images=0, max_videos=1)
    engine.selections()  # drop the start-up profiling's dummy videos
    yield config, method, engine, model, AutoProcessor.from_pretrained(path)
    engine.close()


def _prompt(prefix: str = "USER: ") -> str:
    return prefix + "<video>\nWhat happens here? ASSISTANT:"


def test_batch_of_video_requests_matches_apply(served):
    config, method, engine, model, processor = served
    clips = [video(f, w, h, seed=10 + i) for i, (f, w, h) in enumerate(CLIPS)]
    got = engine.greedy([(_prompt(), [])] * len(clips), videos=[[c] for c in clips])
    selections = engine.selections()
    expected = [reference(model, processor, method, _prompt(), [], [c]) for c in clips]
    assert [tokens for tokens, _ in got] == [tokens for tokens, _ in expected]
    assert sorted(selections) == sorted(sel for _, sels in expected for sel in sels)
    assert all(length > TOKEN_BUDGET for _, length in got), "test precondition: prompts must be chunked"
    per_frame = min(config["keep"], POOLED)
    for (_, length), (frames, _, _) in zip(got, CLIPS):
        full = processor(text=[_prompt()], videos=[video(frames, 56, 56, seed=0)[0]], return_tensors="pt")["input_ids"]
        assert length == full.shape[1] - frames * POOLED + frames * per_frame


def test_announced_count_is_kept_per_frame(served):
    from vllm.multimodal import MULTIMODAL_REGISTRY

    config, method, engine, model, processor = served
    info = MULTIMODAL_REGISTRY.create_processor(engine.llm.llm_engine.model_config).info
    assert info.get_num_video_tokens(image_width=56, image_height=56, num_frames=7) == 7 * min(config["keep"], POOLED)


def test_prompt_logprobs_match_apply(served):
    config, method, engine, model, processor = served
    clip = video(4, 70, 56, seed=20)
    (got,) = engine.prompt_logprobs([(_prompt(), [])], videos=[[clip]])
    engine.selections()
    expected = reference_logprobs(model, processor, method, _prompt(), [], [clip])
    assert len(got) == len(expected)
    worst = max(abs(a - b) for a, b in zip(got, expected))
    assert worst < 1e-3, f"prompt log-probabilities differ from apply() by up to {worst}"


def test_repeated_video_comes_from_the_encoder_cache(served):
    config, method, engine, model, processor = served
    clip = video(3, 64, 64, seed=30)
    engine.greedy([(_prompt(), [])], videos=[[clip]])
    assert engine.selections() == reference(model, processor, method, _prompt(), [], [clip])[1]
    text = _prompt(prefix="Q: look. ")
    ((tokens, _),) = engine.greedy([(text, [])], videos=[[clip]])
    assert engine.selections() == [], "the repeated video was encoded again instead of read from the encoder cache"
    assert tokens == reference(model, processor, method, text, [], [clip])[0]


def test_lora_token_counts_of_a_pruned_video(served):
    """Multimodal LoRA maps a video's placeholders back to tower and projector tokens: the tower sees
    every patch of each frame (8 x 8), the projector only the kept tokens."""
    config, method, engine, model, processor = served
    kept = 3 * min(config["keep"], POOLED)
    (counts,) = engine.llm.apply_model(
        lambda m: m.get_mm_lora_token_counts(modality="video", mm_kwargs=None, num_mm_embeds=kept)
    )
    assert counts == (3 * 64, kept)
