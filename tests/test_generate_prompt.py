"""generate() under apply() returns the caller's prompt followed by the new tokens.

The model runs on the shortened prompt; the returned sequences must still start with the
``input_ids`` the caller passed, so ``out[:, inputs["input_ids"].shape[1]:]`` is the new tokens.
The oracle for the new tokens is the unwrapped ``generate`` (the class's method) on the pruned
inputs that ``handle.prepare_inputs`` returns.
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND
from vtprune_kernels import HIVTP, apply

NEW = 3


@pytest.fixture(scope="module")
def model():
    return tm.llava_clip()


def _inputs(padding_side):
    ids, mask = tm.make_prompts([[25], [25]], padding_side=padding_side)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(2, 70, seed=2))


def _unwrapped_generate(model, prepared):
    return type(model).generate(model, **prepared, max_new_tokens=NEW, do_sample=False)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_sequences_start_with_the_callers_prompt(model, padding_side):
    """HIVTP keeps 19 and 21 tokens of the two images here: rows shrink by different amounts."""
    inputs = _inputs(padding_side)
    prompt = inputs["input_ids"]
    with torch.no_grad(), apply(model, HIVTP(layers=(0, 1, 2), region_ratio=0.5), backend=BACKEND) as handle:
        prepared = handle.prepare_inputs(**inputs)
        counts = [len(s) for s in handle.last_selection]
        out = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    assert counts[0] != counts[1], f"test precondition: different kept counts, got {counts}"
    reference = _unwrapped_generate(model, prepared)
    short = prepared["input_ids"].shape[1]
    assert handle.last_prompt_length == short < prompt.shape[1]
    assert out.shape == (2, prompt.shape[1] + NEW)
    assert torch.equal(out[:, : prompt.shape[1]], prompt)
    assert torch.equal(out[:, prompt.shape[1]:], reference[:, short:])  # the usual idiom gives the new tokens


def test_dict_output_and_repeated_samples(model):
    """return_dict_in_generate: ``sequences`` gets the prompt, the scores are untouched; with
    num_return_sequences each repeated row starts with its own sample's prompt."""
    inputs = _inputs("left")
    prompt = inputs["input_ids"]
    with torch.no_grad(), apply(model, HIVTP(layers=(0, 1, 2), region_ratio=0.5), backend=BACKEND) as handle:
        prepared = handle.prepare_inputs(**inputs)
        out = model.generate(
            **inputs, max_new_tokens=NEW, do_sample=True, top_k=1, num_return_sequences=2,
            return_dict_in_generate=True, output_logits=True,
        )
    reference = type(model).generate(
        model, **prepared, max_new_tokens=NEW, do_sample=True, top_k=1, num_return_sequences=2,
        return_dict_in_generate=True, output_logits=True,
    )
    short = prepared["input_ids"].shape[1]
    assert torch.equal(out.sequences[:, : prompt.shape[1]], prompt.repeat_interleave(2, 0))
    assert torch.equal(out.sequences[:, prompt.shape[1]:], reference.sequences[:, short:])
    for got, want in zip(out.logits, reference.logits):
        torch.testing.assert_close(got, want)
