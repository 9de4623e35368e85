"""apply() on PaliGemma: selection on the 6x6 patch grid (every patch is a token), the prefix kept one
bidirectional block (``token_type_ids`` 0) with a causal suffix (1).

As for Gemma 3 (test_integration_gemma3.py): scores from an eager copy's attention maps, features from
the tower's ``last_hidden_state``, the methods' own ``select``; the expected logits come from the
UNMODIFIED model on a hand-built shortened prompt (its own prefix mask from hand-built
``token_type_ids``), with the kept rows of its own ``get_image_features`` as ``mm_encoder_outputs``."""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND, assert_matches_unmodified, eager_copy, method_keep, method_scores, tower_maps
from vtprune_kernels import HIVTP, Random, Uniform, VisPruner, apply

T = 36
METHODS = {
    "vispruner": lambda: VisPruner(keep=7, step=2),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=5, seed=3),
    "uniform": lambda: Uniform(keep=6),
}
SUFFIX = 2  # the last tokens of each row are the causal suffix


@pytest.fixture(scope="module")
def model():
    return tm.paligemma()


def _prompt(counts):
    ids, mask = tm.make_prompts(counts, text_before=0)
    types = torch.zeros_like(ids)
    types[:, -SUFFIX:] = 1
    return ids, mask, types


def _inputs():
    ids, mask, types = _prompt([[T], [T]])
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=tm.pixels(2, 84, seed=6))


def hand_keep(model, method, pixel_values):
    _, attentions = tower_maps(eager_copy(model), pixel_values)
    _, received = method_scores(method, attentions, model.config.vision_config.num_hidden_layers - 1, False)
    with torch.no_grad():
        features = model.model.vision_tower(pixel_values=pixel_values).last_hidden_state
    return method_keep(method, grid=(6, 6), received=received, features=features, batch=pixel_values.shape[0])


def hand_inputs(model, inputs, keep):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    with torch.no_grad():
        full = model.model.get_image_features(inputs["pixel_values"]).pooler_output  # [n, T, D]
    ids, mask, types = _prompt([[int(k.sum())] for k in keep])
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types,
                mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=full[keep][None])})


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
    handle = assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep))
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        with apply(model, VisPruner(keep=T, step=2), backend=BACKEND):
            assert torch.equal(model(**inputs).logits, unpruned)


def test_generate_matches_hand_inputs(model):
    method = HIVTP(layers=(0, 2), region_ratio=0.5)
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
    assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep), generate=True)
