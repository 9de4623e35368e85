"""apply() on MiniCPM-V 4.6: NaViT units (source image, slices, video frames) packed in one sequence, a window
merger inside the tower (2x2 patches -> 1 token after layer 1 here), the MLP merger (2x2 -> 1 token).

The hand pipeline runs the tower on each unit ALONE, recomputes the scored layers' attention maps from their
own q/k projections (the model's attention returns no maps), averages received attention over the patches
(4x4) or window-merged tokens (2x2) under each language-model token by ``avg_pool2d``, concatenates the
tower output's 2x2 blocks by hand for VisPruner, selects with the methods' own ``select`` per unit, and
takes rows of the model's own ``get_image_features`` (the packed run). The expected logits come from the
UNMODIFIED model on a hand-built shortened prompt with those features as ``mm_encoder_outputs``.
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND, assert_matches_unmodified, eager_copy, method_keep, split_rows
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply

UNITS = [(8, 8), (4, 8), (8, 12)]  # patches; language-model tokens 2x2, 1x2, 2x3
TOKENS = [(h // 4) * (w // 4) for h, w in UNITS]
UNITS_PER_ROW = [2, 1]
METHODS = {
    "vispruner": lambda: VisPruner(keep=2, step=2),
    "vispruner-patch-layer": lambda: VisPruner(keep=3, step=1, important_ratio=0.5, score_layer=0),
    "hivtp": lambda: HIVTP(layers=(2, 3), region_ratio=0.5, window=1),
    "random": lambda: Random(keep=2, seed=2),
    "uniform": lambda: Uniform(keep=2),
}


@pytest.fixture(scope="module")
def model():
    return tm.minicpmv4_6()


def _inputs(padding_side="left"):
    ids, mask = tm.make_prompts(split_rows(TOKENS, UNITS_PER_ROW), padding_side=padding_side)
    pixels, sizes = tm.minicpm_patches(UNITS, seed=4)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, target_sizes=sizes)


def _received(attn_module, hidden):
    """[n]: attention each token receives, mean over heads and rows, from the module's own q/k on one unit."""
    n = hidden.shape[1]
    q = attn_module.q_proj(hidden).view(n, attn_module.num_heads, -1).transpose(0, 1).double()
    k = attn_module.k_proj(hidden).view(n, attn_module.num_heads, -1).transpose(0, 1).double()
    return torch.softmax(q @ k.transpose(1, 2) * attn_module.scaling, dim=-1).mean(dim=(0, 1)).float()


def hand_keep(model, method, inputs, layers, units=UNITS):
    """Per unit (``units``: (h, w) patches, packed in ``inputs["pixel_values"]``), the hand-selected keep mask [T]."""
    tower = eager_copy(model).model.vision_tower
    fresh = Random(method.keep, seed=method.seed) if isinstance(method, Random) else method
    keep, start = [], 0
    for h, w in units:
        pixels = inputs["pixel_values"][..., start * 14 : (start + h * w) * 14]
        seen = {}
        hooks = [
            tower.encoder.layers[l].self_attn.register_forward_pre_hook(
                lambda m, args, kwargs, l=l: seen.__setitem__(l, kwargs.get("hidden_states", args[0] if args else None)),
                with_kwargs=True,
            )
            for l in layers
        ]
        with torch.no_grad():
            out = tower(pixels, target_sizes=torch.tensor([[h, w]], dtype=torch.int32))
        for hook in hooks:
            hook.remove()
        grid = (h // 4, w // 4)
        received = None
        if layers:
            per_layer = []
            for l in layers:
                r = _received(tower.encoder.layers[l].self_attn, seen[l])
                side = (h, w) if l <= 1 else (h // 2, w // 2)  # the window merger runs after layer 1
                factor = side[0] // grid[0]
                per_layer.append(torch.nn.functional.avg_pool2d(r.view(1, 1, *side), factor).flatten())
            received = torch.stack(per_layer).mean(0)[None]
        hidden = out.last_hidden_state[0]  # (h/2) x (w/2) window-merged tokens
        blocks = hidden.reshape(h // 4, 2, w // 4, 2, -1).permute(0, 2, 1, 3, 4).reshape(grid[0] * grid[1], -1)
        keep.append(method_keep(fresh, grid=grid, received=received, features=blocks[None], batch=1, replay=False)[0])
        start += h * w
    return keep


def hand_inputs(model, inputs, keep, padding_side="left"):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    with torch.no_grad():
        full = model.model.get_image_features(inputs["pixel_values"], inputs["target_sizes"]).pooler_output
    ids, mask = tm.make_prompts(split_rows([int(k.sum()) for k in keep], UNITS_PER_ROW), padding_side=padding_side)
    kept = [f[k] for f, k in zip(full, keep)]
    return dict(input_ids=ids, attention_mask=mask, mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=kept)})


def _layers(method):
    if isinstance(method, VisPruner):
        return (method.score_layer % 4,) if method.score_layer is not None else (3,)
    return tuple(method.layers) if isinstance(method, HIVTP) else ()


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep(model, method, inputs, _layers(method))
    handle = assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep))
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == TOKENS


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=6, step=2), Uniform(keep=6)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method


def test_video_units_match_hand_pipeline(model):
    """A video's frames are units of the video token, encoded by the model's get_video_features."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    method = VisPruner(keep=2, step=2)
    inputs = _inputs()
    keep = hand_keep(model, method, inputs, _layers(method))
    ids, mask = inputs["input_ids"].clone(), inputs["attention_mask"]
    ids[ids == tm.IMAGE_TOKEN] = tm.VIDEO_TOKEN
    video = dict(input_ids=ids, attention_mask=mask, pixel_values_videos=inputs["pixel_values"], target_sizes_videos=inputs["target_sizes"])
    expected = hand_inputs(model, inputs, keep)
    expected["input_ids"][expected["input_ids"] == tm.IMAGE_TOKEN] = tm.VIDEO_TOKEN
    expected["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=expected["mm_encoder_outputs"]["image"].pooler_output)}
    assert_matches_unmodified(model, method, video, expected)


def test_generate_and_right_padding_match_hand_inputs(model):
    method = HIVTP(layers=(2, 3), region_ratio=0.5, window=1)
    inputs = _inputs()
    keep = hand_keep(model, method, inputs, (2, 3))
    assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep), generate=True)
    right = _inputs(padding_side="right")
    expected = hand_inputs(model, right, keep, padding_side="right")
    assert_matches_unmodified(model, method, right, expected, real=expected["attention_mask"].bool())


def test_bad_calls_are_clear_errors(model):
    inputs = _inputs()
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match="PTP"):
            model(**inputs)
    with apply(model, HIVTP(layers=(1, 2))):
        with pytest.raises(ValueError, match="pick layers on one side"):
            model(**inputs)
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="pruning needs target_sizes"):
            model(**{**inputs, "target_sizes": None})
        with pytest.raises(ValueError, match="whole 4 x 4 blocks"):
            model(**{**inputs, "target_sizes": torch.tensor([[8, 8], [4, 8], [6, 16]], dtype=torch.int32)})
