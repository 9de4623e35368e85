"""apply() on LLaVA-1.5 (CLIP tower with [CLS]), LLaVA with a SigLIP tower (no [CLS]) and LLaVA
with a DINOv2 tower (with [CLS]).

Each pruned forward is compared with an independent hand-pruned pipeline (integration_oracles):
eager attention maps of a copy of the tower, the method's own select, the language model on the
hand-built shorter prompt.
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import (
    BACKEND,
    assert_pruned_forward_matches,
    eager_copy,
    hand_greedy_logits,
    method_keep,
    method_scores,
    tower_maps,
)
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply

METHODS = {
    "vispruner": lambda: VisPruner(keep=7, important_ratio=0.5, step=2),
    "hivtp": lambda: HIVTP(layers=(0, 1, 2)),
    "random": lambda: Random(keep=6, seed=3),
    "uniform": lambda: Uniform(keep=4),
}
BUILDERS = {"clip": tm.llava_clip, "siglip": tm.llava_siglip, "dinov2": tm.llava_dinov2}


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, build in BUILDERS.items()}


def _inputs(model, n_images=2, seed=1):
    grid = model.config.vision_config.image_size // 14
    ids, mask = tm.make_prompts([[grid * grid]] * n_images, padding_side="left")
    return ids, mask, tm.pixels(n_images, model.config.vision_config.image_size, seed=seed)


def _hand_pruned(model, method, ids, mask, px):
    """(keep [B, N], per-image projected kept features) by the independent pipeline."""
    has_cls = "Siglip" not in type(model.model.vision_tower).__name__
    n_layers = model.config.vision_config.num_hidden_layers
    feature_layer = model.config.vision_feature_layer % (n_layers + 1) - 1
    hidden, attentions = tower_maps(eager_copy(model), px)
    features = hidden[feature_layer + 1][:, 1:] if has_cls else hidden[feature_layer + 1]
    grid = (round(features.shape[1] ** 0.5),) * 2
    cls_attn, received = method_scores(method, attentions, feature_layer, has_cls)
    keep = method_keep(method, grid=grid, cls_attn=cls_attn, received=received, features=features, batch=px.shape[0])
    projected = [model.model.multi_modal_projector(f[k]) for f, k in zip(features, keep)]
    return keep, projected


@pytest.mark.parametrize("tower", list(BUILDERS))
@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(models, tower, method_name):
    model = models[tower]
    method = METHODS[method_name]()
    ids, mask, px = _inputs(model)
    keep, projected = _hand_pruned(model, method, ids, mask, px)
    selections = [k.nonzero().flatten().tolist() for k in keep]
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px)
    assert_pruned_forward_matches(model, method, inputs, projected, selections, [keep.shape[1]] * keep.shape[0])


@pytest.mark.parametrize("tower", ["clip", "siglip"])
@pytest.mark.parametrize("score_layer", [None, -1, 0])
def test_vispruner_score_layer_on_a_tower_scored_after_its_feature_layer(tower, score_layer):
    """Feature layer -2 of 3: score_layer=None scores it (layer 1), -1 the last layer (2, what the
    published code does on SigLIP), 0 an earlier one; the features always come from layer 1."""
    model = BUILDERS[tower](vision_layers=3, feature_layer=-2)
    method = VisPruner(keep=5, step=2, score_layer=score_layer)
    ids, mask, px = _inputs(model)
    keep, projected = _hand_pruned(model, method, ids, mask, px)
    selections = [k.nonzero().flatten().tolist() for k in keep]
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px)
    assert_pruned_forward_matches(model, method, inputs, projected, selections, [keep.shape[1]] * keep.shape[0])


def test_vispruner_score_layer_out_of_range_is_a_clear_error(models):
    model = models["siglip"]
    ids, mask, px = _inputs(model)
    match = r"VisPruner\(score_layer=-9\): layer -9 does not exist"
    with apply(model, VisPruner(keep=3, score_layer=-9)), pytest.raises(ValueError, match=match):
        model(input_ids=ids, attention_mask=mask, pixel_values=px)


def test_generate_batch_with_different_kept_counts(models):
    """HIVTP keeps a data-dependent count: two images with different counts in one generate call."""
    model = models["clip"]
    method = HIVTP(layers=(0, 1, 2), region_ratio=0.5)
    ids, mask, px = _inputs(model, seed=2)
    keep, projected = _hand_pruned(model, method, ids, mask, px)
    counts = keep.sum(1).tolist()
    assert counts[0] != counts[1], f"test precondition: the two images must keep different counts, got {counts}"
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        gen = model.generate(
            input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=3, do_sample=False,
            output_logits=True, return_dict_in_generate=True,
        )
    assert [len(s) for s in handle.last_selection] == counts
    new_tokens = gen.sequences[:, -3:]
    expected = hand_greedy_logits(model, ids, mask, projected, tm.IMAGE_TOKEN, new_tokens)
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the sequences start with the caller's prompt; the model ran on one with the kept placeholders
    assert torch.equal(gen.sequences[:, : ids.shape[1]], ids)
    assert handle.last_prompt_length == ids.shape[1] - 25 + max(counts)


def test_right_padding_and_labels(models):
    model = models["clip"]
    method = VisPruner(keep=5, step=2)
    ids, mask = tm.make_prompts([[25], [25]], padding_side="right")
    px = tm.pixels(2, 70)
    labels = torch.where(ids == tm.IMAGE_TOKEN, torch.full_like(ids, -100), ids).masked_fill(mask == 0, -100)
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        inputs = handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values=px, labels=labels)
        out = model(input_ids=ids, attention_mask=mask, pixel_values=px, labels=labels)
    new_mask = inputs["attention_mask"]
    assert bool(new_mask[:, 0].all()), "right padding must stay right padding"
    assert (inputs["input_ids"] == tm.IMAGE_TOKEN).sum(1).tolist() == [5, 5]
    # labels lose the same positions: the kept text labels are the kept text tokens
    kept_text = (inputs["input_ids"] != tm.IMAGE_TOKEN) & new_mask.bool()
    assert torch.equal(inputs["labels"][kept_text], inputs["input_ids"][kept_text])
    assert bool((inputs["labels"][~new_mask.bool()] == -100).all())
    assert out.loss is not None and torch.isfinite(out.loss)


def test_tower_stops_at_feature_layer(models):
    """Feature layer -2 of 4 layers = layer 2: layer 3 never runs for VisPruner/Random; HIVTP on
    layers (0, 1, 2) also stops there."""
    model = models["clip"]
    layers = model.model.vision_tower.encoder.layers
    calls = [0] * len(layers)
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1)) for i, layer in enumerate(layers)]
    try:
        ids, mask, px = _inputs(model)
        for method in (VisPruner(keep=5, step=2), HIVTP(layers=(0, 1, 2)), Random(keep=3)):
            with torch.no_grad(), apply(model, method, backend=BACKEND):
                model(input_ids=ids, attention_mask=mask, pixel_values=px)
        assert calls == [3, 3, 3, 0]
        # a method scoring a layer after the feature layer runs the tower to that layer, not further
        deep = tm.llava_clip(feature_layer=-4)  # feature layer = encoder layer 0
        deep_layers = deep.model.vision_tower.encoder.layers
        deep_calls = [0] * len(deep_layers)
        for i, layer in enumerate(deep_layers):
            layer.register_forward_hook(lambda m, a, o, i=i: deep_calls.__setitem__(i, deep_calls[i] + 1))
        with torch.no_grad(), apply(deep, HIVTP(layers=(1, 2)), backend=BACKEND):
            deep(input_ids=ids, attention_mask=mask, pixel_values=px)
        assert deep_calls == [1, 1, 1, 0]
    finally:
        for h in hooks:
            h.remove()


def test_hivtp_layers_after_feature_layer_use_features_of_feature_layer(models):
    """Feature layer 0, HIVTP scores layers 1-2: scores from 1-2, features (projected) from layer 0."""
    model = tm.llava_clip(feature_layer=-4)
    method = HIVTP(layers=(1, 2))
    ids, mask, px = _inputs(model)
    keep, projected = _hand_pruned(model, method, ids, mask, px)
    selections = [k.nonzero().flatten().tolist() for k in keep]
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px)
    assert_pruned_forward_matches(model, method, inputs, projected, selections, [25, 25])


def test_ptp_is_rejected_on_llava(models):
    ids, mask, px = _inputs(models["clip"])
    with apply(models["clip"], PTP(vision_layer=1, llm_layer=0), backend=BACKEND):
        with pytest.raises(ValueError, match="PTP.*InternVL"):
            models["clip"](input_ids=ids, attention_mask=mask, pixel_values=px)


def test_wrong_placeholder_count_is_a_clear_error(models):
    model = models["clip"]
    ids, mask = tm.make_prompts([[24], [25]])
    with apply(model, Random(keep=3), backend=BACKEND):
        with pytest.raises(ValueError, match="49 image placeholders.*50 unpruned tokens"):
            model(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(2, 70))


def test_calls_without_images_pass_through(models):
    model = models["siglip"]
    ids, mask = tm.make_prompts([[]], text_after=6)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        with apply(model, Uniform(keep=4), backend=BACKEND) as handle:
            during = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, during)
    assert handle.last_selection is None
