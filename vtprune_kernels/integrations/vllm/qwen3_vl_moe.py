"""Pruned Qwen3-VL-MoE for vLLM: ``VTPruneQwen3VLMoeForConditionalGeneration``.

Qwen3-VL's tower (DeepStack included) and prompt layout with mixture-of-experts text blocks: the
pruning is Qwen3-VL's (``qwen3_vl.Qwen3VLPruning``, the module doc there).
"""
from __future__ import annotations

from vllm.model_executor.models.qwen3_vl import Qwen3VLDummyInputsBuilder
from vllm.model_executor.models.qwen3_vl_moe import Qwen3VLMoeForConditionalGeneration, Qwen3VLMoeProcessingInfo
from vllm.multimodal import MULTIMODAL_REGISTRY

from .qwen3_vl import Qwen3VLPruning, VTPruneQwen3VLMultiModalProcessor
from .qwen_vl_pruning import KeptCountsInfo, PositionChannels

ARCHITECTURE = "VTPruneQwen3VLMoeForConditionalGeneration"


class VTPruneQwen3VLMoeProcessingInfo(KeptCountsInfo, Qwen3VLMoeProcessingInfo):
    """Qwen3-VL-MoE's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen3VLMultiModalProcessor, info=VTPruneQwen3VLMoeProcessingInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class VTPruneQwen3VLMoeForConditionalGeneration(Qwen3VLPruning, PositionChannels, Qwen3VLMoeForConditionalGeneration):
    """vLLM's Qwen3-VL-MoE with every image and video frame pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE
