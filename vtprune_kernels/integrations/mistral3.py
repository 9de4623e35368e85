"""Mistral 3 (``Mistral3ForConditionalGeneration``: Mistral-Small-3.1 / 3.2): a Pixtral tower at each
image's own resolution and a 2x2 patch merger.

Every image keeps its aspect ratio: the processor resizes it to a multiple of patch x merge pixels,
the tower cuts it into an h x w patch grid (``image_sizes`` // patch) and runs all the images of a
call as ONE packed sequence with block-diagonal attention (2-D rotary positions per image). The
projector normalises each patch, concatenates every 2 x 2 block (``patch_merger``: ``unfold``, the
merged token t = i * (w/2) + j takes patches (2i + di, 2j + dj)) and projects it: the language model
gets (h/2) x (w/2) tokens per image, written in the prompt as h/2 rows of w/2 ``[IMG]`` each ended
by ``[IMG_BREAK]``, the last by ``[IMG_END]``. The selection runs per image on that merged grid:

- scores: the attention each patch receives (Pixtral has no [CLS]: VisPruner scores it as HIVTP does)
  inside its own image (``VisionScoreCapture(segments=...)`` cuts the packed q/k per image), pooled
  2 x 2 as the merger groups patches (``methods.pixel_shuffle_pool``, raster order);
- VisPruner's de-duplication compares the merger's input (the normalised, concatenated 2 x 2 block);
- budgets per image: min(keep, (h/2)*(w/2)); the kept features are rows of the projector's output.

In the prompt only ``[IMG]`` placeholders go: each row keeps its kept tokens, in order, and its
``[IMG_BREAK]`` (a row with nothing kept keeps its break), so the language model still sees the
image's row structure. Selection indices: raster indices into the image's merged grid.
"""
from __future__ import annotations

import threading
from typing import List, Tuple

import torch

from ..methods._device import from_host
from ..methods.pixel_shuffle_pooling import pixel_shuffle_pool
from .adapter import (
    PrunedImages,
    TowerAdapter,
    check_strategy,
    config_or_call,
    make_captured,
    require_vision_only,
    score_layers,
    select,
)
from .capture import VisionScoreCapture
from .vision_runner import describe_tower, run_tower


def merged_scores(scores: torch.Tensor, grid: Tuple[int, int], merge: int) -> torch.Tensor:
    """float32 [B, (h/m)*(w/m)]: per-patch scores [B, h*w] of an h x w patch grid pooled onto the merged
    tokens (the mean of each m x m block, raster order: the patch merger's ``unfold``); a last odd
    row or column, which the merger drops, is dropped."""
    h, w = grid
    rows, cols = h // merge * merge, w // merge * merge
    cropped = scores.view(-1, h, w)[:, :rows, :cols].reshape(scores.shape[0], rows * cols)
    return pixel_shuffle_pool(cropped, (rows, cols), merge)


def projected_with_merger_input(projector, hidden: torch.Tensor, image_sizes):
    """(the projector's output [sum T, D], its patch merger's input [sum T, m*m*C]) for the tower's packed
    output ``hidden`` [S, C]: the model's own projector (transformers' or vLLM's), the merger's input
    read by a forward pre-hook on ``patch_merger.merging_layer`` (this thread's call only)."""
    seen, owner = {}, threading.get_ident()

    def keep_input(module, args):
        if threading.get_ident() == owner:
            seen["input"] = args[0]

    handle = projector.patch_merger.merging_layer.register_forward_pre_hook(keep_input)
    try:
        projected = projector(hidden, image_sizes)
    finally:
        handle.remove()
    return projected, seen["input"]


