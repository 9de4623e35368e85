"""apply() on GLM-4.1V, GLM-4.5V, GLM-4.6V and GLM-OCR (``Glm4vForConditionalGeneration``,
``Glm4vMoeForConditionalGeneration``, ``Glm46VForConditionalGeneration``, ``GlmOcrForConditionalGeneration``),
images: their tower is packed like Qwen-VL's
(2x2 blocks, attention per image) and merges a block with a per-patch norm, a 2x2 convolution and
an MLP (``qwen_tower.glm4v_merge``). Every pruned forward is compared with the independent hand
pipeline of qwen_oracles.py (which uses the model's own ``get_image_features`` and ``get_rope_index``).

The batch: row 0 holds one 6x10-patch image (3x5 merged tokens), row 1 a 4x6-patch image and a
second 4x4-patch one. Videos: GLM-4V writes each frame with the image token (typed 2), frames apart
between their delimiters and timestamps; a call holds images or videos, not both (as for the model).
"""
import pytest
import torch

import tiny_models as tm
from qwen_oracles import (
    BACKEND,
    assert_forward_matches_hand,
    assert_generate_matches_hand,
    assert_right_padded_forward_matches_hand,
    hand_keep,
)
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.integrations.qwen_tower import describe_tower, merge_kept, run_tower

IMAGES = [(1, 6, 10), (1, 4, 6), (1, 4, 4)]
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "vispruner-layer": lambda: VisPruner(keep=5, important_ratio=0.4, step=1, score_layer=1),
    "hivtp": lambda: HIVTP(layers=(1, 3), region_ratio=0.5),
    "random": lambda: Random(keep=3, seed=4),
    "uniform": lambda: Uniform(keep=2),
}


@pytest.fixture(scope="module", params=["glm4v", "glm4v_moe", "glm46v", "glm_ocr"])
def model(request):
    return tm.glm4v(moe=request.param == "glm4v_moe", glm46v=request.param == "glm46v", ocr=request.param == "glm_ocr")


def _inputs(padding_side="left"):
    rows = [[("image", IMAGES[0])], [("image", IMAGES[1]), ("image", IMAGES[2])]]
    ids, mask, types = tm.qwen_prompts(rows, padding_side=padding_side)
    return dict(
        input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
        pixel_values=tm.qwen_pixels(IMAGES, seed=2), image_grid_thw=torch.tensor(IMAGES),
    )


def _hand(model, method, inputs):
    media, first = [], 0
    for grid in inputs["image_grid_thw"]:
        n = int(grid.prod())
        media.append(dict(pixels=inputs["pixel_values"][first : first + n], grid=grid, kind="image"))
        first += n
    keep = hand_keep(model, method, media)
    return keep, [(k, "image") for k in keep]


def test_tower_run_and_merge_are_the_models_own(model):
    """Every block's output, merged by ``glm4v_merge`` (norm, 2x2 convolution, MLP), is bit for bit the
    model's own image features."""
    tower = describe_tower(model.model.visual)
    grid = torch.tensor(IMAGES)
    pixels = tm.qwen_pixels(IMAGES)
    with torch.no_grad():
        want = model.model.get_image_features(pixels, grid)
        run = run_tower(tower, pixels, grid, range(tower.num_layers), backend=BACKEND)
        assert torch.equal(merge_kept(tower.merger, run.merged, tower.hidden_size), torch.cat(want.pooler_output))
    assert tower.full_attention_layers == tuple(range(4)) and not tower.windowed and not tower.deepstack_layers


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep, tagged = _hand(model, method, inputs)
    handle = assert_forward_matches_hand(model, method, inputs, tagged)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == [15, 6, 4]


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=100, step=2), Uniform(keep=100)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method


def test_generate_matches_hand_greedy_steps(model):
    """Different kept counts per row (HIVTP), left padding: every decoding step's logits equal the hand
    pipeline's, whose new tokens sit at the unpruned max position + 1, + 2, ..."""
    method = HIVTP(layers=(1, 3), region_ratio=0.5)
    inputs = _inputs()
    assert_generate_matches_hand(model, method, inputs, _hand(model, method, inputs)[1])


def test_right_padding(model):
    method = Uniform(keep=3)
    inputs = _inputs(padding_side="right")
    assert_right_padded_forward_matches_hand(model, method, inputs, _hand(model, method, inputs)[1])


def test_ptp_and_images_with_videos_in_one_call_are_refused(model):
    inputs = _video_inputs()
    inputs.update(pixel_values=tm.qwen_pixels(IMAGES[:1]), image_grid_thw=torch.tensor(IMAGES[:1]))
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="images and videos in separate calls"):
            model(**inputs)
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match=r"PTP needs a vision tower with a \[CLS\] token"):
            model(**_inputs())


# -- videos: each frame written as an image (image placeholders between its delimiters and timestamp),
# typed 2 by the processor; the tower encodes each frame as an image of its own
VIDEOS = [(2, 4, 6), (3, 4, 4)]


def _video_inputs(padding_side="left"):
    rows = [[("video", VIDEOS[0])], [("video", VIDEOS[1])]]
    ids, mask, types = tm.qwen_prompts(rows, per_frame_runs=True, padding_side=padding_side, video_token=tm.IMAGE_TOKEN)
    return dict(
        input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
        pixel_values_videos=tm.qwen_pixels(VIDEOS, seed=5), video_grid_thw=torch.tensor(VIDEOS),
    )


def _hand_videos(model, method, inputs):
    media, first = [], 0
    for grid in inputs["video_grid_thw"]:
        n = int(grid.prod())
        media.append(dict(pixels=inputs["pixel_values_videos"][first : first + n], grid=grid, kind="video"))
        first += n
    keep = hand_keep(model, method, media)
    return keep, [(k, "video") for k in keep]


@pytest.mark.parametrize("method_name", list(METHODS))
def test_videos_match_hand_pipeline(model, method_name):
    """Per frame budgets; every kept frame token keeps its unpruned M-RoPE position (frames apart, at
    their timestamps' text positions)."""
    method = METHODS[method_name]()
    inputs = _video_inputs()
    keep, tagged = _hand_videos(model, method, inputs)
    handle = assert_forward_matches_hand(model, method, inputs, tagged)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == [2 * 6, 3 * 4]


def test_videos_keeping_everything_give_the_unpruned_logits(model):
    inputs = _video_inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        with apply(model, VisPruner(keep=100, step=2), backend=BACKEND):
            assert torch.equal(model(**inputs).logits, unpruned)


def test_videos_generate_and_without_mm_token_type_ids(model):
    method = HIVTP(layers=(1, 3), region_ratio=0.5)
    inputs = _video_inputs()
    tagged = _hand_videos(model, method, inputs)[1]
    assert_generate_matches_hand(model, method, inputs, tagged)
    assert_forward_matches_hand(model, method, inputs, tagged, drop=("mm_token_type_ids",))


def test_without_mm_token_type_ids(model):
    """The processor's mm_token_type_ids left out: derived from the image placeholders."""
    method = Random(keep=2, seed=1)
    inputs = _inputs()
    assert_forward_matches_hand(model, method, inputs, _hand(model, method, inputs)[1], drop=("mm_token_type_ids",))
