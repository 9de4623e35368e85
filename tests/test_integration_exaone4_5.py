"""apply() on EXAONE 4.5: Qwen2.5-VL's tower with grouped-query vision attention, plain 1-D text positions.

The batch is test_integration_qwen_vl.py's (row 0: a 6x10-patch image; row 1: a 4x6-patch image and a
2-frame 4x4-patch video). Every pruned forward is compared with the independent hand pipeline of
qwen_oracles.py (scores recomputed from each block's own q/k, its key heads repeated for their query
heads; the language model on the shortened prompt, its columns numbered as the model numbers them).
"""
import pytest
import torch

import tiny_models as tm
from qwen_oracles import (
    assert_forward_matches_hand,
    assert_generate_matches_hand,
    assert_keeping_everything_is_unpruned,
    hand_keep_of_call,
)
from vtprune_kernels import HIVTP, Random, Uniform, VisPruner

IMAGES = [(1, 6, 10), (1, 4, 6)]
VIDEOS = [(2, 4, 4)]
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "hivtp": lambda: HIVTP(layers=(1, 3), region_ratio=0.5),
    "hivtp-windowed": lambda: HIVTP(layers=(0, 2)),
    "random": lambda: Random(keep=3, seed=4),
    "uniform": lambda: Uniform(keep=2),
}


@pytest.fixture(scope="module")
def model():
    return tm.exaone4_5()


def _inputs():
    rows = [[("image", IMAGES[0])], [("image", IMAGES[1]), ("video", VIDEOS[0])]]
    ids, mask, _ = tm.qwen_prompts(rows)
    return dict(
        input_ids=ids, attention_mask=mask, pixel_values=tm.qwen_pixels(IMAGES, seed=2), image_grid_thw=torch.tensor(IMAGES),
        pixel_values_videos=tm.qwen_pixels(VIDEOS, seed=3), video_grid_thw=torch.tensor(VIDEOS),
    )


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep_of_call(model, method, inputs)
    handle = assert_forward_matches_hand(model, method, inputs, keep)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k, _ in keep]


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs()
    assert_keeping_everything_is_unpruned(model, inputs, 15)


def test_generate_matches_hand_greedy_steps(model):
    method = VisPruner(keep=3, step=2)
    inputs = _inputs()
    assert_generate_matches_hand(model, method, inputs, hand_keep_of_call(model, method, inputs))
