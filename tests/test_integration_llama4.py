"""apply() on Llama 4: tiles whose [CLS] token is appended LAST, pixel-shuffled 0.5 (8x8 patches -> 4x4 tokens here).

The hand pipeline: scores from an eager copy's attention maps (the [CLS] row is the last row, its
column the last column), pooled 2x2 with ``avg_pool2d`` written here; features: the tower's last
hidden state after ``layernorm_post``, [CLS] dropped, every 2x2 block concatenated by hand; the
methods' own ``select``; kept features are rows of the model's own ``get_image_features`` (the
tower's adapter output, which the model projects). ``prepare_inputs`` must give the hand-built
shortened prompt and those features. The logits are compared with the UNMODIFIED model on the hand
inputs where the installed transformers can run Llama 4's forward at all (5.24's
``Llama4ForConditionalGeneration.forward`` reads ``image_outputs`` from the language model's output,
which has none: an upstream bug; the vLLM tests run the whole path on transformers 5.19).
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND, blocks_2x2, eager_copy, method_keep, pooled_2x2, split_rows
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.methods.pixel_shuffle_pooling import pixel_shuffle_pool

P, SIDE = 8, 4  # 8x8 patches per tile, shuffled to 4x4 tokens
T = SIDE * SIDE
TILES_PER_ROW = [1, 2]  # prompt rows: one tile, then two tiles (of one image or two)
METHODS = {
    "vispruner": lambda: VisPruner(keep=5, step=2),
    "vispruner-layer": lambda: VisPruner(keep=6, step=1, important_ratio=0.3, score_layer=0),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=4, seed=2),
    "uniform": lambda: Uniform(keep=3),
}


@pytest.fixture(scope="module")
def model():
    return tm.llama4()


def _forward_works(model) -> bool:
    """Whether this transformers' Llama 4 forward runs (see the module doc)."""
    ids, mask = tm.make_prompts([[T]])
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(1, 112, seed=9))
    except AttributeError as error:
        if "image_outputs" not in str(error):
            raise
        return False
    return True


def _inputs(padding_side="left"):
    ids, mask = tm.make_prompts([[T] * n for n in TILES_PER_ROW], padding_side=padding_side)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(sum(TILES_PER_ROW), 112, seed=4))


def hand_keep(model, method, pixel_values):
    vision = eager_copy(model).vision_model
    with torch.no_grad():
        out = vision(pixel_values, output_attentions=True, output_hidden_states=True)
    attentions, last = out.attentions, model.config.vision_config.num_hidden_layers - 1
    cls_attn = received = None
    if isinstance(method, VisPruner):
        layer = last if method.score_layer is None else method.score_layer
        cls_attn = pooled_2x2(attentions[layer][:, :, -1, :-1].mean(1), (P, P))  # the [CLS] (last) row, patches only
    elif isinstance(method, HIVTP):
        received = pooled_2x2(torch.stack([attentions[i].mean(dim=(1, 2)) for i in method.layers]).mean(0)[:, :-1], (P, P))
    with torch.no_grad():
        features = blocks_2x2(model.vision_model.layernorm_post(out.hidden_states[-1])[:, :-1], (P, P))
    return method_keep(method, grid=(SIDE, SIDE), cls_attn=cls_attn, received=received, features=features,
                       batch=pixel_values.shape[0])


def hand_inputs(model, inputs, keep, padding_side="left"):
    """The shortened prompt and the kept adapter features, built by hand."""
    ids, mask = tm.make_prompts(split_rows([int(k.sum()) for k in keep], TILES_PER_ROW), padding_side=padding_side)
    with torch.no_grad():
        full = model.get_image_features(inputs["pixel_values"]).last_hidden_state  # [tiles, T, D]
    return ids, mask, full[keep]


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_inputs_match_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
    ids, mask, kept = hand_inputs(model, inputs, keep)
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        pruned = handle.prepare_inputs(**inputs)
    assert torch.equal(pruned["input_ids"], ids) and torch.equal(pruned["attention_mask"], mask)
    torch.testing.assert_close(pruned["mm_encoder_outputs"]["image"].last_hidden_state, kept, atol=1e-5, rtol=1e-5)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == [T] * sum(TILES_PER_ROW)


def test_pixel_shuffle_groups_2x2_blocks_in_raster_order():
    """The model's own pixel shuffle on a tracer (channel 0 = patch index): the four patches of every
    token are the ones ``pixel_shuffle_pool`` (the pruning's scores) averages."""
    from transformers.models.llama4.modeling_llama4 import pixel_shuffle

    x = torch.zeros(1, P * P, 4)
    x[0, :, 0] = torch.arange(P * P, dtype=torch.float32)
    shuffled = pixel_shuffle(x, 0.5)  # [1, T, 16]: 4 channels of each of the 4 patches
    per_patch = shuffled.view(1, T, 4, 4)[..., 0]  # channel 0 of each patch: its index
    torch.testing.assert_close(per_patch.mean(-1), pixel_shuffle_pool(torch.arange(P * P, dtype=torch.float32)[None], (P, P), 2))


def test_keeping_everything_gives_the_unpruned_inputs(model):
    inputs = _inputs()
    with torch.no_grad():
        full = model.get_image_features(inputs["pixel_values"]).last_hidden_state.flatten(0, 1)
        for method in (VisPruner(keep=T, step=2), Uniform(keep=T)):
            with apply(model, method, backend=BACKEND) as handle:
                pruned = handle.prepare_inputs(**inputs)
            assert torch.equal(pruned["input_ids"], inputs["input_ids"])
            assert torch.equal(pruned["mm_encoder_outputs"]["image"].last_hidden_state, full), method


def test_pruned_forward_and_generate_match_the_unmodified_model(model):
    if not _forward_works(model):
        pytest.skip("this transformers' Llama4ForConditionalGeneration.forward fails without pruning (upstream bug)")
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    method = HIVTP(layers=(0, 1), region_ratio=0.5)
    inputs = _inputs()
    ids, mask, kept = hand_inputs(model, inputs, hand_keep(model, method, inputs["pixel_values"]))
    hand = dict(input_ids=ids, attention_mask=mask, mm_encoder_outputs={"image": BaseModelOutputWithPooling(last_hidden_state=kept)})
    args = dict(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        expected, expected_gen = model(**hand).logits, model.generate(**hand, **args)
        with apply(model, method, backend=BACKEND):
            got, got_gen = model(**inputs).logits, model.generate(**inputs, **args)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(got_gen.sequences[:, -3:], expected_gen.sequences[:, -3:])


def test_bad_calls_are_clear_errors(model):
    inputs = _inputs()
    with apply(model, PTP(vision_layer=1, llm_layer=0)) as handle:
        with pytest.raises(ValueError, match="PTP"):
            handle.prepare_inputs(**inputs)
    with apply(model, Uniform(keep=2)) as handle:
        with pytest.raises(ValueError, match="pixel_values must be"):
            handle.prepare_inputs(**{**inputs, "pixel_values": inputs["pixel_values"][None]})
