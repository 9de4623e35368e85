"""apply() on LLaVA-NeXT-Video: images as on LLaVA-NeXT, videos per frame on the resampler's pooled grid.

The hand pipeline pools each frame's scores by reshaping the 6x6 grid into 2x2 windows (mean, or
max for the max pool), de-duplicates on the model's own ``vision_resampler`` output, and takes the
kept rows of the UNPRUNED model's ``get_video_features`` (projected, frame-major); images go
through LLaVA-NeXT's hand pipeline (``hand_pruned_images``: a feature map packed by the model).
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
from test_integration_llava_next import hand_pruned_images
from test_integration_llava_onevision import prompts
from vtprune_kernels import HIVTP, Random, Uniform, VisPruner, apply

TILE, SIDE, POOLED, P = 84, 6, (3, 3), 9  # 6x6 patches per frame, pooled 2x2 to 3x3
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=5, seed=1),
    "uniform": lambda: Uniform(keep=4),
}
IMAGE_SIZES = torch.tensor([[84, 200], [60, 60]])  # (H, W): wide (unpadded), small square


@pytest.fixture(scope="module")
def model():
    return tm.llava_next_video()


def n_tiles(model, image_sizes):
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    cfg = model.config
    return [image_size_to_num_patches(s, cfg.image_grid_pinpoints, TILE) for s in image_sizes]


def window_pool(scores, mode: str):
    """[T, 9]: per-patch scores [T, 36] of a 6x6 grid reduced over each 2x2 window (raster order)."""
    if scores is None:
        return None
    windows = scores.reshape(-1, 3, 2, 3, 2)
    pooled = windows.amax(dim=(2, 4)) if mode == "max" else windows.mean(dim=(2, 4))
    return pooled.reshape(-1, 9)


def hand_videos(model, method, videos, replay=True):
    """(per-video kept projected features, selections, token counts) by hand."""
    V, F = videos.shape[:2]
    hidden, attentions = tower_maps(eager_copy(model), videos.flatten(0, 1))
    feature_layer = model.config.vision_feature_layer % (model.config.vision_config.num_hidden_layers + 1) - 1
    cls_attn, received = method_scores(method, attentions, feature_layer, True)
    mode = model.config.spatial_pool_mode
    with torch.no_grad():
        pooled = model.model.vision_resampler(hidden[feature_layer + 1][:, 1:])
        full = model.model.get_video_features(pixel_values_videos=videos).pooler_output  # [V, F*9, D]
    keep = method_keep(
        method, grid=POOLED, cls_attn=window_pool(cls_attn, mode), received=window_pool(received, mode),
        features=pooled, batch=V * F, replay=replay,
    )
    kept, selections = [], []
    for v in range(V):
        rows = keep[v * F : (v + 1) * F].reshape(-1)
        kept.append(full[v][rows])
        selections.append(rows.nonzero().flatten().tolist())
    return kept, selections, [F * P] * V


def _shared(method):
    """The selector of a call that holds images and videos: one Random draws for both, in that order."""
    return (Random(method.keep, seed=method.seed), False) if isinstance(method, Random) else (method, True)


@pytest.mark.parametrize("method_name", list(METHODS))
def test_videos_match_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    videos = tm.pixels(2, TILE, tiles=3, seed=5)  # 2 videos of 3 frames
    kept, selections, counts = hand_videos(model, method, videos)
    ids, mask = prompts([[(tm.VIDEO_TOKEN, 3 * P)], [(tm.VIDEO_TOKEN, 3 * P)]])
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values_videos=videos)
    assert_pruned_forward_matches(model, method, inputs, [], selections, counts, other_runs={tm.VIDEO_TOKEN: kept})


@pytest.mark.parametrize("pool_mode", ["max", "conv"])
@pytest.mark.parametrize("method_name", ["vispruner", "hivtp"])
def test_every_pool_mode_matches_hand_pipeline(pool_mode, method_name):
    """The max pool pools the scores by max; the learned conv pool by the window mean, and VisPruner
    de-duplicates the conv's output."""
    model = tm.llava_next_video(pool_mode=pool_mode, seed=2)
    method = METHODS[method_name]()
    videos = tm.pixels(1, TILE, tiles=2, seed=6)
    kept, selections, counts = hand_videos(model, method, videos)
    ids, mask = prompts([[(tm.VIDEO_TOKEN, 2 * P)]])
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values_videos=videos)
    assert_pruned_forward_matches(model, method, inputs, [], selections, counts, other_runs={tm.VIDEO_TOKEN: kept})


