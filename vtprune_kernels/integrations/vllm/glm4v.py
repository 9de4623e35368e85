"""Pruned GLM-4.1V, GLM-4.5V and GLM-OCR for vLLM, images and videos: ``VTPruneGlm4vForConditionalGeneration``,
``VTPruneGlm4vMoeForConditionalGeneration`` and ``VTPruneGlmOcrForConditionalGeneration`` (GLM-4.1V's tower with
q/k norms inside its attention, which the encoder capture sees after the norms, and no learned position
embedding: the same pruning step).

GLM-4V's tower is packed like Qwen2-VL's (2x2 blocks of 14 px patches in merge order, attention
over each image in every block), so the Qwen2 family's encoder step serves it
(``qwen2_vl.Qwen2VLPruning``: scores, selection, offsets). What differs:

- the merge of a 2x2 block: the tower's per-patch norm, a 2x2 convolution and the merger MLP
  (``qwen_tower.glm4v_merge``, shared with ``apply()``), run on the kept blocks only;
- the prompt: an image's placeholders are one run between its delimiters, as a Qwen3-VL frame's
  (``PrunedFrameRuns``, ``frame_run_positions``), at the image's base until ``forward`` adds each
  kept token's offset;
- videos: every frame is written as an image (image placeholders between its delimiters, then its
  timestamp) and keeps min(keep, merged tokens); each frame sits at its own base position, so a kept
  token's offset is (0, row, column) in its frame.
"""
from __future__ import annotations

import torch
from vllm.model_executor.models.glm4_1v import (
    Glm4vDummyInputsBuilder,
    Glm4vForConditionalGeneration,
    Glm4vMoeForConditionalGeneration,
    Glm4vMultiModalProcessor,
    Glm4vProcessingInfo,
)
from vllm.model_executor.models.glm_ocr import GlmOcrForConditionalGeneration
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..qwen_tower import glm4v_merge
from .mrope_positions import frame_run_positions
from .qwen2_vl import Qwen2VLPruning
from .qwen_vl_pruning import KeptCountsInfo, PositionChannels, PrunedFrameRuns, frame_placeholder

ARCHITECTURE = "VTPruneGlm4vForConditionalGeneration"
MOE_ARCHITECTURE = "VTPruneGlm4vMoeForConditionalGeneration"
OCR_ARCHITECTURE = "VTPruneGlmOcrForConditionalGeneration"


class VTPruneGlm4vProcessingInfo(KeptCountsInfo, Glm4vProcessingInfo):
    """GLM-4.1V's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


class VTPruneGlm4vMoeProcessingInfo(KeptCountsInfo, Glm4vProcessingInfo):
    """GLM-4.5V's processing info with the kept counts."""

    vtprune_architecture = MOE_ARCHITECTURE


class VTPruneGlmOcrProcessingInfo(KeptCountsInfo, Glm4vProcessingInfo):
    """GLM-OCR's processing info with the kept counts."""

    vtprune_architecture = OCR_ARCHITECTURE


class VTPruneGlm4vMultiModalProcessor(PrunedFrameRuns, Glm4vMultiModalProcessor):
    """GLM-4V's processor with min(keep, merged tokens) placeholders per image and per video frame."""

    video_frames_use_image_token = True


class Glm4vPruning(Qwen2VLPruning):
    """Model mixin: the Qwen2 family's encoder step with GLM-4V's merge and image positions."""

    def _video_t_factors(self, item, count: int):
        """Every video frame sits at its own base position (its timestamp text moves on past it)."""
        return [0.0] * count

    def _merger_input(self):
        return self.visual.post_layernorm

    def _merge_kept(self, kept: torch.Tensor) -> torch.Tensor:
        """[K, D]: per-patch norm, 2x2 convolution and merger on kept blocks [K, 4C] (as the tower)."""
        return glm4v_merge(self.visual, kept.reshape(-1, self._vtprune_width))

    def get_mrope_input_positions(self, input_tokens, mm_features):
        """Exact text positions of the pruned prompt; each image's placeholders at its base until
        ``forward`` adds its kept tokens' offsets."""
        return frame_run_positions(input_tokens, mm_features, self.config, lambda m: frame_placeholder(self.config, m, True))


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneGlm4vMultiModalProcessor, info=VTPruneGlm4vProcessingInfo, dummy_inputs=Glm4vDummyInputsBuilder
)
class VTPruneGlm4vForConditionalGeneration(Glm4vPruning, PositionChannels, Glm4vForConditionalGeneration):
    """vLLM's GLM-4.1V with every image pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneGlm4vMultiModalProcessor, info=VTPruneGlm4vMoeProcessingInfo, dummy_inputs=Glm4vDummyInputsBuilder
)
class VTPruneGlm4vMoeForConditionalGeneration(Glm4vPruning, PositionChannels, Glm4vMoeForConditionalGeneration):
    """vLLM's GLM-4.5V with every image pruned by the configured method."""

    vtprune_architecture = MOE_ARCHITECTURE


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneGlm4vMultiModalProcessor, info=VTPruneGlmOcrProcessingInfo, dummy_inputs=Glm4vDummyInputsBuilder
)
class VTPruneGlmOcrForConditionalGeneration(Glm4vPruning, PositionChannels, GlmOcrForConditionalGeneration):
    """vLLM's GLM-OCR with every image pruned by the configured method."""

    vtprune_architecture = OCR_ARCHITECTURE
