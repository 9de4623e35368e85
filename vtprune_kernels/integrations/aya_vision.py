"""Aya Vision (``AyaVisionForConditionalGeneration``): a SigLIP tower over tiles, pixel shuffle, a SwiGLU projector.

The processor cuts an image into up to ``max_patches`` tiles (364 px on the released models) plus a
global tile (the whole image, last); every tile is an image of its own for the tower
(``pixel_values`` [tiles, 3, H, W]). The projector pixel-shuffles each tile's h x w patch grid by
``downsample_factor`` (2: 26 x 26 -> 13 x 13 = 169 tokens, InternVL's shuffle), normalises and
projects the tokens. The prompt writes each tile as ``TILE_i`` (``TILE_GLOBAL``) followed by its
run of ``<|IMG_PATCH|>`` placeholders. The selection runs per tile on the shuffled grid:

- scores: the attention each patch receives (SigLIP has no [CLS]: VisPruner as HIVTP), pooled over
  the patches each token merges (``methods.pixel_shuffle_pool``);
- VisPruner's de-duplication compares the pixel-shuffled tower features (the projector's input);
- budgets per tile: min(keep, T); the kept features are rows of the projector's own output.

Tile markers stay in the prompt. Selection indices: per tile (``last_selection`` has one entry per
tile), raster indices into its shuffled grid.
"""
from __future__ import annotations

import torch

from ..methods.pixel_shuffle_pooling import pixel_shuffle_pool
from .adapter import PrunedImages, TowerAdapter, capture_vision, gather_rows, make_captured, select, square_grid


class AyaVisionAdapter(TowerAdapter):
    """Prunes the image tiles of one ``AyaVisionForConditionalGeneration`` call."""

    family = "AyaVisionForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "vision_feature_layer", "vision_feature_select_strategy")
    host_inputs = ()

    def patch_features(self, kwargs: dict, method, backend: str):
        """(what the projector takes [tiles, h*w, C], float32 scores [tiles, h*w] or None, the method's needs):
        the feature layer's output, [CLS] dropped."""
        _, layer, needs = self.vision_setup(kwargs, method)
        vis = capture_vision(self.tower, kwargs["pixel_values"], needs, feature_layer=layer, backend=backend)
        start = 1 if self.tower.has_cls else 0
        return vis.features[:, start:], None if vis.scores is None else vis.scores[:, start:], needs

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pixel_values = kwargs["pixel_values"]
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [num_tiles, C, H, W], got shape {tuple(pixel_values.shape)}")
        features, scores, needs = self.patch_features(kwargs, method, backend)
        projector = self.inner.multi_modal_projector
        factor = int(projector.downsample_factor)
        patch_grid = square_grid(features.shape[1], self.family)
        grid = (patch_grid[0] // factor, patch_grid[1] // factor)
        n, T = features.shape[0], grid[0] * grid[1]
        scores = None if scores is None else pixel_shuffle_pool(scores, patch_grid, factor)
        shuffled = projector.pixel_shuffle(features).reshape(n, T, -1) if needs.features else None
        captured = make_captured(needs, grid, scores, shuffled, batch_size=n, device=features.device)
        keep = select(method, captured, (n, T), backend)
        (keep,) = reads.fetch(keep)  # the call's host synchronisation: kept counts decide the prompt

        kept = gather_rows(projector(features).reshape(n, T, -1), keep)  # rows of the projector's own output
        return PrunedImages(
            pooler_output=list(torch.split(kept, keep.sum(1).tolist())),
            placeholder_keep=list(keep),
            selection=[row.nonzero().flatten() for row in keep],
            num_tokens=[T] * n,
            encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=kept)},
        )
