"""apply() on PaddleOCR-VL: a NaViT tower seeing raster-order patches, the projector's 2x2 merge, M-RoPE.

The batch: row 0 holds one 6x10-patch image (3x5 merged tokens: odd, non-square); row 1 holds a 4x6-patch
image and a 4x4-patch image (two images of one row, different merged grids). Every pruned forward is
compared with the independent hand pipeline of qwen_oracles.py (scores recomputed from each layer's own
q/k projections and rotary embedding, regrouped per 2x2 block as the model's projector groups them;
features from the model's own get_image_features on every token; positions from its get_rope_index).
"""
import pytest
import torch

import tiny_models as tm
from qwen_oracles import (
    BACKEND,
    assert_forward_matches_hand,
    assert_generate_matches_hand,
    assert_right_padded_forward_matches_hand,
    eager_patch_scores,
    hand_keep_of_call,
    hand_logits,
)
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.integrations.paddleocr_vl import describe_paddle_tower
from vtprune_kernels.integrations.qwen_tower import merge_kept, run_tower

IMAGES = [(1, 6, 10), (1, 4, 6), (1, 4, 4)]
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "vispruner-layer": lambda: VisPruner(keep=5, important_ratio=0.4, step=1, score_layer=1),
    "hivtp": lambda: HIVTP(layers=(1, 3), region_ratio=0.5),
    "random": lambda: Random(keep=3, seed=4),
    "uniform": lambda: Uniform(keep=2),
}


@pytest.fixture(scope="module")
def model():
    return tm.paddleocr_vl()


def _inputs(padding_side="left"):
    rows = [[("image", IMAGES[0])], [("image", IMAGES[1]), ("image", IMAGES[2])]]
    ids, mask, types = tm.qwen_prompts(rows, padding_side=padding_side)
    return dict(
        input_ids=ids, attention_mask=mask, mm_token_type_ids=types, pixel_values=tm.paddle_pixels(IMAGES, seed=2),
        image_grid_thw=torch.tensor(IMAGES),
    )


def test_captured_scores_equal_eager_maps(model):
    """Per-image capture, put in merge-block order and pooled, equals dense eager maps of each layer's own q/k."""
    tower = describe_paddle_tower(model.model)
    grid = torch.tensor(IMAGES)
    pixels = tm.paddle_pixels(IMAGES, seed=5)
    for layers in [(0,), (1, 3)]:
        with torch.no_grad():
            run = run_tower(tower, pixels, grid, layers, backend=BACKEND)
        want = eager_patch_scores(model, pixels, grid, layers).view(-1, 4).mean(-1)
        assert run.segments == 3 * len(layers)  # one attention call per image and layer
        torch.testing.assert_close(run.scores, want, atol=1e-6, rtol=1e-5)


def test_tower_run_is_the_models_own_computation(model):
    """post_layernorm + projector on each image's merged tokens of the run give the model's own features bit
    for bit, in its order; the vision config's attention implementation is back afterwards."""
    tower = describe_paddle_tower(model.model)
    grid = torch.tensor(IMAGES)
    pixels = tm.paddle_pixels(IMAGES)
    with torch.no_grad():
        want = model.model.get_image_features(pixels, grid).pooler_output
        run = run_tower(tower, pixels, grid, range(tower.num_layers), backend=BACKEND)
        got = [merge_kept(tower.merger, part, tower.hidden_size) for part in run.merged.split([15, 6, 4])]
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert tower.feature_score_layer() == 3 and tower.middle_layers() == (6, 7, 8, 9) and tower.hidden_size == 32
    assert model.config.vision_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep_of_call(model, method, inputs)
    handle = assert_forward_matches_hand(model, method, inputs, keep)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k, _ in keep]
    assert handle.last_num_tokens == [15, 6, 4]


def test_budgets_are_per_image(model):
    with torch.no_grad(), apply(model, VisPruner(keep=3, step=2), backend=BACKEND) as handle:
        model(**_inputs())
    assert [s.numel() for s in handle.last_selection] == [3, 3, 3]


