"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): anyres images, resized packing, pooled videos.

What reaches the language model differs from the tower's tokens in three ways, all kept as the
model's own code does them (so that a method keeping every token reproduces the unpruned model):

- **Single images** (``anyres_max_N``): a base tile (the whole image) then the grid of tiles
  re-assembled into one big grid, unpadded to the image's aspect ratio and, when it holds more
  than N tiles' worth of tokens (x 1.1), **bilinearly downsized** (``pack_image_features``), with
  one newline token per row of the big grid.
- **Several images in one prompt** (``batch_num_images`` > 1): the base tile only, plus one newline.
- **Videos**: every frame's h x w grid bilinearly pooled to ceil(h/2) x ceil(w/2)
  (``apply_pooling``); one newline after the video's last frame.

A downsized token mixes up to four tower tokens, so the selection runs on the tokens the language
model gets, not on the tower's: scores and VisPruner's de-duplication features go through the
model's own resize (a bilinear mix of the tower tokens' scores and features, in float32), and the
projected features are the model's own packed/pooled ones, gathered at the kept rows.

Selection units and budgets:
- **Images: per tile**, as on LLaVA-NeXT. Every token of the big grid belongs to the tile its
  nearest source token lies in (found by packing a tracer of source coordinates through the model's
  ``pack_image_features``; bilinear resizing of a coordinate map gives each token's sampling point).
  A tile's tokens form one rectangle of the packed grid (its unpadded, downsized share); the method
  sees each tile as an h x w canvas whose ``valid`` tokens are that rectangle, top-left aligned,
  and keeps min(keep, rectangle size) of them (HIVTP's regions and windows, Uniform's spread on the
  rectangle as a grid of its own). The base tile is a full h x w grid.
- **Videos: per frame**, over the pooled grid: min(keep, ceil(h/2) * ceil(w/2)) per frame.
- Newline tokens are never scored and always kept where the model puts them (``num_newlines``).
- Random draws the images' tiles first, then the video frames.

A per-call ``vision_aspect_ratio`` is ignored, as the model's own forward ignores it (it packs with
its config's). Selection indices (``last_selection``): per image, indices into its packed visual tokens (newlines
excluded): base tile first (raster order), then the big grid in raster order; per video,
frame * (pooled tokens per frame) + raster index.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from ..methods._device import from_host
from .adapter import PrunedImages, TowerAdapter, capture_vision, make_captured, select, square_grid, stacked_tiles
from .onevision_packing import PackedRows, canvas, packed_rows, pooled_grid, resized, valid_slots


