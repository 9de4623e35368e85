"""apply() on LFM2-VL: SigLIP2 NaFlex tiles (padded at the end, a key mask), pixel unshuffle 2, per-tile selection.

The hand pipeline runs an eager copy of the tower on each tile's REAL patches alone (what the key
mask means): received attention from its maps and its output, both grouped 2 x 2 by hand
(``pooled_2x2``, ``blocks_2x2``); the methods' own ``select`` per tile; kept features are rows of the
model's own ``get_image_features`` (the padded, batched run). The expected logits come from the
UNMODIFIED model on a hand-built shortened prompt with those features as ``mm_encoder_outputs``.
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND, assert_matches_unmodified, blocks_2x2, eager_copy, method_keep, method_scores, pooled_2x2, split_rows
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply

# two full 8x8 tiles (4x4 tokens), a 4x6 thumbnail (2x3), a 6x4 single image (3x2); every tile padded to 64 patches
GRIDS = [(8, 8), (8, 8), (4, 6), (6, 4)]
TOKENS = [(h // 2) * (w // 2) for h, w in GRIDS]
TILES_PER_ROW = [3, 1]
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "vispruner-layer": lambda: VisPruner(keep=5, step=1, important_ratio=0.3, score_layer=0),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5, window=1),
    "random": lambda: Random(keep=3, seed=2),
    "uniform": lambda: Uniform(keep=3),
}


@pytest.fixture(scope="module")
def model():
    return tm.lfm2_vl()


def _inputs(padding_side="left"):
    ids, mask = tm.make_prompts(split_rows(TOKENS, TILES_PER_ROW), padding_side=padding_side)
    pixel_values, shapes, pixel_mask = tm.lfm2_vl_patches(GRIDS, seed=4)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, spatial_shapes=shapes, pixel_attention_mask=pixel_mask)


def hand_keep(model, method, inputs):
    tower = eager_copy(model).model.vision_tower
    last = model.config.vision_config.num_hidden_layers - 1
    fresh = Random(method.keep, seed=method.seed) if isinstance(method, Random) else method
    keep = []
    for i, (h, w) in enumerate(GRIDS):
        n = h * w
        with torch.no_grad():
            out = tower(
                pixel_values=inputs["pixel_values"][i : i + 1, :n], spatial_shapes=inputs["spatial_shapes"][i : i + 1],
                pixel_attention_mask=inputs["pixel_attention_mask"][i : i + 1, :n], output_attentions=True,
            )
        _, received = method_scores(method, out.attentions, last, False)
        keep.append(method_keep(
            fresh, grid=(h // 2, w // 2), received=None if received is None else pooled_2x2(received, (h, w)),
            features=blocks_2x2(out.last_hidden_state, (h, w)), batch=1, replay=False,
        )[0])
    return keep


def hand_inputs(model, inputs, keep, padding_side="left"):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    with torch.no_grad():
        full = model.model.get_image_features(
            inputs["pixel_values"], inputs["spatial_shapes"], inputs["pixel_attention_mask"]
        ).pooler_output
    ids, mask = tm.make_prompts(split_rows([int(k.sum()) for k in keep], TILES_PER_ROW), padding_side=padding_side)
    kept = [f[k] for f, k in zip(full, keep)]
    return dict(input_ids=ids, attention_mask=mask, mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=kept)})


def test_unshuffled_tokens_are_the_projectors_pixel_unshuffle(model):
    from vtprune_kernels.integrations.lfm2_vl import unshuffled_tokens

    x = torch.randn(6 * 4, 32)
    expected = model.model.multi_modal_projector.pixel_unshuffle(x.reshape(1, 6, 4, 32)).reshape(-1, 4 * 32)
    assert torch.equal(unshuffled_tokens(x, (6, 4), 2), expected)


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep(model, method, inputs)
    handle = assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep))
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == TOKENS


def test_keeping_everything_gives_the_unpruned_logits(model):
    """Also under the capture: the padded tower keeps its key mask (VisPruner scores, Uniform does not)."""
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=16, step=2), Uniform(keep=16)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method


def test_generate_and_right_padding_match_hand_inputs(model):
    method = HIVTP(layers=(0, 1), region_ratio=0.5, window=1)
    inputs = _inputs()
    keep = hand_keep(model, method, inputs)
    assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep), generate=True)
    right = _inputs(padding_side="right")
    expected = hand_inputs(model, right, keep, padding_side="right")
    assert_matches_unmodified(model, method, right, expected, real=expected["attention_mask"].bool())


def test_bad_calls_are_clear_errors(model):
    inputs = _inputs()
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match="PTP"):
            model(**inputs)
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="pruning needs spatial_shapes"):
            model(**{**inputs, "spatial_shapes": None})
        with pytest.raises(ValueError, match="spatial_shapes must be"):
            model(**{**inputs, "spatial_shapes": inputs["spatial_shapes"][:2]})
        with pytest.raises(ValueError, match="not whole 2 x 2 blocks"):
            model(**{**inputs, "spatial_shapes": torch.tensor([[8, 8], [8, 8], [5, 6], [6, 4]])})
        with pytest.raises(ValueError, match="pixel_values must be"):
            model(**{**inputs, "pixel_values": inputs["pixel_values"][None]})
