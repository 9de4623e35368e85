"""Qwen3.5 and Qwen3.5-MoE served pruned (``VTPruneQwen3_5ForConditionalGeneration``,
``VTPruneQwen3_5MoeForConditionalGeneration``): Qwen3-VL's tower without DeepStack in front of a
hybrid language model (linear-attention layers; mixture-of-experts blocks for -MoE).

vLLM's CPU kernels for those layers run in bfloat16 only, so this engine cannot reproduce
transformers' float32 numbers bit for bit, and score-based selections may flip where two scores lie
within bfloat16 rounding. The checks are therefore:
- Uniform (a selection that does not depend on scores), on both models, keeps exactly what ``apply()`` keeps, for two
  images and a video in one prompt, and every prompt token gets exactly the M-RoPE position
  ``apply()`` gives it (read from the language model's input, chunk by chunk);
- Qwen3.5: every prompt token's log-probability is within bfloat16 noise of ``apply()``'s in float32:
  a mean gap below 0.2 nats and no token above 1.5 (set from one measurement outside the suite, on
  this checkpoint, 2026-11-30: stock vLLM in bfloat16 against unpruned transformers gave a max gap of
  ~0.4, a selection differing in one image gave several nats). Not for -MoE,
  where bfloat16 flips expert choices and moves even the text before the images by nats;
- VisPruner (Qwen3.5) runs, keeps min(keep, merged tokens) per image, and its answer is the same
  when the pictures come again (from the encoder cache).
"""
from __future__ import annotations

import pytest

import checkpoints
from harness import Engine, image, reference, reference_logprobs, video
from vtprune_kernels import Uniform, VisPruner
from vtprune_kernels.integrations.vllm import hf_overrides

ARCHS = {False: "Qwen3_5ForConditionalGeneration", True: "Qwen3_5MoeForConditionalGeneration"}
TEXT = "USER: <|vision_start|><|video_pad|><|vision_end|> then " + (checkpoints.QWEN_IMAGE + "\n") * 2 + "What is this? ASSISTANT:"


@pytest.fixture(scope="module", params=[False, True], ids=["dense", "moe"])
def qwen3_5(request, checkpoint_dir):
    from transformers import AutoProcessor

    moe = request.param
    path, model = checkpoints.qwen3_5(f"{checkpoint_dir}/qwen3_5-{'moe' if moe else 'dense'}", moe=moe)
    return path, model, AutoProcessor.from_pretrained(path), ARCHS[moe]


def _media(seed):
    return [image(128, 96, seed=seed), image(192, 192, seed=seed + 1)], video(4, 112, 84, seed=seed + 2)


def _record_positions(model):
    """Keep the M-RoPE positions of every step the language model runs (on the engine's model)."""
    model._vtprune_test_positions = []
    inner = model.language_model.model
    forward = inner.forward  # (vLLM calls its compile-capable modules without module hooks)

    def recording(*args, **kwargs):
        model._vtprune_test_positions.append(kwargs["positions"].clone())
        return forward(*args, **kwargs)

    inner.forward = recording


def test_uniform_keeps_what_apply_keeps_and_positions_hold(qwen3_5):
    import torch

    from vtprune_kernels import apply

    path, model, processor, arch = qwen3_5
    engine = Engine(path, hf_overrides(arch, "uniform", 5), max_videos=1, dtype="bfloat16")
    try:
        engine.selections()
        engine.llm.apply_model(_record_positions)
        pictures, clip = _media(10)
        (logprobs,) = engine.prompt_logprobs([(TEXT, pictures)], videos=[[clip]])
        selections = engine.selections()
        (steps,) = engine.llm.apply_model(lambda m: [p.cpu() for p in m._vtprune_test_positions])
    finally:
        engine.close()
    _, expected_selection = reference(model, processor, Uniform(keep=5), TEXT, pictures, [clip])
    assert sorted(selections) == sorted(expected_selection)  # vLLM encodes the images and the video apart
    # every prompt token's (t, h, w) position, chunk by chunk, is the one apply() gives it
    from harness import _processed

    with apply(model, Uniform(keep=5)) as handle:
        expected_positions = handle.prepare_inputs(**_processed(processor, TEXT, pictures, [clip]))["position_ids"][:, 0]
    assert torch.equal(torch.cat(steps, dim=1), expected_positions)
    expected = reference_logprobs(model, processor, Uniform(keep=5), TEXT, pictures, [clip])
    assert len(logprobs) == len(expected)
    if arch.startswith("Qwen3_5Moe"):  # bfloat16 flips expert choices: even the text before the images moves by nats
        return
    gaps = [abs(a - b) for a, b in zip(logprobs, expected)]
    assert sum(gaps) / len(gaps) < 0.2 and max(gaps) < 1.5, f"mean gap {sum(gaps) / len(gaps):.3f}, max {max(gaps):.3f}"


@pytest.mark.parametrize("qwen3_5", [False], ids=["dense"], indirect=True)
def test_vispruner_keeps_the_budget_and_is_deterministic(qwen3_5):
    path, _, processor, arch = qwen3_5
    engine = Engine(path, hf_overrides(arch, "vispruner", 7, step=2), dtype="bfloat16")
    try:
        engine.selections()
        pictures, _ = _media(20)
        text = "USER: " + (checkpoints.QWEN_IMAGE + "\n") * 2 + "What is this? ASSISTANT:"
        first = engine.greedy([(text, pictures)])
        first_selection = engine.selections()
        again = engine.greedy([(text, [p.copy() for p in pictures])])
        again_selection = engine.selections()
    finally:
        engine.close()
    assert [len(s) for s in first_selection] == [7, 7]  # 12 and 36 merged tokens, keep 7 of each
    unpruned = processor(text=[text], images=pictures, return_tensors="pt")["input_ids"].shape[1]
    assert first[0][1] == unpruned - (12 - 7) - (36 - 7)  # the prompt holds the kept placeholders only
    assert again == first and again_selection == []  # the same pictures: served from the encoder cache