class Mistral3Adapter(TowerAdapter):
    """Prunes the images of one ``Mistral3ForConditionalGeneration`` call."""

    family = "Mistral3ForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "image_sizes", "vision_feature_layer")

    def __init__(self, model):
        super().__init__(model)
        self.merge = int(model.config.spatial_merge_size)
        self.patch = int(model.config.vision_config.patch_size)

    def patch_grids(self, image_sizes: torch.Tensor, pixel_values: torch.Tensor) -> List[Tuple[int, int]]:
        """Per image, its (h, w) patch grid (host ``image_sizes`` [n, 2] in pixels, as the tower crops)."""
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [num_images, C, H, W], got shape {tuple(pixel_values.shape)}")
        if image_sizes.dim() != 2 or tuple(image_sizes.shape) != (pixel_values.shape[0], 2):
            raise ValueError(
                f"image_sizes must be [num_images, 2] = [{pixel_values.shape[0]}, 2] (height, width), "
                f"got shape {tuple(image_sizes.shape)}"
            )
        grids = []
        for height, width in image_sizes.tolist():
            smallest = self.patch * self.merge
            if not (smallest <= height <= pixel_values.shape[2] and smallest <= width <= pixel_values.shape[3]):
                raise ValueError(
                    f"image_sizes: an image of {height} x {width} px does not fit pixel_values "
                    f"{tuple(pixel_values.shape[2:])} or is smaller than one merged token ({smallest} px)"
                )
            grids.append((height // self.patch, width // self.patch))
        return grids

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        pixel_values = kwargs["pixel_values"]
        if kwargs.get("image_sizes") is None:
            raise ValueError(f"{self.family}: pruning needs image_sizes with pixel_values")
        sizes = reads.get("image_sizes")  # host copy of a tensor; a list as given
        grids = self.patch_grids(torch.as_tensor(kwargs["image_sizes"] if sizes is None else sizes), pixel_values)
        layer = self.tower.hidden_state_layer(self.feature_layer_arg(kwargs))
        self.check_call(kwargs)
        needs = method.needs(self.tower.has_cls)
        require_vision_only(needs, method, self.family)  # before resolving PTP's LLM layer
        needs = self.resolved(needs, method)

        m = self.merge
        merged = [(h // m, w // m) for h, w in grids]
        tower_kwargs = {"image_sizes": kwargs["image_sizes"]}
        if needs.query_rows == "none":
            hidden = run_tower(self.tower, pixel_values, feature_layer=layer, last_layer=layer, tower_kwargs=tower_kwargs)["features"]
            scores = [None] * len(grids)
        else:
            layers = score_layers(needs, layer, self.tower.num_layers)
            capture = VisionScoreCapture(self.tower, layers, needs.query_rows, backend=backend, segments=[h * w for h, w in grids])
            with capture:
                hidden = run_tower(
                    self.tower, pixel_values, feature_layer=layer, last_layer=max(layer, *layers), tower_kwargs=tower_kwargs
                )["features"]
            scores = [merged_scores(s, grid, m) for s, grid in zip(capture.chunk_scores(), grids)]
        projected, merger_input = self.project(hidden[0], kwargs["image_sizes"])

        masks, first = [], 0
        for s, grid in zip(scores, merged):
            T = grid[0] * grid[1]
            features = merger_input[None, first : first + T] if needs.features else None
            captured = make_captured(needs, grid, s, features, batch_size=1, device=hidden.device)
            masks.append(select(method, captured, (1, T), backend))
            first += T
        keep = [mask[0] for mask in reads.fetch(*masks)]  # the call's host synchronisation: kept counts decide the prompt

        kept = projected[from_host(torch.cat(keep).nonzero().flatten(), projected.device)]
        return PrunedImages(
            pooler_output=list(torch.split(kept, [int(k.sum()) for k in keep])),
            placeholder_keep=keep,
            selection=[k.nonzero().flatten() for k in keep],
            num_tokens=[t_h * t_w for t_h, t_w in merged],
        )

    def feature_layer_arg(self, kwargs: dict) -> int:
        """The tower layer whose output the projector takes, as the model counts it (-1: the last)."""
        return config_or_call(kwargs, "vision_feature_layer", self.model.config)

    def check_call(self, kwargs: dict) -> None:
        """Per-call checks beyond the shared ones (none for Mistral 3)."""

    def project(self, hidden: torch.Tensor, image_sizes):
        """(the projector's output [sum T, D], the features VisPruner compares [sum T, F]) for the tower's
        packed output ``hidden`` [S, C]: Mistral 3's projector and its patch merger's input."""
        return projected_with_merger_input(self.inner.multi_modal_projector, hidden, image_sizes)


class PixtralLlavaAdapter(Mistral3Adapter):
    """Pixtral in its LLaVA form (``LlavaForConditionalGeneration`` with a Pixtral tower, e.g. Pixtral-12B):
    Mistral 3's plan without a merger (every patch a token, ``[IMG_BREAK]`` rows of patches), LLaVA's
    projector on the feature layer; VisPruner compares the tower's features."""

    family = "LlavaForConditionalGeneration (Pixtral tower)"
    consumed_kwargs = ("pixel_values", "image_sizes", "vision_feature_layer", "vision_feature_select_strategy")

    def __init__(self, model):
        TowerAdapter.__init__(self, model)
        self.merge = 1
        self.patch = int(model.config.vision_config.patch_size)

    def check_call(self, kwargs: dict) -> None:
        check_strategy(config_or_call(kwargs, "vision_feature_select_strategy", self.model.config), False, self.family)

    def project(self, hidden: torch.Tensor, image_sizes):
        return self.inner.multi_modal_projector(hidden), hidden



class LightOnOcrAdapter(Mistral3Adapter):
    """LightOnOCR (``LightOnOcrForConditionalGeneration``): Mistral 3's plan on its tower's last layer
    (``vision_encoder``) and projector (``vision_projection``: norm, 2x2 patch merger, MLP); an image is
    written as its merged tokens only (no row breaks), so the prompt keeps the kept tokens in raster order."""

    family = "LightOnOcrForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "image_sizes")

    def describe_tower(self):
        return describe_tower(self.inner.vision_encoder)

    def feature_layer_arg(self, kwargs: dict) -> int:
        return -1  # the projector takes the tower's last_hidden_state

    def project(self, hidden: torch.Tensor, image_sizes):
        return projected_with_merger_input(self.inner.vision_projection, hidden, image_sizes)
