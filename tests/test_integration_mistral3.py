"""apply() on Mistral 3: a Pixtral tower over images of different sizes packed in one sequence, a 2x2
patch merger, prompts whose image rows end with [IMG_BREAK] / [IMG_END]; Pixtral in its LLaVA form (no
merger) and LightOnOCR (Mistral 3's tower and projector, an image written as its merged tokens only).

The hand pipeline: scores from an eager copy's attention maps, the tower run on each image ALONE
(what the model's block-diagonal mask means), pooled 2x2 with ``avg_pool2d`` written here; features
(the merger's input) concatenated 2x2 by hand from the tower's normalised output; the methods' own
``select`` per image; kept features are rows of the model's own ``get_image_features``. The expected
logits come from the UNMODIFIED model run on a hand-built shortened prompt (each row keeps its
kept [IMG] tokens and its break), with those features passed as ``mm_encoder_outputs``.
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND, assert_matches_unmodified, blocks_2x2, eager_copy, method_keep, method_scores, pooled_2x2
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.methods.pixel_shuffle_pooling import pixel_shuffle_pool

PATCH = 8
# (height, width) in pixels of the images, in call order; rows of the batch hold IMAGES_PER_ROW images
SIZES = [(64, 48), (32, 64), (48, 48)]
IMAGES_PER_ROW = [1, 2]
GRIDS = [(h // PATCH // 2, w // PATCH // 2) for h, w in SIZES]  # Mistral 3's merged (rows, columns) per image
METHODS = {
    "vispruner": lambda: VisPruner(keep=5, step=2),
    "vispruner-layer": lambda: VisPruner(keep=4, step=1, important_ratio=0.3, score_layer=0),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=4, seed=2),
    "uniform": lambda: Uniform(keep=3),
}


@pytest.fixture(scope="module", params=["mistral3", "llava_pixtral", "lighton_ocr"])
def model(request):
    """Mistral 3 (2x2 patch merger), Pixtral in its LLaVA form (every patch a token) and LightOnOCR (no row
    breaks), one plan."""
    return {"mistral3": tm.mistral3, "llava_pixtral": tm.llava_pixtral, "lighton_ocr": tm.lighton_ocr}[request.param]()


def _merge(model) -> int:
    return int(getattr(model.config, "spatial_merge_size", 1))


def _lighton(model) -> bool:
    return type(model).__name__ == "LightOnOcrForConditionalGeneration"


def _tower(model):
    return model.model.vision_encoder if _lighton(model) else model.model.vision_tower


def _grids(model):
    """(rows, columns) of tokens per image."""
    m = _merge(model)
    return [(h // PATCH // m, w // PATCH // m) for h, w in SIZES]


def _image_ids(grid, keep=None, breaks=True):
    """One image's prompt tokens: per merged row its (kept) [IMG] tokens, then [IMG_BREAK] ([IMG_END] last);
    without ``breaks`` (LightOnOCR) the (kept) [IMG] tokens alone."""
    rows, cols = grid
    ids = []
    for r in range(rows):
        n = cols if keep is None else int(keep.view(rows, cols)[r].sum())
        ids += [tm.IMAGE_TOKEN] * n
        if breaks:
            ids.append(tm.MISTRAL3_BREAK_TOKEN if r < rows - 1 else tm.MISTRAL3_END_TOKEN)
    return ids


def _prompt(grids, keep=None, padding_side="left", breaks=True):
    """input_ids, attention_mask: text, the row's images (each followed by a text token), text."""
    rows, image = [], 0
    for b, n in enumerate(IMAGES_PER_ROW):
        row = [3 + b, 4, 5 + b]
        for _ in range(n):
            row += _image_ids(grids[image], None if keep is None else keep[image], breaks) + [6 + image]
            image += 1
        rows.append(row + [7, 8, 9])
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tm.PAD_TOKEN, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        cols = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
        ids[b, cols], mask[b, cols] = torch.tensor(r), 1
    return ids, mask


def _inputs(model, padding_side="left"):
    ids, mask = _prompt(_grids(model), padding_side=padding_side, breaks=not _lighton(model))
    pixel_values = torch.zeros(len(SIZES), 3, 64, 64)
    noise = tm.pixels(len(SIZES), 64, seed=4)
    for i, (h, w) in enumerate(SIZES):  # the processor pads each image to the batch's largest
        pixel_values[i, :, :h, :w] = noise[i, :, :h, :w]
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, image_sizes=torch.tensor(SIZES))


