"""LLaVA-NeXT budgets count what reaches the language model: per tile, exactly min(keep, the tile's
tokens that survive the model's own unpadding), on non-square images of several aspect ratios.

Survivors and newline counts come from the model's own ``pack_image_features`` applied to a
(tile, patch) map (``surviving_tokens``), not from the integration's tracer. Tiles are 84 px
(6x6 = 36 tokens), pinpoints up to 2x3 tiles.
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND
from test_integration_llava_next import surviving_tokens
from vtprune_kernels import HIVTP, Random, Uniform, VisPruner, apply

N = 36  # tokens per 84 px tile
# (H, W): wide, very wide, tall, very tall, extreme, square, 1x3 tiles, a sliver whose grid tiles all
# fall in the padding (survivors per tile: [36, 0, 0])
IMAGE_SIZES = torch.tensor(
    [[120, 168], [60, 168], [168, 120], [168, 60], [168, 25], [100, 100], [84, 250], [10, 164]]
)


@pytest.fixture(scope="module")
def model():
    return tm.llava_next(tile=84, vision_layers=2)


@pytest.fixture(scope="module")
def batch(model):
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    cfg = model.config
    n_tiles = [image_size_to_num_patches(s, cfg.image_grid_pinpoints, cfg.vision_config.image_size) for s in IMAGE_SIZES]
    px = tm.pixels(len(IMAGE_SIZES), 84, tiles=max(n_tiles), seed=5)
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values=px, image_sizes=IMAGE_SIZES).pooler_output
    ids, mask = tm.make_prompts([[f.shape[0]] for f in full])
    survives, newlines = surviving_tokens(model, n_tiles, IMAGE_SIZES, N)
    return dict(ids=ids, mask=mask, px=px, n_tiles=n_tiles, full=full, survives=survives, newlines=newlines)


def _prune(model, method, batch):
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        inputs = handle.prepare_inputs(
            input_ids=batch["ids"], attention_mask=batch["mask"], pixel_values=batch["px"], image_sizes=IMAGE_SIZES
        )
    return handle, inputs


def _per_tile(selection, n_tiles):
    return [torch.bincount(sel // N, minlength=t) for sel, t in zip(selection, n_tiles)]


def test_the_cases_cover_whole_partial_and_empty_tiles(batch):
    per_tile = batch["survives"].sum(1)
    assert bool((per_tile == N).any() and ((per_tile > 0) & (per_tile < N)).any() and (per_tile == 0).any())
    assert all(n > 0 for n in batch["newlines"][:-1])
    assert batch["newlines"][-1] == 0  # the sliver's unpadded grid has no row left: no newline either


@pytest.mark.parametrize("keep", [1, 8, 20, 36])
@pytest.mark.parametrize("make", [lambda k: VisPruner(keep=k, step=3), lambda k: Random(keep=k, seed=4), Uniform])
def test_exact_budget_per_tile_among_survivors(model, batch, make, keep):
    handle, inputs = _prune(model, make(keep), batch)
    first = 0
    for image, (sel, t) in enumerate(zip(handle.last_selection, batch["n_tiles"])):
        survives = batch["survives"][first : first + t]
        expected = survives.sum(1).clamp(max=keep)
        assert _per_tile([sel], [t])[0].tolist() == expected.tolist(), f"image {image} {IMAGE_SIZES[image].tolist()}"
        assert bool(survives.reshape(-1)[sel].all())  # nothing the unpadding would throw away
        first += t
    assert handle.last_num_newlines == batch["newlines"]
    pooled = inputs["mm_encoder_outputs"]["image"].pooler_output
    kept = [len(s) for s in handle.last_selection]
    assert [p.shape[0] for p in pooled] == [k + n for k, n in zip(kept, batch["newlines"])]
    assert int((inputs["input_ids"] == tm.IMAGE_TOKEN).sum()) == sum(p.shape[0] for p in pooled)


def test_keeping_every_survivor_reproduces_the_unpruned_image_features(model, batch):
    """keep >= tokens per tile: the pruned image is the model's own packed image, newlines in place."""
    for method in (VisPruner(keep=N), Random(keep=N), Uniform(keep=N)):
        handle, inputs = _prune(model, method, batch)
        for got, want in zip(inputs["mm_encoder_outputs"]["image"].pooler_output, batch["full"]):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_hivtp_selects_inside_each_tile_surviving_rectangle(model, batch):
    handle, _ = _prune(model, HIVTP(layers=(0, 1)), batch)
    first = 0
    for sel, t in zip(handle.last_selection, batch["n_tiles"]):
        survives = batch["survives"][first : first + t]
        assert bool(survives.reshape(-1)[sel].all())
        per_tile = _per_tile([sel], [t])[0]
        # a tile with survivors keeps at least one token per 2x2 window of its rectangle, none without
        assert bool(((per_tile > 0) == (survives.sum(1) > 0)).all())
        first += t
    assert handle.last_num_newlines == batch["newlines"]
