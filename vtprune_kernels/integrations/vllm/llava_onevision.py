"""Pruned LLaVA-OneVision for vLLM: ``VTPruneLlavaOnevisionForConditionalGeneration``.

As ``apply()`` (integrations/llava_onevision.py): images per tile, among each tile's share of the
packed grid (unpadded and, for large grids, bilinearly downsized), scores and de-duplication
features resized with the tokens; videos per frame on the pooled grid; newlines kept where the
model puts them. The packed layout comes from vLLM's own ``_merge_image_patch_embeddings`` applied
to a coordinate tracer (``onevision_packing.packed_rows``), so the processor's placeholder count and
the model's output are the same function of the image size.

vLLM packs every image with anyres (it has no ``batch_num_images``) and with ``anyres_max_9``,
whatever the config says; the plugin follows it. Selection indices (``vtprune_selections``): per
image, indices into its packed visual tokens (base tile first, newlines excluded), as
``apply()``'s; per video, frame * (pooled tokens per frame) + index.
"""
from __future__ import annotations

import functools
import types
from typing import List, Tuple

import torch
from vllm.model_executor.models.llava_next import get_anyres_image_grid_shape
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageEmbeddingInputs,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods._device import from_host
from ..adapter import check_strategy
from ..onevision_packing import PackedRows, canvas, packed_rows, pooled_grid, resized, valid_slots
from .encoder_pruning import EncoderPruning
from .switch import method_from_config

ARCHITECTURE = "VTPruneLlavaOnevisionForConditionalGeneration"