class LlavaOnevisionAdapter(TowerAdapter):
    """Prunes the images and videos of one ``LlavaOnevisionForConditionalGeneration`` call."""

    family = "LlavaOnevisionForConditionalGeneration"
    consumed_kwargs = (
        "pixel_values", "image_sizes", "pixel_values_videos", "image_sizes_videos", "batch_num_images",
        "vision_feature_layer", "vision_feature_select_strategy", "vision_aspect_ratio",
    )
    pixel_kwargs = ("pixel_values", "pixel_values_videos")
    host_inputs = ("image_sizes", "batch_num_images")

    def __init__(self, model):
        super().__init__(model)
        self.video_token_id = int(model.config.video_token_id)

    # -- images ---------------------------------------------------------------------------------
    def tiles_per_image(self, image_sizes, batch_num_images) -> List[int]:
        """The model's tile count per image: base + grid tiles when the prompt has one image, else 1."""
        from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

        cfg = self.model.config
        if batch_num_images is None:
            patched = [True] * len(image_sizes)
        else:
            patched = [int(n) == 1 for n in batch_num_images.tolist() for _ in range(int(n))]
            if len(patched) != len(image_sizes):
                raise ValueError(f"batch_num_images sums to {len(patched)} images, image_sizes holds {len(image_sizes)}")
        return [
            image_size_to_num_patches(size, cfg.image_grid_pinpoints, cfg.vision_config.image_size) if p else 1
            for size, p in zip(image_sizes, patched)
        ]

    def packed_rows(self, image_size, tiles: int, grid: Tuple[int, int]) -> PackedRows:
        """``onevision_packing.packed_rows`` of one image, packed by this model's ``pack_image_features``."""
        from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape

        if tiles == 1:
            return packed_rows(None, 1, grid, (1, 1))
        cfg = self.model.config
        tile_grid = get_anyres_image_grid_shape(image_size, cfg.image_grid_pinpoints, cfg.vision_config.image_size)
        return packed_rows(
            lambda tracer: self._pack(tracer, [tiles], image_size[None], tracer.new_zeros(3))[0], tiles, grid, tile_grid
        )

    def _pack(self, values, tiles, image_sizes, newline):
        """Per image, the model's ``pack_image_features`` of ``values`` [T, N, ...] (split by ``tiles``)."""
        packed, _ = self.inner.pack_image_features(
            list(torch.split(values, tiles)), image_sizes, image_newline=newline,
            vision_aspect_ratio=self.model.config.vision_aspect_ratio,
        )
        return packed

    def _image_selection(self, kwargs, method, backend, reads, needs, layer):
        """(keep [T, N] on the device, tiles per image, their ``PackedRows``, features [T, N, C], the canvases'
        valid slots [T, N] on the host) for the call's images."""
        pixel_values = kwargs["pixel_values"]
        if kwargs.get("image_sizes") is None:
            raise ValueError(f"{self.family}: pruning needs image_sizes with pixel_values")
        image_sizes = reads.get("image_sizes")
        tiles = self.tiles_per_image(image_sizes, reads.get("batch_num_images"))
        pixel_values = stacked_tiles(pixel_values, tiles)
        features, scores = self._tower(pixel_values, needs, layer, backend)
        grid = square_grid(features.shape[1], self.family)
        layouts = [self.packed_rows(size, t, grid) for size, t in zip(image_sizes, tiles)]
        valid = valid_slots(layouts, tiles, grid[0] * grid[1])
        canvas_scores, canvas_features = resized(
            scores, features if needs.features else None,
            lambda v: canvas(v, self._pack(v, tiles, image_sizes, v.new_zeros(v.shape[2:])), layouts, tiles),
        )
        captured = make_captured(needs, grid, canvas_scores, canvas_features, batch_size=sum(tiles), valid=valid,
                                 device=features.device)
        return select(method, captured, tuple(valid.shape), backend), tiles, layouts, features, valid

    # -- videos ---------------------------------------------------------------------------------
    def _video_selection(self, kwargs, method, backend, needs, layer):
        """(keep [V*F, n] on the device, V, F, features [V*F, N, C]) for the call's videos."""
        videos = kwargs["pixel_values_videos"]
        if videos.dim() != 5:
            raise ValueError(f"pixel_values_videos must be [videos, frames, C, H, W], got shape {tuple(videos.shape)}")
        V, F = videos.shape[:2]
        features, scores = self._tower(videos.flatten(0, 1), needs, layer, backend)
        grid = pooled_grid(square_grid(features.shape[1], self.family))
        pooled_scores, pooled_features = resized(scores, features if needs.features else None, self.inner.apply_pooling)
        captured = make_captured(needs, grid, pooled_scores, pooled_features, batch_size=V * F, device=features.device)
        return select(method, captured, (V * F, grid[0] * grid[1]), backend), V, F, features

    # -- shared -----------------------------------------------------------------------------------
    def _tower(self, pixel_values, needs, layer, backend):
        """(features [T, N, C], float32 scores [T, N] or None) of the feature layer, [CLS] dropped."""
        vis = capture_vision(self.tower, pixel_values, needs, feature_layer=layer, backend=backend)
        start = 1 if self.tower.has_cls else 0
        return vis.features[:, start:], None if vis.scores is None else vis.scores[:, start:]

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        _, layer, needs = self.vision_setup(kwargs, method)
        has_images, has_videos = kwargs.get("pixel_values") is not None, kwargs.get("pixel_values_videos") is not None
        masks = []
        if has_images:
            image_keep, tiles, layouts, image_features, _ = self._image_selection(kwargs, method, backend, reads, needs, layer)
            masks.append(image_keep)
        if has_videos:
            video_keep, V, F, video_features = self._video_selection(kwargs, method, backend, needs, layer)
            masks.append(video_keep)
        host = reads.fetch(*masks)  # the call's host synchronisation: kept counts decide the prompt

        result = PrunedImages(pooler_output=[], placeholder_keep=[], selection=[], num_tokens=[], num_newlines=[],
                              encoder_outputs={}, placeholder_tokens=[])
        if has_images:
            self._gather_images(result, host[0], tiles, layouts, image_features, reads.get("image_sizes"))
        if has_videos:
            self._gather_videos(result, host[-1], V, F, video_features)
        return result

    def _gather_images(self, result: PrunedImages, keep, tiles, layouts, features, image_sizes):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        projected = self.inner.multi_modal_projector(features)
        packed = self._pack(projected, tiles, image_sizes, self.inner.image_newline)
        first = 0
        for rows, layout, t in zip(packed, layouts, tiles):
            token_kept = keep[first + layout.tile.clamp(min=0), layout.slot.clamp(min=0)]
            row_keep = ~layout.is_token | token_kept
            result.pooler_output.append(rows[from_host(row_keep.nonzero().flatten(), rows.device)])
            self._record(result, row_keep, token_kept[layout.is_token], self.image_token_id)
            first += t
        result.encoder_outputs["image"] = BaseModelOutputWithPooling(pooler_output=result.pooler_output)

    def _gather_videos(self, result: PrunedImages, keep, V, F, features):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooled = self.inner.apply_pooling(self.inner.multi_modal_projector(features))  # [V*F, n, D]
        n = pooled.shape[1]
        newline = self.inner.image_newline.to(pooled.dtype)[None]
        videos = []
        for v in range(V):
            kept = keep[v * F : (v + 1) * F].reshape(-1)  # [F*n], frame-major
            index = from_host((v * F * n + kept.nonzero().flatten()), pooled.device)
            videos.append(torch.cat([pooled.reshape(-1, pooled.shape[-1])[index], newline]))
            self._record(result, torch.cat([kept, torch.ones(1, dtype=torch.bool)]), kept, self.video_token_id)
        result.encoder_outputs["video"] = BaseModelOutputWithPooling(pooler_output=torch.cat(videos)[None])

    @staticmethod
    def _record(result: PrunedImages, row_keep, token_kept, token_id):
        """Book one entry: its placeholders' keep mask, kept indices among its visual tokens, counts."""
        result.placeholder_keep.append(row_keep)
        result.selection.append(token_kept.nonzero().flatten())
        result.num_tokens.append(int(token_kept.numel()))
        result.num_newlines.append(int(row_keep.numel() - token_kept.numel()))
        result.placeholder_tokens.append(token_id)
