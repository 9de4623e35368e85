"""apply() on Gemma 4: images at their own size (patches padded at the end, a key mask), pooled 2x2 by position.

The hand pipeline: scores from an eager copy's attention maps with the tower run on each image's
REAL patches alone (what the key mask means), features from that run's last hidden state; both
pooled by hand from the patch positions (token (y // 2) * columns + x // 2); the methods' own
``select`` per image; kept features are rows of the model's own ``get_image_features`` (the batched,
padded run). The expected logits come from the UNMODIFIED model on a hand-built shortened prompt
with hand-built ``mm_token_type_ids`` (each image's kept tokens one bidirectional block).
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND, assert_matches_unmodified, eager_copy, method_keep, method_scores, split_rows
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply

GRIDS = [(4, 6), (6, 4), (4, 4)]  # (rows, columns) of patches; pooled 2x2: 2x3, 3x2, 2x2 tokens
POOLED = [(r // 2, c // 2) for r, c in GRIDS]
MAX_PATCHES = 32
IMAGES_PER_ROW = [1, 2]
METHODS = {
    "vispruner": lambda: VisPruner(keep=3, step=2),
    "vispruner-layer": lambda: VisPruner(keep=4, step=1, important_ratio=0.3, score_layer=0),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5, window=1),
    "random": lambda: Random(keep=2, seed=2),
    "uniform": lambda: Uniform(keep=2),
}


@pytest.fixture(scope="module")
def model():
    return tm.gemma4()


def _prompt(counts, padding_side="left"):
    """input_ids, attention_mask, mm_token_type_ids: per row text, then per image <boi> + placeholders + <eoi> + text."""
    ids, mask = tm.make_prompts(counts, wrap_images=True, padding_side=padding_side)
    return ids, mask, (ids == tm.IMAGE_TOKEN).long()


def _inputs(padding_side="left"):
    ids, mask, types = _prompt(split_rows([r * c for r, c in POOLED], IMAGES_PER_ROW), padding_side)
    pixel_values, positions = tm.gemma4_patches(GRIDS, MAX_PATCHES, seed=4)
    return dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=types, pixel_values=pixel_values,
                image_position_ids=positions)


def _pool(x, grid):
    """[1, T, ...]: per-patch values [1, rows*cols, ...] (raster) averaged over each 2x2 block, raster order."""
    rows, cols = grid
    blocks = x.reshape(1, rows // 2, 2, cols // 2, 2, *x.shape[2:]).transpose(2, 3)
    return blocks.reshape(1, (rows // 2) * (cols // 2), 4, *x.shape[2:]).mean(2)


def hand_keep(model, method, inputs):
    fresh = Random(method.keep, seed=method.seed) if isinstance(method, Random) else method
    return hand_frame_keep(model, method, inputs["pixel_values"], inputs["image_position_ids"], GRIDS, fresh)


def hand_frame_keep(model, method, pixel_values, positions, grids, fresh):
    """Per image / frame, the method's keep mask computed on its real patches alone (the tower run on them,
    eager attention maps, the last encoder layer's output; both pooled by hand); ``fresh``: the selector."""
    tower = eager_copy(model).model.vision_tower
    last = model.config.vision_config.num_hidden_layers - 1
    keep = []
    for i, grid in enumerate(grids):
        n = grid[0] * grid[1]
        outputs = []  # the last encoder layer's output (hidden_states[-1] is the pooled one)
        hook = tower.encoder.layers[-1].register_forward_hook(lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            out = tower(pixel_values[i : i + 1, :n], positions[i : i + 1, :n], output_attentions=True)
        hook.remove()
        _, received = method_scores(method, out.attentions, last, False)
        keep.append(method_keep(
            fresh, grid=(grid[0] // 2, grid[1] // 2), received=None if received is None else _pool(received, grid),
            features=_pool(outputs[0], grid), batch=1, replay=False,
        )[0])
    return keep


def hand_inputs(model, inputs, keep, padding_side="left"):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    with torch.no_grad():
        full = model.model.get_image_features(inputs["pixel_values"], inputs["image_position_ids"]).pooler_output
    ids, mask, types = _prompt(split_rows([int(k.sum()) for k in keep], IMAGES_PER_ROW), padding_side)
    kept = tuple(f[k] for f, k in zip(full, keep))
    return dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
                mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=kept)})


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep(model, method, inputs)
    handle = assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep))
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == [r * c for r, c in POOLED]


def test_keeping_everything_gives_the_unpruned_logits(model):
    """Also under the capture: the padded tower keeps its key mask (VisPruner scores, Uniform does not)."""
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=16, step=2), Uniform(keep=16)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method


def test_image_blocks_stay_bidirectional(model):
    inputs = _inputs()
    with torch.no_grad(), apply(model, Uniform(keep=2), backend=BACKEND) as handle:
        pruned = handle.prepare_inputs(**inputs)
    assert torch.equal(pruned["mm_token_type_ids"], (pruned["input_ids"] == tm.IMAGE_TOKEN).long())
    with torch.no_grad():
        with_types = model(**pruned).logits
        without = model(**{k: v for k, v in pruned.items() if k != "mm_token_type_ids"}).logits
    assert not torch.allclose(with_types, without, atol=1e-3)


