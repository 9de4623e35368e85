"""LFM2-VL (``Lfm2VlForConditionalGeneration``, Liquid AI): a SigLIP2 NaFlex tower over tiles, pixel unshuffle 2.

The processor cuts a large image into tiles (512 px, 32 x 32 patches on the released models) row by
row plus a thumbnail, a small one into a single image at its own size; every tile is a row of
``pixel_values`` [tiles, P, 3*p*p] padded at the END to ``max_num_patches``
(``pixel_attention_mask``), ``spatial_shapes`` [tiles, 2] its (h, w) in patches. The tower attends
over each tile's real patches (a key mask); the projector reads its ``last_hidden_state`` (after
``post_layernorm``), unshuffles each 2 x 2 block of patches into one token ((h/2) x (w/2) tokens in
raster order) and maps it through a LayerNorm and an MLP. The prompt writes each tile's tokens after
its position marker (``<|img_row_R_col_C|>``, ``<|img_thumbnail|>``) between ``<|image_start|>`` and
``<|image_end|>``: the markers stay.

Selection per tile on its unshuffled grid, min(keep, tokens) per tile:
- scores: the attention each patch receives among its tile's real patches (no [CLS]: VisPruner as
  HIVTP; the padded rows' real queries and keys scored alone: ``VisionScoreCapture(row_lengths=...)``),
  averaged over the 2 x 2 patches each token merges (``pixel_shuffle_pool``);
- VisPruner's de-duplication compares the unshuffled tower output (the projector's input);
- the kept features are rows of the model's own ``get_image_features``.

``last_selection``: one entry per tile (thumbnail included), raster indices into its token grid.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from ..methods._device import from_host
from ..methods.pixel_shuffle_pooling import pixel_shuffle_pool
from .adapter import PrunedImages, TowerAdapter, make_captured, require_vision_only, score_layers, select
from .capture import VisionScoreCapture


def unshuffled_tokens(hidden: torch.Tensor, grid: Tuple[int, int], factor: int) -> torch.Tensor:
    """[T, factor^2 * C]: one tile's tower output [h*w, C] (raster order) with each factor x factor block of patches
    concatenated into one token ((row offset, column offset, C) order, as the projector's pixel unshuffle), tokens
    in raster order of the (h/factor) x (w/factor) grid. Shared by ``apply()`` and the vLLM plugin."""
    h, w = grid
    blocks = hidden.reshape(h // factor, factor, w // factor, factor, hidden.shape[-1]).permute(0, 2, 1, 3, 4)
    return blocks.reshape((h // factor) * (w // factor), -1)


class Lfm2VlAdapter(TowerAdapter):
    """Prunes the image tiles of one ``Lfm2VlForConditionalGeneration`` call."""

    family = "Lfm2VlForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "spatial_shapes", "pixel_attention_mask")
    host_inputs = ("spatial_shapes",)

    def tile_grids(self, kwargs: dict, shapes: torch.Tensor) -> List[tuple]:
        """Per tile, its (h, w) patch grid from the host ``spatial_shapes``, checked against the pixels."""
        pixel_values = kwargs["pixel_values"]
        if pixel_values.dim() != 3:
            raise ValueError(f"pixel_values must be [tiles, patches, values], got shape {tuple(pixel_values.shape)}")
        for name in ("spatial_shapes", "pixel_attention_mask"):
            if kwargs.get(name) is None:
                raise ValueError(f"{self.family}: pruning needs {name} with pixel_values")
        if tuple(shapes.shape) != (pixel_values.shape[0], 2):
            raise ValueError(f"spatial_shapes must be [tiles, 2] = [{pixel_values.shape[0]}, 2], got shape {tuple(shapes.shape)}")
        factor = int(self.model.config.downsample_factor)
        grids = [(int(h), int(w)) for h, w in shapes.tolist()]
        for h, w in grids:
            if h % factor or w % factor or h * w > pixel_values.shape[1]:
                raise ValueError(
                    f"spatial_shapes: a tile of {h} x {w} patches is not whole {factor} x {factor} blocks within "
                    f"{pixel_values.shape[1]} patches"
                )
        return grids

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        grids = self.tile_grids(kwargs, reads.get("spatial_shapes"))
        needs = method.needs(False)
        require_vision_only(needs, method, self.family)
        needs = self.resolved(needs, method)
        args = (kwargs["pixel_values"], kwargs["spatial_shapes"], kwargs["pixel_attention_mask"])
        if needs.query_rows == "none":
            out, chunks = self.inner.get_image_features(*args), None
        else:
            layers = score_layers(needs, self.tower.num_layers - 1, self.tower.num_layers)
            capture = VisionScoreCapture(self.tower, layers, needs.query_rows, backend=backend, row_lengths=[h * w for h, w in grids])
            with capture:
                out = self.inner.get_image_features(*args)
            chunks = capture.chunk_scores()  # per tile [1, h*w], its real patches

        factor = int(self.model.config.downsample_factor)
        masks = []
        for b, (h, w) in enumerate(grids):
            grid = (h // factor, w // factor)
            T = grid[0] * grid[1]
            scores = None if chunks is None else pixel_shuffle_pool(chunks[b], (h, w), factor)
            features = unshuffled_tokens(out.last_hidden_state[b, : h * w], (h, w), factor)[None] if needs.features else None
            captured = make_captured(needs, grid, scores, features, batch_size=1, device=out.last_hidden_state.device)
            masks.append(select(method, captured, (1, T), backend))
        keep = [mask[0] for mask in reads.fetch(*masks)]  # the call's host synchronisation: kept counts decide the prompt

        kept = [tile[from_host(k.nonzero().flatten(), tile.device)] for tile, k in zip(out.pooler_output, keep)]
        return PrunedImages(
            pooler_output=kept,
            placeholder_keep=keep,
            selection=[k.nonzero().flatten() for k in keep],
            num_tokens=[k.numel() for k in keep],
            encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=kept)},
        )
