"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): anyres tiles, packed with newline tokens.

Each image is a base tile (the whole image resized) plus a grid of tiles; the tower sees every
tile as an independent image of h x w patches. Packing stays the model's own: the model's
``pack_image_features`` (base tile first, then the grid tiles re-assembled into one big grid,
unpadded to the image's aspect ratio, one newline token at the end of every row) is applied to a
*tracer* holding each token's source index, which gives the packed position of every source token
(and of every newline) BEFORE the selection.

Budgets count what reaches the language model. Unpadding drops the rows (or columns) of the big
grid that only hold padding; the tokens of a tile that survive it form one rectangle of the tile
(the base tile always survives whole). The method selects among those survivors only (``valid``
in ``Captured``): VisPruner, Random and Uniform keep exactly min(keep, survivors of the tile) per
tile; HIVTP runs its regions and windows on each tile's surviving rectangle as a grid of its own.

Newline tokens are kept where the model places them (one per row of the unpadded grid, whatever was
kept in that row): they are never scored and not counted in ``keep``; ``num_newlines`` reports them
(``handle.last_num_newlines``). The published VisPruner runs LLaVA-NeXT at a fixed 672x672 with
neither unpadding nor newlines; keeping the model's own packing means that a method keeping every
token reproduces the unpruned model exactly. The number of placeholders of an image = kept patch
tokens + newlines.

Selection indices: tile * (h*w) + patch, over the image's tiles in the tower's order.
"""
from __future__ import annotations

import dataclasses
from typing import List

import torch

from ..methods._device import from_host
from .adapter import PrunedImages, TowerAdapter, capture_vision, make_captured, select, square_grid, stacked_tiles


@dataclasses.dataclass
class TileSelection:
    """One call's images after the selection, before the host read: keep bool [tiles, N] on the device,
    tiles per image, per image the packed sources (``packed_sources``), the surviving tokens (host bool
    [tiles, N]), the tower's features [tiles, N, C], the method's name (for errors)."""

    keep: torch.Tensor
    tiles: List[int]
    sources: List[torch.Tensor]
    survives: torch.Tensor
    features: torch.Tensor
    method_name: str


class LlavaNextAdapter(TowerAdapter):
    """Prunes the images of one ``LlavaNextForConditionalGeneration`` call."""

    family = "LlavaNextForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "image_sizes", "vision_feature_layer", "vision_feature_select_strategy")

    def __init__(self, model):
        super().__init__(model)
        if not self.tower.has_cls:
            raise ValueError(f"{self.family}: only towers with a [CLS] token (CLIP) are supported")

    def tiles_per_image(self, image_sizes) -> list:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        cfg = self.model.config
        return [
            image_size_to_num_patches(
                image_size=size, grid_pinpoints=cfg.image_grid_pinpoints, patch_size=cfg.vision_config.image_size
            )
            for size in image_sizes
        ]

    def packed_sources(self, tiles: list, tokens_per_tile: int, image_sizes) -> list:
        """Per image, int64 [L_i]: the source token (tile * N + patch) of every packed position, -1 for newlines."""
        tracers = [
            torch.arange(t * tokens_per_tile, dtype=torch.float64).view(t, tokens_per_tile, 1) for t in tiles
        ]
        packed, _ = self.inner.pack_image_features(
            tracers, image_sizes, vision_feature_select_strategy="default", image_newline=torch.tensor([-1.0], dtype=torch.float64)
        )
        return [p[:, 0].long() for p in packed]

    @staticmethod
    def surviving_tokens(sources: list, tiles: list, tokens_per_tile: int) -> torch.Tensor:
        """Host bool [sum(tiles), N]: the tokens that appear in the packed images (``packed_sources``),
        i.e. that survive the model's unpadding. One rectangle per tile (possibly empty)."""
        total = sum(tiles) * tokens_per_tile
        slots, offset = [], 0
        for t, src in zip(tiles, sources):
            slots.append(torch.where(src >= 0, src + offset, total))  # newlines go to a spare slot
            offset += t * tokens_per_tile
        survives = torch.zeros(total + 1, dtype=torch.bool)
        survives[torch.cat(slots)] = True
        return survives[:total].view(sum(tiles), tokens_per_tile)

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        _, layer, needs = self.vision_setup(kwargs, method)
        images = self.image_selection(kwargs, method, backend, reads, needs, layer)
        (keep,) = reads.fetch(images.keep)  # the call's host synchronisation: kept counts decide the prompt
        return self.gather_images(images, keep)

    def image_selection(self, kwargs: dict, method, backend: str, reads, needs, layer: int) -> TileSelection:
        """The call's images scored, packed on the host and selected (``keep`` still on the device)."""
        pixel_values = kwargs["pixel_values"]
        if kwargs.get("image_sizes") is None:
            raise ValueError(f"{self.family}: pruning needs image_sizes with pixel_values")
        # tile counts decide which tiles the tower sees: host values (one early sync if on the GPU)
        image_sizes = reads.get("image_sizes")
        tiles = self.tiles_per_image(image_sizes)
        pixel_values = stacked_tiles(pixel_values, tiles)

        vis = capture_vision(self.tower, pixel_values, needs, feature_layer=layer, backend=backend)
        features = vis.features[:, 1:]  # [tiles, N, C]
        n_tiles, N = features.shape[:2]
        scores = None if vis.scores is None else vis.scores[:, 1:]
        sources = self.packed_sources(tiles, N, image_sizes)  # host bookkeeping, before the selection
        survives = self.surviving_tokens(sources, tiles, N)
        captured = make_captured(needs, square_grid(N, self.family), scores, features, valid=survives)
        keep = select(method, captured, (n_tiles, N), backend)
        return TileSelection(keep, tiles, sources, survives, features, type(method).__name__)

    def gather_images(self, images: TileSelection, keep: torch.Tensor) -> PrunedImages:
        """Every image's kept tokens, projected and packed as the model packs them (its newlines included),
        from ``keep`` [tiles, N] read on the host."""
        if bool((keep & ~images.survives).any()):
            raise RuntimeError(
                f"{images.method_name} kept tokens outside captured.valid (tokens the model's unpadding removes): "
                "on LLaVA-NeXT a method must select among captured.valid"
            )
        features = images.features
        N = features.shape[1]
        newline = self.inner.image_newline
        flat_features, flat_keep = features.reshape(-1, features.shape[-1]), keep.reshape(-1)
        result = PrunedImages(pooler_output=[], placeholder_keep=[], selection=[], num_tokens=[], num_newlines=[])
        offset = 0
        for t, src in zip(images.tiles, images.sources):
            # host bookkeeping of the packed order; the device only gathers and scatters by index
            is_newline = src < 0
            kept_here = is_newline | flat_keep[offset + src.clamp(min=0)]
            kept_src = src[kept_here & ~is_newline]
            token_slots = (~is_newline[kept_here]).nonzero().flatten()
            projected = self.inner.multi_modal_projector(flat_features[from_host(offset + kept_src, features.device)])
            image = newline.to(projected.dtype).expand(int(kept_here.sum()), -1).clone()
            image[from_host(token_slots, image.device)] = projected
            result.pooler_output.append(image)
            result.placeholder_keep.append(kept_here)
            result.selection.append(kept_src.sort().values)
            result.num_tokens.append(t * N)
            result.num_newlines.append(int(is_newline.sum()))
            offset += t * N
        return result