@pytest.mark.parametrize("method_name", list(METHODS))
def test_images_and_videos_in_one_call_match_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    tiles = n_tiles(model, IMAGE_SIZES)
    px = tm.pixels(2, TILE, tiles=max(tiles), seed=7)
    videos = tm.pixels(2, TILE, tiles=2, seed=8)
    selector, replay = _shared(method)
    images, image_sel = hand_pruned_images(model, selector, px, tiles, IMAGE_SIZES, replay=replay)
    video_kept, video_sel, video_counts = hand_videos(model, selector, videos, replay=replay)
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values=px, image_sizes=IMAGE_SIZES).pooler_output
    ids, mask = prompts([
        [(tm.IMAGE_TOKEN, full[0].shape[0]), (tm.VIDEO_TOKEN, 2 * P)],
        [(tm.VIDEO_TOKEN, 2 * P), (tm.IMAGE_TOKEN, full[1].shape[0])],
    ])
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES, pixel_values_videos=videos)
    assert_pruned_forward_matches(
        model, method, inputs, images, image_sel + video_sel, [t * SIDE * SIDE for t in tiles] + video_counts,
        other_runs={tm.VIDEO_TOKEN: video_kept},
    )


def test_keeping_every_token_reproduces_the_unpruned_model(model):
    tiles = n_tiles(model, IMAGE_SIZES[:1])
    px = tm.pixels(1, TILE, tiles=tiles[0], seed=9)
    videos = tm.pixels(2, TILE, tiles=3, seed=10)
    with torch.no_grad():
        full = model.model.get_image_features(pixel_values=px, image_sizes=IMAGE_SIZES[:1]).pooler_output
    ids, mask = prompts([[(tm.IMAGE_TOKEN, full[0].shape[0]), (tm.VIDEO_TOKEN, 3 * P)], [(tm.VIDEO_TOKEN, 3 * P)]])
    inputs = dict(
        input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=IMAGE_SIZES[:1], pixel_values_videos=videos
    )
    with torch.no_grad():
        expected = model(**inputs).logits
        for method in (VisPruner(keep=SIDE * SIDE, step=2), Random(keep=SIDE * SIDE), Uniform(keep=SIDE * SIDE)):
            with apply(model, method, backend=BACKEND) as handle:
                got = model(**inputs).logits
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
            assert handle.last_num_tokens == [tiles[0] * SIDE * SIDE, 3 * P, 3 * P]
            assert handle.last_num_newlines[1:] == [0, 0]


def test_video_budgets_are_per_pooled_frame(model):
    videos = tm.pixels(1, TILE, tiles=4, seed=11)
    ids, mask = prompts([[(tm.VIDEO_TOKEN, 4 * P)]])
    with torch.no_grad(), apply(model, VisPruner(keep=2, step=2), backend=BACKEND) as handle:
        inputs = handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values_videos=videos)
    (sel,) = handle.last_selection
    assert torch.bincount(sel // P, minlength=4).tolist() == [2, 2, 2, 2]
    assert (inputs["input_ids"] == tm.VIDEO_TOKEN).sum().item() == 4 * 2
    (features,) = inputs["mm_encoder_outputs"]["video"].pooler_output
    assert features.shape[:2] == (1, 8)
    assert "image" not in inputs["mm_encoder_outputs"]


def test_generate_video_batch(model):
    method = VisPruner(keep=3, step=2)
    videos = tm.pixels(2, TILE, tiles=2, seed=12)
    kept, _, _ = hand_videos(model, method, videos)
    ids, mask = prompts([[(tm.VIDEO_TOKEN, 2 * P)], [(tm.VIDEO_TOKEN, 2 * P)]])
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(
            input_ids=ids, attention_mask=mask, pixel_values_videos=videos, max_new_tokens=3, do_sample=False,
            output_logits=True, return_dict_in_generate=True,
        )
    expected = hand_greedy_logits(model, ids, mask, kept, tm.VIDEO_TOKEN, gen.sequences[:, -3:])
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_bad_inputs_are_clear_errors(model):
    videos = tm.pixels(1, TILE, tiles=2, seed=13)
    ids, mask = prompts([[(tm.VIDEO_TOKEN, 2 * P)]])
    with torch.no_grad(), apply(model, VisPruner(keep=3), backend=BACKEND) as handle:
        with pytest.raises(ValueError, match="pixel_values_videos must be"):
            handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values_videos=videos[0])
        with pytest.raises(ValueError, match="image_sizes"):
            handle.prepare_inputs(input_ids=ids, attention_mask=mask, pixel_values=videos)
        with pytest.raises(ValueError, match="vision_feature_select_strategy"):
            handle.prepare_inputs(
                input_ids=ids, attention_mask=mask, pixel_values_videos=videos, vision_feature_select_strategy="full"
            )
