"""apply() on Gemma 3: selection on the projector's average-pooled grid (8x8 patches -> 4x4 tokens here),
image blocks kept bidirectional in the language model (``token_type_ids``).

The hand pipeline: scores from an eager copy's attention maps, pooled with ``avg_pool2d`` written here;
features from the tower's ``last_hidden_state``; the methods' own ``select``; kept features are rows of
the model's own ``get_image_features``. The expected logits come from the UNMODIFIED model run on a
hand-built shortened prompt (its own bidirectional image masks from hand-built ``token_type_ids``),
with those features passed as ``mm_encoder_outputs``.
"""
import pytest
import torch
import torch.nn.functional as F

import tiny_models as tm
from integration_oracles import BACKEND, assert_matches_unmodified, eager_copy, method_keep, method_scores, split_rows, tower_maps
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply

P, SIDE = 8, 4  # 8x8 patches pooled 2x2 to 4x4
T = SIDE * SIDE
METHODS = {
    "vispruner": lambda: VisPruner(keep=5, step=2),
    "vispruner-layer": lambda: VisPruner(keep=6, step=1, important_ratio=0.3, score_layer=0),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=4, seed=2),
    "uniform": lambda: Uniform(keep=3),
}
IMAGES_PER_ROW = [1, 2]


@pytest.fixture(scope="module")
def model():
    return tm.gemma3()


def _prompt(counts, padding_side="left"):
    ids, mask = tm.make_prompts(counts, wrap_images=True, padding_side=padding_side)
    return ids, mask, (ids == tm.IMAGE_TOKEN).long()


def _inputs(padding_side="left"):
    ids, mask, types = _prompt([[T] * n for n in IMAGES_PER_ROW], padding_side)
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=tm.pixels(3, 112, seed=4))


def _pool(x):
    """[n, T, ...] from per-patch x [n, P*P, ...]: 2x2 average pooling of the 8x8 grid."""
    n = x.shape[0]
    grid = x.reshape(n, P, P, -1).permute(0, 3, 1, 2)
    return F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2).reshape(n, T, *x.shape[2:])


def hand_keep(model, method, pixel_values):
    _, attentions = tower_maps(eager_copy(model), pixel_values)
    last = model.config.vision_config.num_hidden_layers - 1
    _, received = method_scores(method, attentions, last, False)
    with torch.no_grad():
        features = model.model.vision_tower(pixel_values=pixel_values).last_hidden_state
    return method_keep(
        method, grid=(SIDE, SIDE), received=None if received is None else _pool(received), features=_pool(features),
        batch=pixel_values.shape[0],
    )


def hand_inputs(model, inputs, keep, padding_side="left"):
    """The shortened prompt and kept features, built by hand, for the unmodified model."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    with torch.no_grad():
        full = model.model.get_image_features(inputs["pixel_values"]).pooler_output  # [n, T, D]
    ids, mask, types = _prompt(split_rows([int(k.sum()) for k in keep], IMAGES_PER_ROW), padding_side)
    kept = full[keep]  # [K, D], image-major
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types,
                mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=kept[None])})


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
    handle = assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep))
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == [T] * 3


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=T, step=2), Uniform(keep=T)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method


def test_image_blocks_stay_bidirectional(model):
    """The pruned call's token_type_ids mark exactly its kept placeholders (1), so each image's kept
    tokens are one block; without them the logits differ (the test above would notice)."""
    method = Uniform(keep=3)
    inputs = _inputs()
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        pruned = handle.prepare_inputs(**inputs)
    assert torch.equal(pruned["token_type_ids"], (pruned["input_ids"] == tm.IMAGE_TOKEN).long())
    with torch.no_grad():
        with_types = model(**pruned).logits
        without = model(**{k: v for k, v in pruned.items() if k != "token_type_ids"}).logits
    assert not torch.allclose(with_types, without, atol=1e-3)


def test_generate_matches_hand_inputs(model):
    method = HIVTP(layers=(0, 1), region_ratio=0.5)  # rows shrink by different amounts (one and two images)
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
    assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep), generate=True)


def test_right_padding(model):
    method = VisPruner(keep=4, step=2)
    inputs = _inputs(padding_side="right")
    keep = hand_keep(model, method, inputs["pixel_values"])
    expected_inputs = hand_inputs(model, inputs, keep, padding_side="right")
    assert_matches_unmodified(model, method, inputs, expected_inputs, real=expected_inputs["attention_mask"].bool())


def test_ptp_and_bad_pixels_are_clear_errors(model):
    inputs = _inputs()
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match="PTP"):
            model(**inputs)
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="pixel_values must be"):
            model(**{**inputs, "pixel_values": inputs["pixel_values"][None]})
