"""A pruned model's deep copies are unpruned; non-finite pixel values warn once per handle."""
import copy
import warnings

import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND
from vtprune_kernels import Random, Uniform, VisPruner, apply


@pytest.fixture(scope="module")
def model():
    return tm.llava_clip()


def _inputs(n_images=1):
    ids, mask = tm.make_prompts([[25]] * n_images)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(n_images, 70))


def test_deepcopy_inside_the_block_is_an_unpruned_independent_model(model):
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        with apply(model, Uniform(keep=4), backend=BACKEND):
            pruned = model(**inputs).logits
            clone = copy.deepcopy(model)
            assert "forward" not in clone.__dict__ and "generate" not in clone.__dict__
            assert "__deepcopy__" not in clone.__dict__
            torch.testing.assert_close(clone(**inputs).logits, unpruned)  # unpruned inside the block
            assert model(**inputs).logits.shape == pruned.shape  # the original stays pruned
            # the copy runs its own weights: changing them changes its output, not the original's
            with torch.no_grad():
                clone.lm_head.weight.mul_(2)
            assert not torch.allclose(clone(**inputs).logits, unpruned)
            torch.testing.assert_close(model(**inputs).logits, pruned)
        after = clone(**inputs).logits  # and after the block
        assert after.shape == unpruned.shape
    assert "__deepcopy__" not in model.__dict__  # the handle's attributes are gone with it
    apply(model, Random(keep=3)).remove()  # the clone holds no handle on the original


def test_deepcopy_keeps_instance_attributes_the_handle_replaced():
    model = tm.llava_clip()
    own_forward = model.forward  # a bound method stored on the instance, as some wrappers do
    model.forward = own_forward
    with apply(model, Uniform(keep=4), backend=BACKEND):
        clone = copy.deepcopy(model)
    assert clone.__dict__["forward"].__self__ is clone  # rebound to the copy, not the original
    inputs = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(clone(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixel_values_warn_once_per_handle(model, bad):
    inputs = _inputs(2)
    inputs["pixel_values"][1, 0, 3, 5] = bad
    with torch.no_grad(), apply(model, VisPruner(keep=5, step=2), backend=BACKEND) as handle:
        with pytest.warns(RuntimeWarning, match="pixel_values contain NaN or infinite"):
            handle.prepare_inputs(**inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second bad call in the same handle: silent
            handle.prepare_inputs(**inputs)
    with torch.no_grad(), apply(model, VisPruner(keep=5, step=2), backend=BACKEND) as handle:
        with pytest.warns(RuntimeWarning, match="NaN or infinite"):  # a new handle warns again
            handle.prepare_inputs(**inputs)


def test_finite_pixel_values_do_not_warn(model):
    with torch.no_grad(), apply(model, Random(keep=5), backend=BACKEND) as handle, warnings.catch_warnings():
        warnings.simplefilter("error")
        handle.prepare_inputs(**_inputs(2))
    assert handle.last_host_syncs == 0  # on the CPU the check adds no synchronisation
