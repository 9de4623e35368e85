"""apply() on LLaVA-NeXT: per-tile selection among the tokens that survive the model's unpadding,
the model's own packing, newline tokens always kept.

The hand pipeline finds the surviving tokens by packing a (tile, patch) feature map through the
model's own ``pack_image_features``, selects with the methods' ``select(valid=...)``, then packs the
FULL projected features with two extra channels (kept flag, source index) and keeps the packed rows
flagged kept (newlines carry the flag 1): a different mechanism from the integration's index tracer.
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
from vtprune_kernels import HIVTP, Random, Uniform, VisPruner, apply

METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=5, seed=1),
    "uniform": lambda: Uniform(keep=4),
}
IMAGE_SIZES = torch.tensor([[70, 120], [40, 40]])  # (H, W): a wide image (unpadding) and a small square one


@pytest.fixture(scope="module")
def model():
    return tm.llava_next()


def _inputs(model):
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    cfg = model.config
    n_tiles = [image_size_to_num_patches(s, cfg.image_grid_pinpoints, cfg.vision_config.image_size) for s in IMAGE_SIZES]
    px = tm.pixels(2, 42, tiles=max(n_tiles), seed=3)
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values=px, image_sizes=IMAGE_SIZES).pooler_output
    ids, mask = tm.make_prompts([[f.shape[0]] for f in full])
    return ids, mask, px, n_tiles


def surviving_tokens(model, n_tiles, image_sizes, tokens_per_tile):
    """bool [sum(n_tiles), N]: the tokens the model's own pack_image_features keeps (unpadding), found by
    packing a 2-channel (tile, patch) map; and per image the number of newline rows it adds."""
    maps = []
    for t in n_tiles:
        tile = torch.arange(t, dtype=torch.float32)[:, None].expand(t, tokens_per_tile)
        patch = torch.arange(tokens_per_tile, dtype=torch.float32)[None].expand(t, tokens_per_tile)
        maps.append(torch.stack([tile, patch], -1))
    packed, _ = model.model.pack_image_features(maps, image_sizes, "default", image_newline=torch.tensor([-1.0, -1.0]))
    survives, newlines, first = torch.zeros(sum(n_tiles), tokens_per_tile, dtype=torch.bool), [], 0
    for p, t in zip(packed, n_tiles):
        rows = p[p[:, 0] >= 0].long()
        survives[first + rows[:, 0], rows[:, 1]] = True
        newlines.append(int((p[:, 0] < 0).sum()))
        first += t
    return survives, newlines


def hand_pruned_images(model, method, px, n_tiles, image_sizes=IMAGE_SIZES, replay=True):
    """(per-image packed kept features, per-image expected selection) by hand (``replay``: see
    ``method_keep``)."""
    flat = torch.cat([p[:t] for p, t in zip(px, n_tiles)])
    hidden, attentions = tower_maps(eager_copy(model), flat)
    feature_layer = model.config.vision_feature_layer % (model.config.vision_config.num_hidden_layers + 1) - 1
    features = hidden[feature_layer + 1][:, 1:]
    N = features.shape[1]
    cls_attn, received = method_scores(method, attentions, feature_layer, True)
    valid, _ = surviving_tokens(model, n_tiles, image_sizes, N)
    side = int(N**0.5)
    keep = method_keep(
        method, grid=(side, side), cls_attn=cls_attn, received=received, features=features, batch=flat.shape[0],
        valid=valid, replay=replay,
    )
    projected = model.model.multi_modal_projector(features)
    source = torch.arange(flat.shape[0] * N, dtype=torch.float32).view(-1, N, 1)
    per_image, first = [], 0
    for t in n_tiles:
        local = source[first : first + t] - first * N
        per_image.append(torch.cat([projected[first : first + t], keep[first : first + t, :, None].float(), local], -1))
        first += t
    newline = torch.cat([model.model.image_newline, torch.tensor([1.0, -1.0])])
    packed, _ = model.model.pack_image_features(per_image, image_sizes, "default", image_newline=newline)
    kept_features, selections = [], []
    for p in packed:
        kept = p[p[:, -2] == 1]
        kept_features.append(kept[:, :-2])
        selections.append(sorted(int(s) for s in kept[:, -1] if s >= 0))
    return kept_features, selections


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    ids, mask, px, n_tiles = _inputs(model)
    kept_features, selections = hand_pruned_images(model, method, px, n_tiles)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES)
    assert_pruned_forward_matches(model, method, inputs, kept_features, selections, [t * 9 for t in n_tiles])


def test_vispruner_keeps_exactly_keep_among_survivors_and_all_newlines(model):
    ids, mask, px, n_tiles = _inputs(model)
    survives, newlines = surviving_tokens(model, n_tiles, IMAGE_SIZES, 9)
    assert not bool(survives.all())  # the wide image loses tokens to unpadding
    with torch.no_grad(), apply(model, VisPruner(keep=2, step=2), backend=BACKEND) as handle:
        inputs = handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES)
    first = 0
    for sel, t in zip(handle.last_selection, n_tiles):
        per_tile = torch.bincount(sel // 9, minlength=t)
        assert per_tile.tolist() == survives[first : first + t].sum(1).clamp(max=2).tolist()
        first += t
    features = inputs["mm_encoder_outputs"]["image"].pooler_output
    assert handle.last_num_newlines == newlines
    for f, n in zip(features, newlines):
        assert int((f == model.model.image_newline).all(-1).sum()) == n > 0
    assert (inputs["input_ids"] == tm.IMAGE_TOKEN).sum().item() == sum(f.shape[0] for f in features)


def test_generate_batch(model):
    method = VisPruner(keep=3, step=2)
    ids, mask, px, n_tiles = _inputs(model)
    kept_features, _ = hand_pruned_images(model, method, px, n_tiles)
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(
            input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES, max_new_tokens=3,
            do_sample=False, output_logits=True, return_dict_in_generate=True,
        )
    expected = hand_greedy_logits(model, ids, mask, kept_features, tm.IMAGE_TOKEN, gen.sequences[:, -3:])
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
