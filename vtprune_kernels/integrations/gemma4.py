"""Gemma 4 (``Gemma4ForConditionalGeneration``): a vision tower at each image's own resolution, pooled k x k.

The processor turns every image into up to ``max_patches`` patches at its own aspect ratio, padded
at the END to the batch's patch count (``pixel_values`` [images, P, 3*p*p], ``image_position_ids``
[images, P, 2] holding each patch's (x, y), (-1, -1) for padding); the tower attends over each
image's real patches (a key mask), its pooler averages every k x k block of patches
(``pooling_kernel_size``, 3) into one soft token, in raster order of the pooled grid, and
``embed_vision`` maps the soft tokens to the language model. The selection runs per image on that
pooled grid, as on Gemma 3:

- scores: the attention each patch receives inside its image (no [CLS]: VisPruner as HIVTP), the
  padded rows' real queries and keys scored alone (``VisionScoreCapture(row_lengths=...)``), pooled
  with the pooler's own position pooling;
- VisPruner's de-duplication compares the pooler's output (the pooled tower features);
- budgets per image: min(keep, soft tokens); the kept features are rows of the model's own
  ``get_image_features``.

The language model attends bidirectionally inside each image on its sliding layers
(``mm_token_type_ids``): the pruned prompt's ``mm_token_type_ids`` lose the same columns, so an
image's kept tokens stay one block. Videos and audio are refused (images only, so far). Selection
indices: raster indices into the image's pooled grid.
"""
from __future__ import annotations

import threading
from typing import List

import torch

from .adapter import PrunedImages, make_captured, require_vision_only, score_layers, select
from .capture import VisionScoreCapture
from .gemma3 import Gemma3Adapter
from .vision_runner import VisionTower


def pooled_scores(pooler, chunks, positions: torch.Tensor, length: int) -> torch.Tensor:
    """float32 [n, length]: per-patch scores (one [1, n_b] chunk per image, its real patches) pooled with the
    tower's own position pooling (``pooler``; padding counts zero, as the pooler counts its zeroed
    features); ``positions`` [n, P, 2]. Shared by ``apply()`` and the vLLM plugin."""
    n, P = positions.shape[:2]
    padded = torch.zeros(n, P, 1, dtype=torch.float32, device=chunks[0].device)
    for b, chunk in enumerate(chunks):
        padded[b, : chunk.shape[1], 0] = chunk[0]
    out, _ = pooler._avg_pool_by_positions(padded, positions, length)
    return out[..., 0]


def pooled_grid(positions: torch.Tensor, kernel: int, tokens: int, family: str):
    """(rows, columns) of an image's pooled grid from its real patches' HOST positions [n_b, 2] (x, y), pooled
    ``kernel`` x ``kernel``; a clear error when the tower's ``tokens`` soft tokens are not that grid."""
    rows, cols = (int(positions[:, 1].max()) + 1) // kernel, (int(positions[:, 0].max()) + 1) // kernel
    if rows * cols != tokens:
        raise ValueError(f"{family}: an image's {tokens} soft tokens are not its {rows} x {cols} pooled grid")
    return rows, cols


class Gemma4Adapter(Gemma3Adapter):
    """Prunes the images of one ``Gemma4ForConditionalGeneration`` call."""

    family = "Gemma4ForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "image_position_ids")
    host_inputs = ("mm_token_type_ids", "image_position_ids")
    token_type_inputs = ("mm_token_type_ids",)

    def describe_tower(self):
        tower = self.inner.vision_tower
        layers = tower.encoder.layers
        return VisionTower(module=tower, layers=layers, attention_module=lambda i: layers[i].self_attn, has_cls=False)

    def real_lengths(self, positions: torch.Tensor, pixel_values: torch.Tensor) -> List[int]:
        """Per image, its number of real patches (host ``positions`` [n, P, 2]; padding must be a suffix)."""
        if pixel_values.dim() != 3:
            raise ValueError(f"pixel_values must be [num_images, patches, values], got shape {tuple(pixel_values.shape)}")
        if positions.dim() != 3 or tuple(positions.shape) != (*pixel_values.shape[:2], 2):
            raise ValueError(
                f"image_position_ids must be [num_images, patches, 2] = [{pixel_values.shape[0]}, {pixel_values.shape[1]}, 2], "
                f"got shape {tuple(positions.shape)}"
            )
        real = (positions != -1).all(-1)
        lengths = real.sum(1)
        if not bool((real == (torch.arange(real.shape[1]) < lengths[:, None])).all()):
            raise ValueError(f"{self.family}: image_position_ids mark padding patches before real ones (padding must come last)")
        return lengths.tolist()

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        for name in ("pixel_values_videos", "input_features"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{self.family}: pruning supports images only; a call with {name} is not supported yet")
        pixel_values = kwargs["pixel_values"]
        if kwargs.get("image_position_ids") is None:
            raise ValueError(f"{self.family}: pruning needs image_position_ids with pixel_values")
        positions = reads.get("image_position_ids")
        lengths = self.real_lengths(positions, pixel_values)
        needs = method.needs(False)
        require_vision_only(needs, method, self.family)  # before resolving PTP's LLM layer
        needs = self.resolved(needs, method)

        tower = self.inner.vision_tower
        pooled, owner = {}, threading.get_ident()

        def keep_pooled(module, args, output):
            if threading.get_ident() == owner:
                pooled["features"], pooled["mask"] = output

        hook = tower.pooler.register_forward_hook(keep_pooled)
        try:
            if needs.query_rows == "none":
                features = self.inner.get_image_features(pixel_values, kwargs["image_position_ids"]).pooler_output
                scores = None
            else:
                layers = score_layers(needs, self.tower.num_layers - 1, self.tower.num_layers)
                capture = VisionScoreCapture(self.tower, layers, needs.query_rows, backend=backend, row_lengths=lengths)
                with capture:
                    features = self.inner.get_image_features(pixel_values, kwargs["image_position_ids"]).pooler_output
                scores = pooled_scores(tower.pooler, capture.chunk_scores(), kwargs["image_position_ids"], pooled["mask"].shape[1])
        finally:
            hook.remove()

        masks = []
        for b, image in enumerate(features):
            T = image.shape[0]
            grid = pooled_grid(positions[b, : lengths[b]], int(tower.config.pooling_kernel_size), T, self.family)
            image_scores = None if scores is None else scores[b : b + 1, pooled["mask"][b]]
            image_features = pooled["features"][b : b + 1, pooled["mask"][b]] if needs.features else None
            captured = make_captured(needs, grid, image_scores, image_features, batch_size=1, device=image.device)
            masks.append(select(method, captured, (1, T), backend))
        keep = [mask[0] for mask in reads.fetch(*masks)]  # the call's host synchronisation: kept counts decide the prompt

        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from ..methods._device import from_host

        kept = [image[from_host(k.nonzero().flatten(), image.device)] for image, k in zip(features, keep)]
        return PrunedImages(
            pooler_output=kept,
            placeholder_keep=keep,
            selection=[k.nonzero().flatten() for k in keep],
            num_tokens=[image.shape[0] for image in features],
            encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=tuple(kept))},
        )
