"""apply() on the Omni thinkers (Qwen2.5-Omni: Qwen2.5-VL's tower; Qwen3-Omni: Qwen3-VL's tower with DeepStack,
MoE text, float M-RoPE positions): images and videos pruned, audio passed through.

The batch is test_integration_qwen_vl.py's (row 0: a 6x10-patch image; row 1: a 4x6-patch image and
a 2-frame 4x4-patch video), optionally with an audio clip in row 0. Every pruned forward is compared
with the independent hand pipeline of qwen_oracles.py, whose positions come from the thinker's own
``get_rope_index`` (audio included) and whose audio features from its own ``get_audio_features``.
"""
import pytest
import torch

import tiny_models as tm
from qwen_oracles import (
    assert_forward_matches_hand,
    assert_generate_matches_hand,
    assert_keeping_everything_is_unpruned,
    hand_keep_of_call,
)
from vtprune_kernels import HIVTP, Random, Uniform, VisPruner, apply

IMAGES = [(1, 6, 10), (1, 4, 6)]
VIDEOS = [(2, 4, 4)]
AUDIO_FRAMES = 40  # mel frames of the audio clip
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "hivtp": lambda: HIVTP(layers=(1, 3), region_ratio=0.5),
    "random": lambda: Random(keep=3, seed=4),
    "uniform": lambda: Uniform(keep=2),
}


@pytest.fixture(scope="module", params=["qwen2_5_omni", "qwen3_omni"])
def model(request):
    return getattr(tm, request.param)()


def _inputs(model, audio: bool = False):
    rows = [[("image", IMAGES[0])], [("image", IMAGES[1]), ("video", VIDEOS[0])]]
    ids, mask, _ = tm.qwen_prompts(rows)
    inputs = dict(
        input_ids=ids, attention_mask=mask, pixel_values=tm.qwen_pixels(IMAGES, seed=2), image_grid_thw=torch.tensor(IMAGES),
        pixel_values_videos=tm.qwen_pixels(VIDEOS, seed=3), video_grid_thw=torch.tensor(VIDEOS),
        video_second_per_grid=torch.tensor([1.0]),
    )
    if audio:
        features = torch.randn(1, model.config.audio_config.num_mel_bins, AUDIO_FRAMES, generator=torch.Generator().manual_seed(5))
        feature_mask = torch.ones(1, AUDIO_FRAMES, dtype=torch.long)
        with torch.no_grad():
            n = model.model.get_audio_features(features, feature_mask).last_hidden_state.shape[0]
        block = [tm.AUDIO_START_TOKEN] + [tm.AUDIO_TOKEN] * n + [tm.AUDIO_END_TOKEN]
        rows_ids = [r[m.bool()].tolist() for r, m in zip(ids, mask)]
        rows_ids[0] = rows_ids[0][:1] + block + rows_ids[0][1:]  # the clip after row 0's first token
        width = max(len(r) for r in rows_ids)
        ids = torch.zeros(len(rows_ids), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, r in enumerate(rows_ids):
            ids[b, width - len(r):], mask[b, width - len(r):] = torch.tensor(r), 1
        inputs.update(input_ids=ids, attention_mask=mask, input_features=features, feature_attention_mask=feature_mask)
    return inputs


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs(model)
    keep = hand_keep_of_call(model, method, inputs)
    handle = assert_forward_matches_hand(model, method, inputs, keep)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k, _ in keep]


def test_audio_passes_through(model):
    """An audio clip in the prompt keeps its placeholders and features; its positions shift the rest as unpruned."""
    method = VisPruner(keep=3, step=2)
    inputs = _inputs(model, audio=True)
    assert_forward_matches_hand(model, method, inputs, hand_keep_of_call(model, method, inputs))
    with torch.no_grad(), apply(model, method) as handle:
        pruned = handle.prepare_inputs(**inputs)
    assert torch.equal(pruned["input_features"], inputs["input_features"])
    assert (pruned["input_ids"] == tm.AUDIO_TOKEN).sum() == (inputs["input_ids"] == tm.AUDIO_TOKEN).sum()


@pytest.mark.parametrize("audio", [False, True], ids=["vision", "with-audio"])
def test_keeping_everything_gives_the_unpruned_logits(model, audio):
    inputs = _inputs(model, audio=audio)
    assert_keeping_everything_is_unpruned(model, inputs, 15)


def test_generate_matches_hand_greedy_steps(model):
    method = HIVTP(layers=(1, 3), region_ratio=0.5)
    inputs = _inputs(model)
    assert_generate_matches_hand(model, method, inputs, hand_keep_of_call(model, method, inputs))


def test_a_video_without_its_time_steps_is_a_clear_error(model):
    inputs = _inputs(model)
    inputs.pop("video_second_per_grid")
    with apply(model, Uniform(keep=2)), pytest.raises(ValueError, match="video_second_per_grid"):
        model(**inputs)