def hand_keep(model, method, inputs):
    """Per image, bool [T]: the method's own selection on scores and features computed by hand."""
    eager = eager_copy(model)
    last = model.config.vision_config.num_hidden_layers - 1
    merge = _merge(model)
    with torch.no_grad():
        hidden = _tower(model)(
            inputs["pixel_values"], image_sizes=inputs["image_sizes"], output_hidden_states=True
        ).hidden_states[-1][0]
        if merge == 2:  # Mistral 3 compares its merger's input: the projector's norm, 2x2 blocks
            projector = model.model.vision_projection if _lighton(model) else model.model.multi_modal_projector
            hidden = projector.norm(hidden)
    fresh = Random(method.keep, seed=method.seed) if isinstance(method, Random) else method
    keep, first = [], 0
    for i, ((h, w), grid) in enumerate(zip(SIZES, _grids(model))):
        with torch.no_grad():
            attentions = _tower(eager)(
                inputs["pixel_values"][i : i + 1], image_sizes=inputs["image_sizes"][i : i + 1], output_attentions=True
            ).attentions
        _, received = method_scores(method, attentions, last, False)
        n = (h // PATCH) * (w // PATCH)
        features, scores = hidden[None, first : first + n], received
        if merge == 2:
            features = blocks_2x2(features, (2 * grid[0], 2 * grid[1]))
            scores = None if received is None else pooled_2x2(received, (2 * grid[0], 2 * grid[1]))
        first += n
        keep.append(method_keep(fresh, grid=grid, received=scores, features=features, batch=1, replay=False)[0])
    return keep


def hand_inputs(model, inputs, keep, padding_side="left"):
    """The shortened prompt and kept features, built by hand, for the unmodified model."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    with torch.no_grad():
        if _merge(model) == 2:
            full = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
        else:
            full = model.model.get_image_features(
                inputs["pixel_values"], vision_feature_layer=-1, vision_feature_select_strategy="full",
                image_sizes=inputs["image_sizes"],
            ).pooler_output
    ids, mask = _prompt(_grids(model), keep, padding_side, breaks=not _lighton(model))
    kept = [f[k] for f, k in zip(full, keep)]
    return dict(input_ids=ids, attention_mask=mask, mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=kept)})


def test_merger_groups_2x2_blocks_in_raster_order():
    """The model's own patch merger on a tracer (channel 0 = patch index): each merged token's four
    patches are the ones ``pixel_shuffle_pool`` (and the pruning's scores) average."""
    projector = tm.mistral3().model.multi_modal_projector
    seen = []
    handle = projector.patch_merger.merging_layer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    hidden = torch.zeros(sum((h // PATCH) * (w // PATCH) for h, w in SIZES), projector.norm.weight.shape[0])
    starts = torch.tensor([0] + [(h // PATCH) * (w // PATCH) for h, w in SIZES]).cumsum(0)
    hidden[:, 0] = torch.arange(hidden.shape[0]) - torch.repeat_interleave(starts[:-1], (starts[1:] - starts[:-1]))
    try:
        with torch.no_grad():
            projector.patch_merger(hidden, torch.tensor(SIZES))
    finally:
        handle.remove()
    merged = seen[0][:, :4].mean(1)  # channel 0 of the four patches of every merged token
    first = 0
    for (h, w), grid in zip(SIZES, GRIDS):
        T = grid[0] * grid[1]
        index = torch.arange((h // PATCH) * (w // PATCH), dtype=torch.float32)[None]
        torch.testing.assert_close(merged[first : first + T], pixel_shuffle_pool(index, (h // PATCH, w // PATCH), 2)[0])
        first += T


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs(model)
    keep = hand_keep(model, method, inputs)
    handle = assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep))
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == [r * c for r, c in _grids(model)]


def test_rows_keep_their_breaks(model):
    """The pruned prompt: every image row keeps its kept [IMG] tokens and its [IMG_BREAK] / [IMG_END],
    also a row where nothing is kept (Uniform keeps 1 of 12 tokens); LightOnOCR: the kept [IMG] tokens only."""
    inputs = _inputs(model)
    with torch.no_grad(), apply(model, Uniform(keep=1), backend=BACKEND) as handle:
        pruned = handle.prepare_inputs(**inputs)
    grids = _grids(model)
    keep = [torch.zeros(r * c, dtype=torch.bool).index_fill_(0, s, True) for s, (r, c) in zip(handle.last_selection, grids)]
    assert any(bool((~k.view(g)).all(1).any()) for k, g in zip(keep, grids))  # some row keeps nothing
    ids, mask = _prompt(grids, keep, breaks=not _lighton(model))
    assert torch.equal(pruned["input_ids"], ids) and torch.equal(pruned["attention_mask"], mask)
    breaks = (pruned["input_ids"] == tm.MISTRAL3_BREAK_TOKEN).sum() + (pruned["input_ids"] == tm.MISTRAL3_END_TOKEN).sum()
    assert int(breaks) == (0 if _lighton(model) else sum(r for r, _ in grids))
    assert int((pruned["input_ids"] == tm.IMAGE_TOKEN).sum()) == len(grids)


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs(model)
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=64, step=2), Uniform(keep=64)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method
                as_list = {**inputs, "image_sizes": [list(s) for s in SIZES]}  # the model takes a list too
                assert torch.equal(model(**as_list).logits, unpruned), method


def test_generate_matches_hand_inputs(model):
    method = HIVTP(layers=(0, 1), region_ratio=0.5)  # rows shrink by different amounts (one and two images)
    inputs = _inputs(model)
    keep = hand_keep(model, method, inputs)
    assert_matches_unmodified(model, method, inputs, hand_inputs(model, inputs, keep), generate=True)


def test_right_padding(model):
    method = VisPruner(keep=4, step=2)
    inputs = _inputs(model, padding_side="right")
    keep = hand_keep(model, method, inputs)
    expected_inputs = hand_inputs(model, inputs, keep, padding_side="right")
    assert_matches_unmodified(model, method, inputs, expected_inputs, real=expected_inputs["attention_mask"].bool())


def test_bad_calls_are_clear_errors(model):
    inputs = _inputs(model)
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match="PTP"):
            model(**inputs)
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="pruning needs image_sizes"):
            model(**{**inputs, "image_sizes": None})
        with pytest.raises(ValueError, match="image_sizes must be"):
            model(**{**inputs, "image_sizes": inputs["image_sizes"][:2]})
        with pytest.raises(ValueError, match="image_sizes: an image of 80 x 48"):
            model(**{**inputs, "image_sizes": torch.tensor([[80, 48], *SIZES[1:]])})
        with pytest.raises(ValueError, match="pixel_values must be"):
            model(**{**inputs, "pixel_values": inputs["pixel_values"][None]})
        if not _lighton(model):  # LightOnOCR's projector always takes the tower's last layer
            with pytest.raises(ValueError, match="vision_feature_layer must be a single int"):
                model(**inputs, vision_feature_layer=[-1, -2])
