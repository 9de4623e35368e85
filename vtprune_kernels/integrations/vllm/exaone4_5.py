"""Pruned EXAONE 4.5 for vLLM: ``VTPruneExaone4_5_ForConditionalGeneration``.

Qwen2.5-VL's encoder step (``qwen2_vl.Qwen2VLPruning`` with Qwen2.5-VL's windows) on EXAONE 4.5's
grouped-query tower (the capture reads its fewer key heads: ``EncoderLayout.local_kv_heads``); the
language model has 1-D positions, so the kept tokens carry no position channels and the prompt is
simply shorter, as ``apply()``'s.

Pixels are normalised by the processor on the host (``supports_mm_device_do_normalize = False``):
stock vLLM 0.32's EXAONE 4.5 inherits Qwen2.5-VL's device-side normalisation flag without its
tower's input norm, so with the flag on its tower receives raw 0..255 pixels.
"""
from __future__ import annotations

from vllm.model_executor.models.exaone4_5 import (
    Exaone4_5_DummyInputsBuilder,
    Exaone4_5_ForConditionalGeneration,
    Exaone4_5_MultiModalProcessor,
    Exaone4_5_ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from .qwen2_5_vl import Qwen2_5_VLWindows
from .qwen2_vl import Qwen2VLPruning
from .qwen_vl_pruning import KeptCountsInfo, PrunedPlaceholders

ARCHITECTURE = "VTPruneExaone4_5_ForConditionalGeneration"


class VTPruneExaone4_5_ProcessingInfo(KeptCountsInfo, Exaone4_5_ProcessingInfo):
    """EXAONE 4.5's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


class VTPruneExaone4_5_MultiModalProcessor(PrunedPlaceholders, Exaone4_5_MultiModalProcessor):
    """EXAONE 4.5's processor with min(keep, merged tokens) placeholders per image and video frame."""


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneExaone4_5_MultiModalProcessor, info=VTPruneExaone4_5_ProcessingInfo, dummy_inputs=Exaone4_5_DummyInputsBuilder
)
class VTPruneExaone4_5_ForConditionalGeneration(Qwen2_5_VLWindows, Qwen2VLPruning, Exaone4_5_ForConditionalGeneration):
    """vLLM's EXAONE 4.5 with every image and video frame pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE
    vtprune_position_channels = False
    supports_mm_device_do_normalize = False
