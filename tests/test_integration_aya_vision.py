"""apply() on Aya Vision and Cohere2 Vision (Command A Vision): SigLIP tiles (8x8 patches here) pixel-shuffled
2 -> 4x4 tokens, a SwiGLU projector; Cohere2 Vision's projector reads the tower's last_hidden_state (after
SigLIP's post_layernorm), Aya Vision's the last layer's raw output.

The hand pipeline: received attention from an eager copy's attention maps pooled 2x2 with
``avg_pool2d`` written here; features: the feature layer's output with every 2x2 block
concatenated by hand; the methods' own ``select`` per tile; kept features are rows of the model's
own ``get_image_features``. The expected logits come from the UNMODIFIED model on a hand-built
shortened prompt with those features as ``mm_encoder_outputs``.
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND, assert_matches_unmodified, blocks_2x2, eager_copy, method_keep, method_scores, pooled_2x2, split_rows, tower_maps
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.methods.pixel_shuffle_pooling import pixel_shuffle_pool

P, SIDE = 8, 4  # 8x8 patches per tile, shuffled to 4x4 tokens
T = SIDE * SIDE
TILES_PER_ROW = [1, 2]
METHODS = {
    "vispruner": lambda: VisPruner(keep=5, step=2),
    "vispruner-layer": lambda: VisPruner(keep=6, step=1, important_ratio=0.3, score_layer=0),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=4, seed=2),
    "uniform": lambda: Uniform(keep=3),
}


@pytest.fixture(scope="module", params=["aya_vision", "cohere2_vision"])
def model(request):
    return getattr(tm, request.param)()


def projector_input(model, last_hidden):
    """What the model's projector takes from the tower's last layer output [n, P*P, C]."""
    if type(model).__name__ == "Cohere2VisionForConditionalGeneration":
        return model.model.vision_tower.post_layernorm(last_hidden)
    return last_hidden


def _inputs(padding_side="left"):
    ids, mask = tm.make_prompts([[T] * n for n in TILES_PER_ROW], padding_side=padding_side)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(sum(TILES_PER_ROW), 112, seed=4))


def hand_keep(model, method, pixel_values):
    hidden, attentions = tower_maps(eager_copy(model), pixel_values)
    last = model.config.vision_config.num_hidden_layers - 1
    _, received = method_scores(method, attentions, last, False)
    return method_keep(method, grid=(SIDE, SIDE), received=None if received is None else pooled_2x2(received, (P, P)),
                       features=blocks_2x2(projector_input(model, hidden[-1]), (P, P)), batch=pixel_values.shape[0])


def hand_inputs(model, inputs, keep, padding_side="left"):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    ids, mask = tm.make_prompts(split_rows([int(k.sum()) for k in keep], TILES_PER_ROW), padding_side=padding_side)
    with torch.no_grad():
        full = model.model.get_image_features(inputs["pixel_values"]).pooler_output  # [tiles, T, D]
    return dict(input_ids=ids, attention_mask=mask, mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=full[keep])})


def test_pixel_shuffle_groups_2x2_blocks_in_raster_order(model):
    """The projector's own pixel shuffle on a tracer (channel 0 = patch index): each token's four
    patches are the ones ``pixel_shuffle_pool`` averages."""
    x = torch.zeros(1, P * P, 4)
    x[0, :, 0] = torch.arange(P * P, dtype=torch.float32)
    shuffled = model.model.multi_modal_projector.pixel_shuffle(x).reshape(1, T, 4, 4)
    torch.testing.assert_close(shuffled[..., 0].mean(-1), pixel_shuffle_pool(torch.arange(P * P, dtype=torch.float32)[None], (P, P), 2))


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
    handle = assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep))
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == [T] * sum(TILES_PER_ROW)


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=T, step=2), Uniform(keep=T)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method


def test_generate_and_right_padding_match_hand_inputs(model):
    method = HIVTP(layers=(0, 1), region_ratio=0.5)
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
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
        with pytest.raises(ValueError, match="pixel_values must be"):
            model(**{**inputs, "pixel_values": inputs["pixel_values"][None]})
        if type(model).__name__ == "AyaVisionForConditionalGeneration":
            with pytest.raises(ValueError, match="vision_feature_select_strategy='default'"):
                model(**inputs, vision_feature_select_strategy="default")