def test_generate_and_right_padding_match_hand_inputs(model):
    method = VisPruner(keep=3, step=2)
    inputs = _inputs()
    keep = hand_keep(model, method, inputs)
    assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep), generate=True)
    right = _inputs(padding_side="right")
    expected = hand_inputs(model, right, keep, padding_side="right")
    assert_matches_unmodified(model, method, right, expected, real=expected["attention_mask"].bool())


def test_bad_calls_are_clear_errors(model):
    inputs = _inputs()
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match="PTP"):
            model(**inputs)
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="pruning needs image_position_ids"):
            model(**{**inputs, "image_position_ids": None})
        shuffled = inputs["image_position_ids"].flip(1)  # padding first
        with pytest.raises(ValueError, match="padding must come last"):
            model(**{**inputs, "image_position_ids": shuffled})
        with pytest.raises(ValueError, match="image_position_ids must be"):
            model(**{**inputs, "image_position_ids": inputs["image_position_ids"][:, :4]})
        with pytest.raises(ValueError, match="input_features"):
            model(**inputs, input_features=torch.zeros(1, 4, 8))


# --- videos: two videos (2 frames of 4x6 patches, 1 frame of 6x4), every frame padded like an image ---------
VIDEO_FRAMES = [2, 1]
FRAME_GRIDS = [(4, 6), (4, 6), (6, 4)]
FRAME_POOLED = [(r // 2, c // 2) for r, c in FRAME_GRIDS]


def _video_call(image_keep=None, frame_keep=None):
    """A call's inputs: row 0 holds image 0 then video 0, row 1 images 1, 2 then video 1; with ``image_keep`` /
    ``frame_keep`` (per image / frame bool masks) the prompt is the pruned one."""
    base = _inputs()
    videos, video_positions = tm.gemma4_patches(FRAME_GRIDS, MAX_PATCHES, seed=6)
    image_counts = [r * c for r, c in POOLED] if image_keep is None else [int(k.sum()) for k in image_keep]
    frame_counts = [r * c for r, c in FRAME_POOLED] if frame_keep is None else [int(k.sum()) for k in frame_keep]
    runs = [[(image_counts[0], False), (frame_counts[0], True), (frame_counts[1], True)],
            [(image_counts[1], False), (image_counts[2], False), (frame_counts[2], True)]]
    ids, mask = tm.make_prompts([[c for c, _ in row] for row in runs], wrap_images=True)
    for b, row in enumerate(runs):  # relabel the video frames' runs
        run, j, real = -1, 0, ids[b].tolist()
        while j < len(real):
            if real[j] == tm.IMAGE_TOKEN:
                run += 1
                while j < len(real) and real[j] == tm.IMAGE_TOKEN:
                    if row[run][1]:
                        ids[b, j] = tm.VIDEO_TOKEN
                    j += 1
            else:
                j += 1
    types = (ids == tm.IMAGE_TOKEN).long() + 2 * (ids == tm.VIDEO_TOKEN).long()
    inputs = dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=types, pixel_values=base["pixel_values"],
                  image_position_ids=base["image_position_ids"], pixel_values_videos=videos,
                  video_position_ids=video_positions, num_frames_per_video=torch.tensor(VIDEO_FRAMES))
    return inputs


@pytest.mark.parametrize("method_name", ["vispruner", "hivtp", "random", "uniform"])
def test_images_and_videos_match_hand_pipeline(model, method_name):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    method = METHODS[method_name]()
    inputs = _video_call()
    fresh = Random(method.keep, seed=method.seed) if isinstance(method, Random) else method  # images first, then frames
    image_keep = hand_frame_keep(model, method, inputs["pixel_values"], inputs["image_position_ids"], GRIDS, fresh)
    frame_keep = hand_frame_keep(model, method, inputs["pixel_values_videos"], inputs["video_position_ids"], FRAME_GRIDS, fresh)
    with torch.no_grad():
        images = model.model.get_image_features(inputs["pixel_values"], inputs["image_position_ids"]).pooler_output
        videos = model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_position_ids"], num_frames_per_video=inputs["num_frames_per_video"]
        ).pooler_output
    video_keep = [torch.cat(frame_keep[:2]), frame_keep[2]]
    expected = _video_call(image_keep, frame_keep)
    for name in ("pixel_values", "image_position_ids", "pixel_values_videos", "video_position_ids", "num_frames_per_video"):
        expected.pop(name)
    expected["mm_encoder_outputs"] = {
        "image": BaseModelOutputWithPooling(pooler_output=tuple(f[k] for f, k in zip(images, image_keep))),
        "video": BaseModelOutputWithPooling(pooler_output=tuple(f[k] for f, k in zip(videos, video_keep))),
    }
    handle = assert_matches_unmodified(model, method, inputs, expected)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in image_keep + video_keep]
    assert handle.last_num_tokens == [r * c for r, c in POOLED] + [12, 6]


def test_keeping_everything_in_videos_gives_the_unpruned_logits(model):
    inputs = _video_call()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=16, step=2), Uniform(keep=16)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method


def test_bad_video_calls_are_clear_errors(model):
    inputs = _video_call()
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="num_frames_per_video"):
            model(**{**inputs, "num_frames_per_video": None})
        with pytest.raises(ValueError, match="num_frames_per_video sums to 4"):
            model(**{**inputs, "num_frames_per_video": torch.tensor([2, 2])})
        with pytest.raises(ValueError, match="video_position_ids must be"):
            model(**{**inputs, "video_position_ids": inputs["video_position_ids"][:, :4]})