def test_kept_tokens_keep_their_unpruned_positions(model):
    """The pruned call's position_ids are the model's unpruned get_rope_index columns of the kept tokens
    (text, and the selected placeholders), and its rope_deltas continue from the unpruned max + 1."""
    inputs = _inputs()
    with torch.no_grad(), apply(model, Uniform(keep=2), backend=BACKEND) as handle:
        prepared = handle.prepare_inputs(**inputs)
    full, deltas = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"], attention_mask=inputs["attention_mask"]
    )
    keep = torch.cat([torch.zeros(n, dtype=torch.bool).index_fill_(0, s, True) for n, s in zip([15, 6, 4], handle.last_selection)])
    survive = inputs["attention_mask"].bool()
    survive[inputs["input_ids"] == tm.IMAGE_TOKEN] = keep
    for b in range(2):
        cols = survive[b].nonzero().flatten()
        assert torch.equal(prepared["position_ids"][:, b, -len(cols):], full[:, b, cols])
        new_max = prepared["position_ids"][:, b, -len(cols):].max()
        assert int(model.model.rope_deltas[b]) == int(new_max) + 1 - len(cols) and new_max == full[:, b].max()


def test_keeping_everything_gives_the_unpruned_logits(model):
    """Bit for bit: the projector runs once per image, as the model runs it."""
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=15, step=2), HIVTP(layers=(1,), region_ratio=1.0), Random(keep=15), Uniform(keep=15)):
            with apply(model, method, backend=BACKEND) as handle:
                out = model(**inputs).logits
            assert handle.last_num_tokens == [15, 6, 4] and [s.numel() for s in handle.last_selection] == [15, 6, 4]
            assert torch.equal(out, unpruned), method


def test_generate_matches_hand_greedy_steps(model):
    """Different kept counts per row (HIVTP), left padding: every decoding step's logits equal the hand
    pipeline's, whose new tokens sit at the unpruned max position + 1, + 2, ..."""
    method = HIVTP(layers=(1, 3), region_ratio=0.5)
    inputs = _inputs()
    assert_generate_matches_hand(model, method, inputs, hand_keep_of_call(model, method, inputs))


def test_right_padding_and_no_mm_token_type_ids(model):
    """Right-padded rows, and without the processor's mm_token_type_ids (derived from the placeholders)."""
    method = Uniform(keep=3)
    inputs = _inputs(padding_side="right")
    keep = hand_keep_of_call(model, method, inputs)
    assert_right_padded_forward_matches_hand(model, method, inputs, keep)
    assert_forward_matches_hand(model, method, _inputs(), hand_keep_of_call(model, method, _inputs()), drop=("mm_token_type_ids",))


def test_default_hivtp_and_vispruner_run():
    deep = tm.paddleocr_vl(depth=10)
    for method in (HIVTP(), VisPruner(keep=3)):
        with torch.no_grad(), apply(deep, method, backend=BACKEND) as handle:
            deep(**_inputs())
        assert len(handle.last_selection) == 3


def test_ptp_is_refused(model):
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match=r"PTP needs a vision tower with a \[CLS\] token"):
            model(**_inputs())


def test_bad_inputs(model):
    inputs = _inputs()
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="needs image_grid_thw"):
            model(**{k: v for k, v in inputs.items() if k != "image_grid_thw"})
        with pytest.raises(ValueError, match=r"pixel_values must be flattened patches \[patches, channels, patch, patch\]"):
            model(**dict(inputs, pixel_values=inputs["pixel_values"].flatten(1)))
        with pytest.raises(ValueError, match="implies"):
            model(**dict(inputs, image_grid_thw=torch.tensor([(1, 6, 10), (1, 4, 6), (1, 4, 6)])))
        odd = [(1, 5, 10), (1, 4, 6), (1, 4, 4)]
        with pytest.raises(ValueError, match="merge blocks"):
            model(**dict(inputs, pixel_values=tm.paddle_pixels(odd), image_grid_thw=torch.tensor(odd)))
        other = [(1, 6, 10), (1, 4, 8), (1, 4, 4)]
        with pytest.raises(ValueError, match="placeholders"):
            model(**dict(inputs, pixel_values=tm.paddle_pixels(other), image_grid_thw=torch.tensor(other)))
