"""Idefics3 and SmolVLM (``Idefics3ForConditionalGeneration``, ``SmolVLMForConditionalGeneration``):
image splitting, a SigLIP-like tower, pixel shuffle.

The processor splits an image into a grid of tiles plus a global (downsized) image; every tile is
an image of its own for the tower (``pixel_values`` [batch, images, 3, H, W], all-zero images are
batch padding, dropped as the model drops them). The connector pixel-shuffles each tile's h x w
patch grid by ``scale_factor`` s into (h/s) x (w/s) tokens (8 x 8 = 64 on SmolVLM-256M/500M, 9 x 9 = 81
on SmolVLM-2.2B, 13 x 13 = 169 on Idefics3-8B) and projects them. The selection runs per tile on that grid, as on InternVL:

- scores: received attention (no [CLS]; VisPruner as HIVTP) pooled over the s x s patches a token
  merges (``methods.pixel_shuffle_pool``: the connector's order, average in raster order);
- VisPruner's de-duplication compares the pixel-shuffled tower features (the projection's input);
- budgets per tile: min(keep, T); the kept features are rows of the connector's own output.

In the prompt every tile is one run of T placeholders (between its ``<row_i_col_j>`` or
``<global-img>`` markers); each run keeps its kept count, the markers stay. Tiles padded inside
(``pixel_attention_mask`` with masked patches: a padded image's attention ignores the padding,
which the scores cannot yet) are refused. Selection indices: per tile, raster indices into its grid.
"""
from __future__ import annotations

import torch

from ..methods.pixel_shuffle_pooling import pixel_shuffle_pool
from .adapter import PrunedImages, TowerAdapter, capture_vision, gather_rows, make_captured, require_vision_only, select, square_grid
from .vision_runner import describe_tower


class Idefics3Adapter(TowerAdapter):
    """Prunes the images of one Idefics3 / SmolVLM call."""

    consumed_kwargs = ("pixel_values", "pixel_attention_mask")

    def __init__(self, model):
        super().__init__(model)
        self.family = type(model).__name__
        self.factor = int(model.config.scale_factor)

    def describe_tower(self):
        return describe_tower(self.inner.vision_model)

    def _real_tiles(self, kwargs):
        """(tiles [n, 3, H, W], patch mask [n, h, w]) without the batch's padding images, as the model."""
        pixel_values = kwargs["pixel_values"]
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be [batch, images, C, H, W], got shape {tuple(pixel_values.shape)}")
        flat = pixel_values.flatten(0, 1)
        real = (flat != 0).flatten(1).any(1)  # the model's rule: an all-zero image is padding
        tiles = flat[real]
        patch = self.tower.module.config.patch_size
        mask = kwargs.get("pixel_attention_mask")
        if mask is None:
            return tiles, None
        mask = mask.flatten(0, 1)[real].bool()
        patches = mask.unfold(1, patch, patch).unfold(2, patch, patch).flatten(3).any(-1)  # [n, h, w]
        if not bool(patches.all()):
            raise ValueError(
                f"{self.family}: images padded inside (pixel_attention_mask masks some patches) are not supported by "
                "pruning: keep the processor's image splitting on (do_image_splitting=True: every tile is full)"
            )
        return tiles, patches

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        tiles, patches = self._real_tiles(kwargs)
        needs = self.resolved(method.needs(self.tower.has_cls), method)
        require_vision_only(needs, method, self.family)
        last = self.tower.num_layers - 1
        tower_kwargs = None if patches is None else {"patch_attention_mask": patches}
        vis = capture_vision(self.tower, tiles, needs, feature_layer=last, backend=backend, tower_kwargs=tower_kwargs)
        hidden = self.tower.final_norm(vis.features)  # the tower's last_hidden_state [n, h*w, C]
        patch_grid = square_grid(hidden.shape[1], self.family)
        grid = (patch_grid[0] // self.factor, patch_grid[1] // self.factor)
        n, T = hidden.shape[0], grid[0] * grid[1]
        connector = self.inner.connector
        scores = None if vis.scores is None else pixel_shuffle_pool(vis.scores, patch_grid, self.factor)
        features = connector.pixel_shuffle(hidden, self.factor) if needs.features else None
        captured = make_captured(needs, grid, scores, features, batch_size=n, device=hidden.device)
        keep = select(method, captured, (n, T), backend)
        (keep,) = reads.fetch(keep)  # the call's host synchronisation: kept counts decide the prompt

        kept = gather_rows(connector(hidden), keep)  # rows of the connector's own output
        counts = keep.sum(1).tolist()
        # [tiles, kept, D] when every tile keeps as many (older SmolVLM merges tile blocks of that shape),
        # else [K, D] (transformers' flat merge; a tensor, not a list, which every 5.x version takes)
        features = kept.view(n, counts[0], -1) if len(set(counts)) == 1 else kept
        return PrunedImages(
            pooler_output=list(torch.split(kept, counts)),
            placeholder_keep=list(keep),
            selection=[row.nonzero().flatten() for row in keep],
            num_tokens=[T] * n,
            encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)},
        )
