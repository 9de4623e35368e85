"""Pruned LFM2-VL for vLLM: ``VTPruneLfm2VLForConditionalGeneration``.

As ``apply()`` (``integrations/lfm2_vl.py``): per tile (the tiles, then the thumbnail, or the single
image) on its unshuffled (h/2) x (w/2) grid; scores are the attention each patch receives inside its
tile (vLLM packs a batch's tiles into one unpadded sequence and attends per tile: the capture scores
each segment alone), pooled 2 x 2; VisPruner's de-duplication compares the unshuffled tower output;
min(keep, tokens) per tile; the projector runs on the kept tokens only (its input is the unshuffled tower
output, which the selection already compares: the step leaves vLLM's image step before the projector and
projects the kept rows of all tiles in one call, ``forward_from_unshuffled``). The processor
writes min(keep, tokens) ``<image>`` per tile; the tile markers, the thumbnail marker and the image's
start / end tokens stay. Random draws one image's tiles in order from one fresh ``Random(keep, seed)``.

The encoder CUDA graph (``cudagraph_mm_encoder``) is refused: it replays the unpruned encoder.
Selection indices (``vtprune_selections``): per tile, raster indices into its token grid, as ``apply()``'s.
"""
from __future__ import annotations

from typing import List

import torch
from vllm.model_executor.models.lfm2_vl import (
    Lfm2VLDummyInputsBuilder,
    Lfm2VLForConditionalGeneration,
    Lfm2VLMultiModalProcessor,
    Lfm2VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods.pixel_shuffle_pooling import pixel_shuffle_pool
from ..lfm2_vl import unshuffled_tokens
from ..stop_tower import StopTower, stopped_early
from .encoder_pruning import EncoderPruning, check_encoder_runs_eagerly
from .switch import method_from_config

ARCHITECTURE = "VTPruneLfm2VLForConditionalGeneration"


class VTPruneLfm2VLProcessingInfo(Lfm2VLProcessingInfo):
    """LFM2-VL's processing info with min(keep, tokens) per tile and thumbnail; validates the switch (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), ARCHITECTURE).keep

    def get_num_image_tokens(self, **kwargs):
        thumbnail, tile = super().get_num_image_tokens(**kwargs)
        return min(self.vtprune_keep, thumbnail), min(self.vtprune_keep, tile)


@MULTIMODAL_REGISTRY.register_processor(
    Lfm2VLMultiModalProcessor, info=VTPruneLfm2VLProcessingInfo, dummy_inputs=Lfm2VLDummyInputsBuilder
)
class VTPruneLfm2VLForConditionalGeneration(Lfm2VLForConditionalGeneration):
    """vLLM's LFM2-VL with every tile pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = "model"):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_encoder_runs_eagerly(vllm_config, ARCHITECTURE)
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)
        self.vtprune_factor = int(self.config.downsample_factor)

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the tiles encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _tower_output(self, image_input, grids) -> tuple:
        """(the tower's packed output [sum h*w, C], the capture's scores or None): vLLM's own image step, left
        when it calls the projector."""
        captured = {}

        def stop(module, args, kwargs):
            captured["hidden"] = kwargs["vision_features_packed"] if "vision_features_packed" in kwargs else args[0]
            raise StopTower()

        with self.vtprune.capture(segments=lambda layer: [h * w for h, w in grids]) as capture:
            with stopped_early([self.multi_modal_projector.register_forward_pre_hook(stop, with_kwargs=True)]):
                self.image_pixels_to_features(image_input["pixel_values"], spatial_shapes=image_input["spatial_shapes"])
        if "hidden" not in captured:
            raise RuntimeError(f"{ARCHITECTURE}: vLLM's image step returned without calling its projector")
        return captured["hidden"], capture.scores()

    def _process_image_input(self, image_input) -> List[torch.Tensor]:
        spatial_shapes = image_input["spatial_shapes"]  # [tiles, 2], kept on the CPU by vLLM
        grids = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
        hidden, scores = self._tower_output(image_input, grids)
        factor = self.vtprune_factor

        rows, counts, keeps, first, tile = [], [], [], 0, 0
        for count in image_input["num_patches"].tolist():  # tiles per image (kept on the CPU)
            method, kept = self.vtprune.image_method(), 0
            for h, w in grids[tile : tile + count]:
                grid = (h // factor, w // factor)
                tile_scores = None if scores is None else pixel_shuffle_pool(scores[:, first : first + h * w], (h, w), factor)
                tokens = unshuffled_tokens(hidden[first : first + h * w], (h, w), factor)  # [T, 4C], the projector's input
                features = self.vtprune.selection_features(lambda: tokens[None], 1, grid[0] * grid[1], hidden)
                keep = self.vtprune.select(tile_scores, features, grid, [1], method=method)
                keeps.append(keep)
                size = min(self.vtprune.keep, keep.shape[1])
                rows.append(tokens[torch.nonzero_static(keep[0], size=size)[:, 0]])
                kept += size
                first += h * w
                tile += 1
            counts.append(kept)
        self.vtprune.record(keeps)  # per tile, as apply()
        projected = self.multi_modal_projector.forward_from_unshuffled(torch.cat(rows))  # kept rows only
        return list(projected.split(counts))
