"""apply() on MiniCPM-V 4.7: MiniCPM-V 4.6's tower, units and selection (the hand selection of
test_integration_minicpmv.py), with canvas M-RoPE positions: every token of an image sits on a 2-D canvas (the
source image stretched over its slices' canvas, each slice at its offset, the markers at the corners).

The expected logits come from the hand pipeline of qwen_oracles.py: the model's own ``get_image_features`` scattered
into the unpruned prompt, the columns the hand selection keeps, each at its position in the model's own
``get_rope_index`` of the UNPRUNED prompt, through the unmodified language model; new tokens at the unpruned max + 1.

The batch: row 0 holds image A (an 8 x 8 patch source image, 2 x 2 tokens, and four 8 x 8 slices in two rows
joined by a newline), row 1 image B (an 8 x 12 source image, 2 x 3 tokens, no slices).
"""
import pytest
import torch

import tiny_models as tm
from qwen_oracles import (
    assert_forward_matches_hand,
    assert_generate_matches_hand,
    assert_keeping_everything_is_unpruned,
    assert_right_padded_forward_matches_hand,
)
from test_integration_minicpmv import METHODS, _layers, hand_keep
from vtprune_kernels import Uniform, VisPruner, apply

UNITS = [(8, 8)] * 5 + [(8, 12)]  # image A: source + 4 slices; image B: source
TOKENS = [(h // 4) * (w // 4) for h, w in UNITS]


@pytest.fixture(scope="module")
def model():
    return tm.minicpmv4_6(v4_7=True)


def _image_a(counts):
    """<image> source </image>, then two rows of two <slice> ... </slice> joined by a newline."""
    ids = [tm.MINICPM_IMAGE_START] + [tm.IMAGE_TOKEN] * counts[0] + [tm.MINICPM_IMAGE_END]
    for k, n in enumerate(counts[1:]):
        if k == 2:
            ids.append(tm.MINICPM_NEWLINE)
        ids += [tm.MINICPM_SLICE_START] + [tm.IMAGE_TOKEN] * n + [tm.MINICPM_SLICE_END]
    return ids


def _prompt(counts, padding_side="left"):
    rows = [[5, 6, 7] + _image_a(counts[:5]) + [8, 9], [10, 11] + [tm.MINICPM_IMAGE_START] + [tm.IMAGE_TOKEN] * counts[5]
            + [tm.MINICPM_IMAGE_END] + [12, 13, 14, 15]]
    width = max(map(len, rows))
    ids = torch.full((2, width), tm.PAD_TOKEN, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        cols = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
        ids[b, cols], mask[b, cols] = torch.tensor(row), 1
    return ids, mask


def _inputs(padding_side="left"):
    ids, mask = _prompt(TOKENS, padding_side)
    pixels, sizes = tm.minicpm_patches(UNITS, seed=4)
    types = (ids == tm.IMAGE_TOKEN).int()
    return dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=types, pixel_values=pixels, target_sizes=sizes)


def _keep(model, method, inputs):
    return [(k, "image") for k in hand_keep(model, method, inputs, _layers(method), units=UNITS)]


def test_canvas_positions_are_not_plain_sequence_positions(model):
    """The test's premise: the unpruned prompt's canvas positions differ from 0..S-1 on the image tokens (a
    pruned prompt numbered by the model itself would move every token after a dropped one)."""
    inputs = _inputs()
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], target_sizes=inputs["target_sizes"],
        attention_mask=inputs["attention_mask"],
    )
    assert not torch.equal(positions[1], positions[2])  # 2-D: height and width differ inside images
    assert int(positions[0, 0].max()) + 1 < int(inputs["attention_mask"][0].sum())  # the canvas is shorter than the run


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = _keep(model, method, inputs)
    handle = assert_forward_matches_hand(model, method, inputs, keep)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k, _ in keep]
    assert handle.last_num_tokens == TOKENS


def test_keeping_everything_gives_the_unpruned_logits(model):
    assert_keeping_everything_is_unpruned(model, _inputs(), max(TOKENS))


def test_generate_matches_hand_greedy_steps(model):
    """Rows keep different counts (HIVTP); every step's logits equal the hand pipeline's, new tokens at the
    unpruned max position + 1, + 2, ..."""
    method = METHODS["hivtp"]()
    inputs = _inputs()
    assert_generate_matches_hand(model, method, inputs, _keep(model, method, inputs))


def test_right_padding(model):
    method = VisPruner(keep=2, step=2)
    inputs = _inputs(padding_side="right")
    assert_right_padded_forward_matches_hand(model, method, inputs, _keep(model, method, inputs))


def test_a_call_without_mm_token_type_ids_is_a_clear_error(model):
    inputs = _inputs()
    del inputs["mm_token_type_ids"]
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="pruning needs mm_token_type_ids"):
            model(**inputs)
