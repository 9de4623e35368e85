"""Pruned Qwen3.5 for vLLM: ``VTPruneQwen3_5ForConditionalGeneration`` and
``VTPruneQwen3_5MoeForConditionalGeneration``.

Qwen3.5 has Qwen3-VL's vision tower without DeepStack and writes images and videos as Qwen3-VL
does (a video frame by frame, timestamps between); its language model is hybrid (linear-attention
and full-attention layers). The pruning is Qwen3-VL's (``qwen3_vl.Qwen3VLPruning``, the module doc
there): per frame, the merger on the kept tokens only, unpruned M-RoPE positions.
"""
from __future__ import annotations

from vllm.model_executor.models.qwen3_5 import (
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3_5MoeProcessingInfo,
    Qwen3_5ProcessingInfo,
)
from vllm.model_executor.models.qwen3_vl import Qwen3VLDummyInputsBuilder
from vllm.multimodal import MULTIMODAL_REGISTRY

from .qwen3_vl import Qwen3VLPruning, VTPruneQwen3VLMultiModalProcessor
from .qwen_vl_pruning import KeptCountsInfo, PositionChannels

ARCHITECTURE = "VTPruneQwen3_5ForConditionalGeneration"
MOE_ARCHITECTURE = "VTPruneQwen3_5MoeForConditionalGeneration"


class VTPruneQwen3_5ProcessingInfo(KeptCountsInfo, Qwen3_5ProcessingInfo):
    """Qwen3.5's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


class VTPruneQwen3_5MoeProcessingInfo(KeptCountsInfo, Qwen3_5MoeProcessingInfo):
    """Qwen3.5-MoE's processing info with the kept counts."""

    vtprune_architecture = MOE_ARCHITECTURE


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen3VLMultiModalProcessor, info=VTPruneQwen3_5ProcessingInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class VTPruneQwen3_5ForConditionalGeneration(Qwen3VLPruning, PositionChannels, Qwen3_5ForConditionalGeneration):
    """vLLM's Qwen3.5 with every image and video frame pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen3VLMultiModalProcessor, info=VTPruneQwen3_5MoeProcessingInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class VTPruneQwen3_5MoeForConditionalGeneration(Qwen3VLPruning, PositionChannels, Qwen3_5MoeForConditionalGeneration):
    """vLLM's Qwen3.5-MoE with every image and video frame pruned by the configured method."""

    vtprune_architecture = MOE_ARCHITECTURE
