"""Pruned PaddleOCR-VL for vLLM: ``VTPrunePaddleOCRVLForConditionalGeneration``, images.

As ``apply()`` (``integrations/paddleocr_vl.py``): the Qwen2 family's encoder step (``qwen2_vl.Qwen2VLPruning``:
selection per image on the 2x2-merged grid, min(keep, merged tokens) per image, kept tokens at their unpruned
M-RoPE positions through position channels) on PaddleOCR-VL's NaViT tower. What differs from Qwen2-VL:

- the tower runs once per image, as stock vLLM runs it (``encode_image``), and is left before its
  ``post_layernorm``; each run's scores come from its single attention segment;
- its patches are in raster order: the last layer's output and the scores are put in merge-block order
  (``merged_grid.raster_to_merge_order``) before pooling and de-duplication;
- the merge of a kept block is the tower's ``post_layernorm`` and the ``mlp_AR`` projector
  (``paddle_merge``, shared with ``apply()``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from vllm.model_executor.models.paddleocr_vl import (
    PaddleOCRVLDummyInputsBuilder,
    PaddleOCRVLForConditionalGeneration,
    PaddleOCRVLMultiModalProcessor,
    PaddleOCRVLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods._device import from_host
from ...methods.merged_grid import raster_to_merge_order
from ..paddleocr_vl import paddle_merge
from ..stop_tower import StopTower, stopped_early
from .qwen2_vl import Qwen2VLPruning
from .qwen_vl_pruning import KeptCountsInfo, PositionChannels, PrunedPlaceholders

ARCHITECTURE = "VTPrunePaddleOCRVLForConditionalGeneration"


class VTPrunePaddleOCRVLProcessingInfo(KeptCountsInfo, PaddleOCRVLProcessingInfo):
    """PaddleOCR-VL's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


class VTPrunePaddleOCRVLMultiModalProcessor(PrunedPlaceholders, PaddleOCRVLMultiModalProcessor):
    """PaddleOCR-VL's processor with min(keep, merged tokens) placeholders per image."""


class PaddleOCRVLPruning(Qwen2VLPruning):
    """Model mixin: the Qwen2 family's encoder step on PaddleOCR-VL's tower and projector."""

    def _vision_depth(self) -> int:
        return len(self.visual.vision_model.encoder.layers)

    def _block_width(self) -> int:
        return int(self.config.vision_config.hidden_size)

    def embed_multimodal(self, **kwargs):
        item = self._parse_and_validate_image_input(**kwargs)
        if item is None:
            return ()
        return self._pruned_embeddings(item.pixel_values, item.image_grid_thw, None)

    def _encode(self, pixel_values, grids) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Per image (pixels [t*h*w, 3, P, P]), the tower's run up to its last layer, scored; the outputs and
        scores of the call in merge-block order."""
        hidden: List[torch.Tensor] = []
        scores: List[Optional[torch.Tensor]] = []
        for pixels, grid in zip(pixel_values, grids):
            patches = grid[0] * grid[1] * grid[2]
            with self.vtprune.capture(lambda layer: [patches]) as capture:  # one attention segment: the image
                hidden.append(self._run_image(pixels, grid))
            captured = capture.scores()
            scores.append(None if captured is None else captured[0])
        order = from_host(raster_to_merge_order(grids, self._vtprune_merge), hidden[0].device)
        patch_scores = None if scores[0] is None else torch.cat(scores)[order]
        return torch.cat(hidden)[order], patch_scores

    def _run_image(self, pixels: torch.Tensor, grid) -> torch.Tensor:
        """[t*h*w, C]: the last layer's output of one image, stock vLLM's ``encode_image`` left before the
        tower's ``post_layernorm``."""
        captured: Dict[str, torch.Tensor] = {}

        def stop(module, args):
            captured["hidden"] = args[0]
            raise StopTower()

        with stopped_early([self.visual.vision_model.post_layernorm.register_forward_pre_hook(stop)]):
            self.encode_image(pixels, torch.tensor(grid))
        if "hidden" not in captured:
            raise RuntimeError(f"{self.vtprune_architecture}: the vision tower returned without its post_layernorm")
        return captured["hidden"].reshape(-1, self._vtprune_width)

    def _merge_kept(self, kept: torch.Tensor) -> torch.Tensor:
        """[K, D]: post_layernorm and the projector on kept blocks [K, 4C] (as the model's tower and mlp_AR)."""
        return paddle_merge(self.visual.vision_model.post_layernorm, self.mlp_AR, kept.reshape(-1, self._vtprune_width))


@MULTIMODAL_REGISTRY.register_processor(
    VTPrunePaddleOCRVLMultiModalProcessor, info=VTPrunePaddleOCRVLProcessingInfo, dummy_inputs=PaddleOCRVLDummyInputsBuilder
)
class VTPrunePaddleOCRVLForConditionalGeneration(PaddleOCRVLPruning, PositionChannels, PaddleOCRVLForConditionalGeneration):
    """vLLM's PaddleOCR-VL with every image pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE
