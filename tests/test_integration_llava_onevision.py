"""apply() on LLaVA-OneVision: per-tile selection among the tokens the language model gets (unpadded
and, for large grids, bilinearly downsized), per-frame selection on pooled video frames, newlines kept.

The hand pipeline shares nothing with the integration's bookkeeping: each packed token's tile comes
from packing ONE-HOT tile indicators through the model's own ``pack_image_features`` (argmax: the tile
whose tokens weigh most in the token's bilinear mix, ties to the lower tile), where the integration
packs source coordinates; scores come from an eager copy's attention maps; the kept features are
rows of the unpruned model's own ``get_image_features`` / ``get_video_features`` output.
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

TILE, GRID, N = 70, (5, 5), 25  # 70 px tiles: 5x5 tokens; video frames pool to 3x3
POOLED, P = (3, 3), 9
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=5, seed=1),
    "uniform": lambda: Uniform(keep=4),
}
# (H, W): downsized wide (2x3 tiles, 10x15 -> 5x8), small (1x2 tiles, not downsized), downsized tall,
# a sliver (unpadding leaves nothing of the grid)
IMAGE_SIZES = torch.tensor([[140, 200], [70, 60], [150, 140], [10, 200]])


@pytest.fixture(scope="module")
def model():
    return tm.llava_onevision()


def n_tiles(model, image_sizes):
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    cfg = model.config
    return [image_size_to_num_patches(s, cfg.image_grid_pinpoints, TILE) for s in image_sizes]


def packed_owners(model, image_size, tiles):
    """(tile int64 [L], slot int64 [L]) of one image's packed rows (-1: newline): the tile by one-hot
    indicators packed by the model, the slot by the token's place in its tile's rectangle."""
    if tiles == 1:
        return torch.cat([torch.zeros(N, dtype=torch.long), torch.tensor([-1])]), torch.cat([torch.arange(N), torch.tensor([-1])])
    onehot = torch.zeros(tiles, N, 1 + tiles, dtype=torch.float64)
    onehot[..., 0] = 1
    onehot[torch.arange(tiles), :, 1 + torch.arange(tiles)] = 1
    (packed,), _ = model.model.pack_image_features(
        [onehot], image_size[None], image_newline=torch.zeros(1 + tiles, dtype=torch.float64),
        vision_aspect_ratio=model.config.vision_aspect_ratio,
    )
    grid_rows = packed[N:]
    token = grid_rows[:, 0] > 0.5
    tile = torch.full((grid_rows.shape[0],), -1)
    slot = torch.full((grid_rows.shape[0],), -1)
    if bool(token.any()):
        owner = grid_rows[token, 1:].argmax(1)
        width = int(token.sum()) // int((~token).sum())
        oy, ox = torch.arange(owner.numel()) // width, torch.arange(owner.numel()) % width
        cells = torch.empty_like(owner)
        for t in owner.unique():
            mine = owner == t
            cells[mine] = (oy[mine] - oy[mine].min()) * GRID[1] + ox[mine] - ox[mine].min()
        tile[token], slot[token] = owner, cells
    return torch.cat([torch.zeros(N, dtype=torch.long), tile]), torch.cat([torch.arange(N), slot])


def _method_rows(method):
    """The method a hand pipeline selects with: one fresh Random shared by the images and the videos."""
    return (Random(method.keep, seed=method.seed), False) if isinstance(method, Random) else (method, True)


def _scores_and_features(model, method, pixel_values):
    hidden, attentions = tower_maps(eager_copy(model), pixel_values)
    feature_layer = model.config.vision_config.num_hidden_layers - 1  # vision_feature_layer -1
    _, received = method_scores(method, attentions, feature_layer, False)
    return received, hidden[feature_layer + 1]


def hand_images(model, method, px, image_sizes, selector, replay, batch_num_images=None):
    """(per-image kept features, selections, visual token counts, per-tile budgets met) by hand."""
    tiles = n_tiles(model, image_sizes) if batch_num_images is None else [1] * len(image_sizes)
    flat = torch.cat([p[:t] for p, t in zip(px, tiles)])
    received, features = _scores_and_features(model, method, flat)
    owners = [packed_owners(model, s, t) for s, t in zip(image_sizes, tiles)]
    values = torch.cat([torch.zeros(*features.shape[:2], 1) if received is None else received[..., None], features], -1)
    packed_values, _ = model.model.pack_image_features(
        list(torch.split(values, tiles)), image_sizes, image_newline=torch.zeros(values.shape[-1]),
        vision_aspect_ratio=model.config.vision_aspect_ratio,
    )
    canvas = torch.zeros_like(values)
    valid = torch.zeros(sum(tiles), N, dtype=torch.bool)
    first = 0
    for (tile, slot), rows, t in zip(owners, packed_values, tiles):
        token = tile >= 0
        canvas[first + tile[token], slot[token]] = rows[token]
        valid[first + tile[token], slot[token]] = True
        first += t
    keep = method_keep(
        selector, grid=GRID, received=canvas[..., 0] if received is not None else None, features=canvas[..., 1:],
        batch=sum(tiles), valid=valid, replay=replay,
    )
    with torch.no_grad():
        full = model.model.get_image_features(
            pixel_values=px, image_sizes=image_sizes, batch_num_images=batch_num_images
        ).pooler_output
    kept_features, selections, counts, first = [], [], [], 0
    for (tile, slot), rows, t in zip(owners, full, tiles):
        token = tile >= 0
        token_kept = keep[first + tile.clamp(min=0), slot.clamp(min=0)] & token
        kept_features.append(rows[token_kept | ~token])
        selections.append(token_kept[token].nonzero().flatten().tolist())
        counts.append(int(token.sum()))
        first += t
    return kept_features, selections, counts, keep, valid


def hand_videos(model, method, videos, selector, replay):
    """(per-video kept features, selections, token counts) by hand."""
    V, F = videos.shape[:2]
    received, features = _scores_and_features(model, method, videos.flatten(0, 1))
    values = torch.cat([torch.zeros(*features.shape[:2], 1) if received is None else received[..., None], features], -1)
    pooled = model.model.apply_pooling(values)  # [V*F, 9, 1 + C]
    keep = method_keep(
        selector, grid=POOLED, received=pooled[..., 0] if received is not None else None, features=pooled[..., 1:],
        batch=V * F, replay=replay,
    )
    with torch.no_grad():
        full = model.model.get_video_features(pixel_values_videos=videos).pooler_output  # [V, F*9 + 1, D]
    kept_features, selections = [], []
    for v in range(V):
        rows = torch.cat([keep[v * F : (v + 1) * F].reshape(-1), torch.ones(1, dtype=torch.bool)])
        kept_features.append(full[v][rows])
        selections.append(rows[:-1].nonzero().flatten().tolist())
    return kept_features, selections, [F * P] * V


def prompts(rows, seed=0):
    """input_ids, attention_mask (left padded): per row, text then runs of (token, count), text between."""
    gen = torch.Generator().manual_seed(seed)
    built = []
    for b, runs in enumerate(rows):
        row = torch.randint(3, 80, (3 + b,), generator=gen).tolist()
        for token, count in runs:
            row += [token] * count + torch.randint(3, 80, (2,), generator=gen).tolist()
        built.append(row)
    width = max(len(r) for r in built)
    ids = torch.full((len(built), width), tm.PAD_TOKEN)
    mask = torch.zeros(len(built), width, dtype=torch.long)
    for b, r in enumerate(built):
        ids[b, width - len(r):], mask[b, width - len(r):] = torch.tensor(r), 1
    return ids, mask


def _image_batch(model):
    tiles = n_tiles(model, IMAGE_SIZES)
    px = tm.pixels(len(IMAGE_SIZES), TILE, tiles=max(tiles), seed=3)
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values=px, image_sizes=IMAGE_SIZES).pooler_output
    ids, mask = prompts([[(tm.IMAGE_TOKEN, f.shape[0])] for f in full])
    return px, ids, mask


def test_the_sizes_cover_downsized_plain_and_sliver_grids(model):
    tiles = n_tiles(model, IMAGE_SIZES)
    shares = []
    for size, t in zip(IMAGE_SIZES, tiles):
        tile, _ = packed_owners(model, size, t)
        shares.append(torch.bincount(tile[tile >= 0], minlength=t)[1:].tolist())
    assert tiles == [7, 3, 7, 7]
    assert sum(shares[0]) == 40 and max(shares[0]) < N  # 10x15 downsized to 5x8: every tile a partial share
    assert shares[1] == [10, 10]  # 5x10 unpadded to 5x4, not downsized
    assert sum(shares[2]) == 42  # 15x10 downsized to 7x6
    assert shares[3] == [0] * 6  # the sliver: unpadding leaves nothing of the grid tiles


@pytest.mark.parametrize("method_name", list(METHODS))
def test_images_match_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    px, ids, mask = _image_batch(model)
    selector, replay = _method_rows(method)
    kept, selections, counts, _, _ = hand_images(model, method, px, IMAGE_SIZES, selector, replay)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES)
    assert_pruned_forward_matches(model, method, inputs, kept, selections, counts)


def test_budgets_are_per_tile_share(model):
    px, ids, mask = _image_batch(model)
    method = VisPruner(keep=3, step=2)
    _, _, _, keep, valid = hand_images(model, method, px, IMAGE_SIZES, method, True)
    assert keep.sum(1).tolist() == valid.sum(1).clamp(max=3).tolist()
    assert bool((keep <= valid).all())
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES)
    assert [s.numel() for s in handle.last_selection] == [int(k.sum()) for k in torch.split(keep, n_tiles(model, IMAGE_SIZES))]


def test_keeping_every_token_reproduces_the_unpruned_model(model):
    px, ids, mask = _image_batch(model)
    videos = tm.pixels(2, TILE, tiles=3, seed=4)
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values=px[:1], image_sizes=IMAGE_SIZES[:1]).pooler_output
    ids, mask = prompts([[(tm.IMAGE_TOKEN, full[0].shape[0]), (tm.VIDEO_TOKEN, 3 * P + 1)], [(tm.VIDEO_TOKEN, 3 * P + 1)]])
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px[:1], image_sizes=IMAGE_SIZES[:1], pixel_values_videos=videos)
    with torch.no_grad():
        expected = model(**inputs).logits
        for method in (VisPruner(keep=N, step=2), Random(keep=N), Uniform(keep=N)):
            with apply(model, method, backend=BACKEND) as handle:
                got = model(**inputs).logits
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
            assert handle.last_num_newlines == [5, 1, 1]


@pytest.mark.parametrize("method_name", list(METHODS))
def test_images_and_videos_in_one_call_match_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    sizes = IMAGE_SIZES[:2]
    tiles = n_tiles(model, sizes)
    px = tm.pixels(2, TILE, tiles=max(tiles), seed=6)
    videos = tm.pixels(2, TILE, tiles=3, seed=7)  # 2 videos of 3 frames
    selector, replay = _method_rows(method)
    images, image_sel, image_counts, _, _ = hand_images(model, method, px, sizes, selector, replay)
    video_kept, video_sel, video_counts = hand_videos(model, method, videos, selector, replay)
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values=px, image_sizes=sizes).pooler_output
    ids, mask = prompts([
        [(tm.IMAGE_TOKEN, full[0].shape[0]), (tm.VIDEO_TOKEN, 3 * P + 1)],
        [(tm.VIDEO_TOKEN, 3 * P + 1), (tm.IMAGE_TOKEN, full[1].shape[0])],
    ])
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=sizes, pixel_values_videos=videos)
    assert_pruned_forward_matches(
        model, method, inputs, images, image_sel + video_sel, image_counts + video_counts,
        other_runs={tm.VIDEO_TOKEN: video_kept},
    )


def test_video_budgets_are_per_pooled_frame(model):
    videos = tm.pixels(1, TILE, tiles=4, seed=8)
    ids, mask = prompts([[(tm.VIDEO_TOKEN, 4 * P + 1)]])
    with torch.no_grad(), apply(model, VisPruner(keep=2, step=2), backend=BACKEND) as handle:
        inputs = handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values_videos=videos)
    (sel,) = handle.last_selection
    assert torch.bincount(sel // P, minlength=4).tolist() == [2, 2, 2, 2]
    assert (inputs["input_ids"] == tm.VIDEO_TOKEN).sum().item() == 4 * 2 + 1
    features = inputs["mm_encoder_outputs"]["video"].pooler_output
    assert features.shape[:2] == (1, 9) and torch.equal(features[0, -1], model.model.image_newline)


def test_several_images_in_one_prompt_are_base_tiles(model):
    method = HIVTP(layers=(0, 2), region_ratio=0.5)
    sizes = IMAGE_SIZES[:3]
    px = tm.pixels(3, TILE, tiles=1, seed=9)
    batch_num_images = torch.tensor([3])
    kept, selections, counts, _, _ = hand_images(model, method, px, sizes, method, True, batch_num_images=batch_num_images)
    assert counts == [N, N, N]
    ids, mask = prompts([[(tm.IMAGE_TOKEN, N + 1)] * 3])
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=sizes, batch_num_images=batch_num_images)
    assert_pruned_forward_matches(model, method, inputs, kept, selections, counts)


def test_generate_batch(model):
    method = VisPruner(keep=3, step=2)
    px, ids, mask = _image_batch(model)
    kept, _, _, _, _ = hand_images(model, method, px, IMAGE_SIZES, method, True)
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(
            input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES, max_new_tokens=3,
            do_sample=False, output_logits=True, return_dict_in_generate=True,
        )
    expected = hand_greedy_logits(model, ids, mask, kept, tm.IMAGE_TOKEN, gen.sequences[:, -3:])
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_bad_inputs_are_clear_errors(model):
    px, ids, mask = _image_batch(model)
    with torch.no_grad(), apply(model, VisPruner(keep=3), backend=BACKEND) as handle:
        with pytest.raises(ValueError, match="image_sizes"):
            handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values=px)
        with pytest.raises(ValueError, match="pixel_values_videos must be"):
            handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values_videos=px[0])
        with pytest.raises(ValueError, match="batch_num_images"):
            handle.prepare_inputs(
                input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES, batch_num_images=torch.tensor([2])
            )


def test_packed_rows_of_a_grid_with_more_rows_than_a_tile_has_tokens():
    """2x2-token tiles, 3x2 grid tiles, not downsized: every grid token's canvas slot is its place in its tile."""
    small = tm.llava_onevision(tile=28, aspect="anyres_max_9", vision_layers=1)
    from vtprune_kernels.integrations.llava_onevision import LlavaOnevisionAdapter

    rows = LlavaOnevisionAdapter(small).packed_rows(torch.tensor([84, 56]), 7, (2, 2))
    token = rows.is_token
    assert int((~token).sum()) == 6  # 6 rows of 4 tokens
    r, c = torch.arange(24) // 4, torch.arange(24) % 4
    assert rows.tile[4:][token[4:]].tolist() == (1 + (r // 2) * 2 + c // 2).tolist()
    assert rows.slot[4:][token[4:]].tolist() == ((r % 2) * 2 + c % 2).tolist()
