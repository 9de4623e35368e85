"""apply()'s argument checks and the ways out: a method class or an unknown backend is refused at
apply(); ``vtprune_kernels.remove(model)`` restores a model whose handle was dropped; layer
indices a model lacks name the method's argument; negative layer indices count from the end."""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND
from vtprune_kernels import HIVTP, PTP, VisPruner, apply, remove


@pytest.fixture(scope="module")
def llava():
    return tm.llava_clip()  # 4 vision layers, feature layer -2


@pytest.fixture(scope="module")
def internvl():
    return tm.internvl()  # 3 vision layers, 2 LLM blocks


def _llava_inputs():
    ids, mask = tm.make_prompts([[25], [25]])
    return dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(2, 70, seed=4))


def _internvl_inputs():
    ids, mask = tm.make_prompts([[27], [9]], wrap_images=True)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(4, 84, seed=7))


def test_a_method_class_is_refused_at_apply(llava):
    with pytest.raises(TypeError, match=r"VisPruner\(\.\.\.\), not the class"):
        apply(llava, VisPruner)
    assert "forward" not in llava.__dict__


@pytest.mark.parametrize("backend", ["bogus", "cuda"])  # "cuda" names the selection ops' kernels, not a scoring backend
def test_an_unknown_backend_is_refused_at_apply(llava, backend):
    with pytest.raises(ValueError, match="backend must be one of"):
        apply(llava, VisPruner(keep=4), backend=backend)
    assert "forward" not in llava.__dict__


def test_remove_restores_a_model_whose_handle_was_dropped(llava):
    inputs = _llava_inputs()
    with torch.no_grad():
        before = llava(**inputs).logits
        apply(llava, VisPruner(keep=4, step=2), backend=BACKEND)  # handle dropped
        assert llava(**inputs).logits.shape[1] < before.shape[1]
        assert remove(llava) is True
        assert torch.equal(llava(**inputs).logits, before)
    assert "forward" not in llava.__dict__ and "generate" not in llava.__dict__
    assert remove(llava) is False  # nothing left to remove
    with apply(llava, VisPruner(keep=4)):  # and the model takes a new handle
        pass


@pytest.mark.parametrize(
    "method, match",
    [
        (HIVTP(), r"HIVTP\(layers=None \(the paper's layers \(6, 7, 8, 9\)\)\): layer 6 does not exist in this 4-layer"),
        (HIVTP(layers=(6, 7)), r"HIVTP\(layers=\(6, 7\)\): layer 6 does not exist in this 4-layer vision tower.*pass layers="),
        (HIVTP(layers=(0, -5)), r"layer -5 does not exist.*-4\.\.-1"),
    ],
)
def test_layers_the_tower_lacks_name_the_argument(llava, method, match):
    with apply(llava, method, backend=BACKEND), pytest.raises(ValueError, match=match):
        llava(**_llava_inputs())


@pytest.mark.parametrize(
    "method, match",
    [
        (PTP(), r"PTP\(vision_layer=8\): layer 8 does not exist in this 3-layer vision tower.*pass vision_layer="),
        (PTP(vision_layer=1, llm_layer=2), r"PTP\(llm_layer=2\): .* 2-layer language model.*pass llm_layer="),
    ],
)
def test_ptp_layers_the_model_lacks_name_the_argument(internvl, method, match):
    with apply(internvl, method, backend=BACKEND), pytest.raises(ValueError, match=match):
        internvl(**_internvl_inputs())


def _selection(model, method, inputs):
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        model(**inputs)
    return [s.tolist() for s in handle.last_selection]


def test_negative_layer_indices_count_from_the_end(llava, internvl):
    inputs = _llava_inputs()
    assert _selection(llava, HIVTP(layers=(-4, -3, 2)), inputs) == _selection(llava, HIVTP(layers=(0, 1, 2)), inputs)
    inputs = _internvl_inputs()
    assert _selection(internvl, PTP(vision_layer=-2, llm_layer=-1), inputs) == _selection(
        internvl, PTP(vision_layer=1, llm_layer=1), inputs
    )