class OnevisionLayout:
    """The packing of a LLaVA-OneVision config, per image size (cached): tiles, packed rows, kept counts."""

    def __init__(self, hf_config, keep: int):
        self.config = hf_config
        self.keep = keep
        self.side = hf_config.vision_config.image_size // hf_config.vision_config.patch_size
        self.tokens_per_tile = self.side * self.side
        self.frame_grid = pooled_grid((self.side, self.side))
        # vLLM's merge reads only ``config`` (and ``image_newline`` for one tile) from the model
        self._tracer_model = types.SimpleNamespace(config=hf_config, image_newline=torch.zeros(3, dtype=torch.float64))

    def tile_grid(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        return get_anyres_image_grid_shape(image_size, self.config.image_grid_pinpoints, self.config.vision_config.image_size)

    def num_tiles(self, image_size: Tuple[int, int]) -> int:
        rows, cols = self.tile_grid(image_size)
        return rows * cols + 1  # the grid tiles plus the base tile

    def pack(self, model, image_size: Tuple[int, int], values: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
        """vLLM's packing of one image's values [tiles, N, ...] ([L, ...])."""
        return LlavaOnevisionForConditionalGeneration._merge_image_patch_embeddings(
            model, torch.tensor(image_size), values, image_newline=newline, strategy="spatial_unpad"
        )

    @functools.lru_cache(maxsize=1024)
    def rows(self, image_size: Tuple[int, int]) -> PackedRows:
        tiles = self.num_tiles(image_size)
        return packed_rows(
            lambda tracer: self.pack(self._tracer_model, image_size, tracer, tracer.new_zeros(3)),
            tiles, (self.side, self.side), self.tile_grid(image_size),
        )

    @functools.lru_cache(maxsize=1024)
    def valid(self, image_size: Tuple[int, int]) -> torch.Tensor:
        """Host bool [tiles, N]: the canvas slots holding a packed token."""
        return valid_slots([self.rows(image_size)], [self.num_tiles(image_size)], self.tokens_per_tile)

    @functools.lru_cache(maxsize=1024)
    def kept(self, image_size: Tuple[int, int]) -> int:
        """Packed rows an image keeps: min(keep, its share) per tile, plus every newline."""
        per_tile = self.valid(image_size).sum(1).clamp(max=self.keep)
        return int(per_tile.sum()) + int((~self.rows(image_size).is_token).sum())

    def max_kept(self) -> int:
        """An upper bound of ``kept`` over every image size (vLLM sizes its encoder cache with it).

        Per pinpoint of r x c tiles: the base tile's min(keep, N); the grid tiles' kept tokens, at most
        keep per tile, the grid's r*c*N tokens, or 1.21 * 9 * N (vLLM's anyres_max_9: a larger grid is
        downsized to about 9 * N tokens); one newline per row, at most r * side rows."""
        N, side, tile = self.tokens_per_tile, self.side, self.config.vision_config.image_size
        bound = 0
        for height, width in self.config.image_grid_pinpoints:
            r, c = height // tile, width // tile
            grid = min(self.keep * r * c, r * c * N, int(1.21 * 9 * N))
            bound = max(bound, min(self.keep, N) + grid + r * side)
        return bound

    def kept_per_frame(self) -> int:
        return min(self.keep, self.frame_grid[0] * self.frame_grid[1])


class VTPruneLlavaOnevisionProcessingInfo(LlavaOnevisionProcessingInfo):
    """LLaVA-OneVision's processing info with the kept counts; validates the switch (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        config = self.get_hf_config()
        self.vtprune_layout = OnevisionLayout(config, method_from_config(config, ARCHITECTURE).keep)

    def get_num_image_tokens(self, *, image_width: int, image_height: int, **_) -> int:
        return self.vtprune_layout.kept((int(image_height), int(image_width)))

    def get_max_image_tokens(self) -> int:
        return self.vtprune_layout.max_kept()

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts):
        """The encoder cache's sizing: the kept-count bound for images (no dummy image size has the
        most kept tokens for every config), vLLM's own video maximum (with the kept frame count)."""
        return {"image": self.get_max_image_tokens(), "video": self.get_max_video_tokens(seq_len, mm_counts)}

    def _get_num_frame_tokens(self, *, image_width: int, image_height: int) -> int:
        return self.vtprune_layout.kept_per_frame()


@MULTIMODAL_REGISTRY.register_processor(
    LlavaOnevisionMultiModalProcessor, info=VTPruneLlavaOnevisionProcessingInfo, dummy_inputs=LlavaOnevisionDummyInputsBuilder
)
class VTPruneLlavaOnevisionForConditionalGeneration(LlavaOnevisionForConditionalGeneration):
    """vLLM's LLaVA-OneVision with every image pruned per tile and every video per frame."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if not isinstance(self.config.vision_feature_layer, int):
            raise ValueError(f"{ARCHITECTURE}: vision_feature_layer must be one layer, got {self.config.vision_feature_layer!r}")
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)
        self.vtprune_has_cls = self.vtprune.layout.has_cls
        check_strategy(self.config.vision_feature_select_strategy, self.vtprune_has_cls, ARCHITECTURE)
        self.vtprune_layout = OnevisionLayout(self.config, self.vtprune.keep)

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the images and videos encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _features_and_scores(self, pixel_values: torch.Tensor):
        """(features [T, N, C], float32 scores [T, N] or None) of the tower, [CLS] dropped."""
        with self.vtprune.capture() as capture:
            features = self._image_pixels_to_features(self.vision_tower, pixel_values)
        scores = capture.scores()
        if scores is not None and self.vtprune_has_cls:
            scores = scores[:, 1:]
        return features, scores

    def _select(self, scores, features, resize, grid, items, valid=None):
        """keep [T, n] of rows resized by ``resize``, one Random generator per item (``items``: rows per item)."""
        out_scores, out_features = resized(scores, features if self.vtprune.needs.features else None, resize)
        shape_of = self.vtprune.selection_features(lambda: out_features, features.shape[0], grid[0] * grid[1], features)
        return self.vtprune.select(out_scores, shape_of, grid, items, valid=valid)

    def _process_image_input(self, image_input):
        if isinstance(image_input, LlavaOnevisionImageEmbeddingInputs):
            return super()._process_image_input(image_input)  # precomputed embeddings: nothing to prune
        if image_input.get("image_sizes") is None:
            raise ValueError(f"{ARCHITECTURE}: pruning needs image_sizes")
        layout = self.vtprune_layout
        sizes = [tuple(int(v) for v in s) for s in image_input["image_sizes"].tolist()]  # kept on the CPU by vLLM
        tiles = [layout.num_tiles(s) for s in sizes]
        pixel_values = torch.cat([pv[:t] for pv, t in zip(image_input["pixel_values"], tiles)])
        features, scores = self._features_and_scores(pixel_values)
        rows = [layout.rows(s) for s in sizes]
        side = (layout.side, layout.side)

        def on_canvases(values):
            packed = [layout.pack(self, s, v, v.new_zeros(v.shape[2:])) for s, v in zip(sizes, values.split(tiles))]
            return canvas(values, packed, rows, tiles)

        keep = self._select(scores, features, on_canvases, side, tiles, valid=torch.cat([layout.valid(s) for s in sizes]))
        projected = self.multi_modal_projector(features)
        out, kept_tokens, first = [], [], 0
        for size, layout_rows, t, image_projected in zip(sizes, rows, tiles, projected.split(tiles)):
            packed = layout.pack(self, size, image_projected, self.image_newline)
            tile = from_host(layout_rows.tile.clamp(min=0), keep.device)
            slot = from_host(layout_rows.slot.clamp(min=0), keep.device)
            is_token = from_host(layout_rows.is_token, keep.device)
            token_kept = keep[first + tile, slot] & is_token
            row_keep = token_kept | ~is_token
            out.append(packed[torch.nonzero_static(row_keep, size=layout.kept(size)).flatten()])
            kept_tokens.append(token_kept[is_token])
            first += t
        self.vtprune.record(kept_tokens)
        return out

    def _process_video_pixels(self, inputs):
        videos = inputs["pixel_values_videos"]
        frames = [v.shape[0] for v in videos]
        features, scores = self._features_and_scores(torch.cat(list(videos)))
        layout = self.vtprune_layout
        keep = self._select(scores, features, self.apply_pooling, layout.frame_grid, frames)  # [frames, n]
        pooled = self.apply_pooling(self.multi_modal_projector(features))  # [frames, n, D]
        per_frame = layout.kept_per_frame()
        newline = self.image_newline[None].to(pooled.dtype)
        out: List[torch.Tensor] = []
        for video_keep, video_pooled, f in zip(keep.split(frames), pooled.split(frames), frames):
            flat_keep = video_keep.reshape(-1)
            index = torch.nonzero_static(flat_keep, size=f * per_frame).flatten()
            out.append(torch.cat([video_pooled.reshape(-1, pooled.shape[-1])[index], newline]))
        self.vtprune.record([k.reshape(-1) for k in keep.split(frames)])
        return out
