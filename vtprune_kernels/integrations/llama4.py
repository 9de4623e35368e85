"""Llama 4 (``Llama4ForConditionalGeneration``: Scout, Maverick): tiles, a [CLS] token appended last, pixel shuffle.

The processor cuts an image into up to 16 tiles of 336 px plus, when there are several, a global
(downsized) tile after them; every tile is an image of its own for the tower (``pixel_values``
[tiles, 3, 336, 336]). The tower appends a [CLS] token AFTER the 24 x 24 patches, runs its layers,
normalises the output (``layernorm_post``), drops the [CLS] token and pixel-shuffles each tile by
``pixel_shuffle_ratio`` (0.5: 12 x 12 = 144 tokens, InternVL's shuffle) into its adapter MLP; the
projector maps those to the language model. The prompt holds each tile as a run of 144 ``<|patch|>``
placeholders between tile separators. The selection runs per tile on the shuffled grid, as on InternVL:

- scores: the attention of the [CLS] query row (the LAST row) over the patches (VisPruner), or the
  attention each patch receives (HIVTP), pooled 2 x 2 over the patches each token merges
  (``methods.pixel_shuffle_pool``);
- VisPruner's de-duplication compares the pixel-shuffled tower features (the adapter's input); the
  feature layer is the tower's last layer after ``layernorm_post``, as the model;
- budgets per tile: min(keep, 144); the kept features are rows of the tower's own adapter output,
  which the model projects.

Tile separators and image markers stay in the prompt. Selection indices: per tile (``last_selection``
has one entry per tile, the global tile last), raster indices into its shuffled grid.
"""
from __future__ import annotations

import torch

from ..methods.pixel_shuffle_pooling import pixel_shuffle_pool
from .adapter import PrunedImages, TowerAdapter, capture_vision, gather_rows, make_captured, require_vision_only, select, square_grid


class Llama4Adapter(TowerAdapter):
    """Prunes the image tiles of one ``Llama4ForConditionalGeneration`` call."""

    family = "Llama4ForConditionalGeneration"
    consumed_kwargs = ("pixel_values",)
    host_inputs = ()

    def __init__(self, model):
        self.model = model
        self.inner = model  # Llama 4 holds its vision model, projector and language model itself
        self.tower = self.describe_tower()
        self.image_token_id = int(model.config.image_token_id)
        ratio = float(model.config.vision_config.pixel_shuffle_ratio)
        self.ratio, self.factor = ratio, round(1 / ratio)

    def describe_tower(self):
        from .vision_runner import describe_tower

        return describe_tower(self.inner.vision_model)

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.llama4.modeling_llama4 import pixel_shuffle

        pixel_values = kwargs["pixel_values"]
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [num_tiles, C, H, W], got shape {tuple(pixel_values.shape)}")
        needs = method.needs(self.tower.has_cls)
        require_vision_only(needs, method, self.family)  # before resolving PTP's LLM layer
        needs = self.resolved(needs, method)
        last = self.tower.num_layers - 1
        vis = capture_vision(self.tower, pixel_values, needs, feature_layer=last, backend=backend)
        hidden = self.tower.final_norm(vis.features)[:, :-1]  # layernorm_post, [CLS] (the last token) dropped
        patch_grid = square_grid(hidden.shape[1], self.family)
        grid = (patch_grid[0] // self.factor, patch_grid[1] // self.factor)
        n, T = hidden.shape[0], grid[0] * grid[1]
        scores = None if vis.scores is None else pixel_shuffle_pool(vis.scores[:, :-1], patch_grid, self.factor)
        features = pixel_shuffle(hidden, self.ratio) if needs.features else None
        captured = make_captured(needs, grid, scores, features, batch_size=n, device=hidden.device)
        keep = select(method, captured, (n, T), backend)
        (keep,) = reads.fetch(keep)  # the call's host synchronisation: kept counts decide the prompt

        kept = gather_rows(self.inner.vision_model.vision_adapter(hidden), keep)  # rows of the tower's own output
        return PrunedImages(
            pooler_output=list(torch.split(kept, keep.sum(1).tolist())),
            placeholder_keep=list(keep),
            selection=[row.nonzero().flatten() for row in keep],
            num_tokens=[T] * n,
            encoder_outputs={"image": BaseModelOutputWithPooling(last_hidden_state=kept)},
        )
