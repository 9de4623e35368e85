"""Pruned LightOnOCR for vLLM: ``VTPruneLightOnOCRForConditionalGeneration``.

LightOnOCR is Mistral 3's Pixtral tower and projector (norm, 2x2 patch merger, MLP) with a Qwen3 language
model, and writes an image as its merged tokens alone: no ``[IMG_BREAK]`` rows, no ``[IMG_END]``. So the
pruning is Mistral 3's (``mistral3.PixtralRowsPruning``: per image on the merged grid, scores inside the
image's own segment of the packed sequence, de-duplication on the merger's input) without row breaks: the
processor writes min(keep, tokens) ``[IMG]`` placeholders per image and the encoder fills them with the
kept features in raster order, as ``apply()`` does (``integrations/mistral3.LightOnOcrAdapter``).
"""
from __future__ import annotations

from vllm.model_executor.models.lightonocr import (
    LightOnOCRForConditionalGeneration,
    LightOnOCRMultiModalProcessor,
    LightOnOCRProcessingInfo,
)
from vllm.model_executor.models.mistral3 import Mistral3DummyInputsBuilder
from vllm.multimodal import MULTIMODAL_REGISTRY

from .mistral3 import KeptRowsInfo, KeptRowsPrompt, Mistral3ImagePruning

ARCHITECTURE = "VTPruneLightOnOCRForConditionalGeneration"


class VTPruneLightOnOCRProcessingInfo(KeptRowsInfo, LightOnOCRProcessingInfo):
    """LightOnOCR's processing info with min(keep, tokens) placeholders per image."""

    vtprune_architecture = ARCHITECTURE
    vtprune_row_breaks = False


class VTPruneLightOnOCRMultiModalProcessor(KeptRowsPrompt, LightOnOCRMultiModalProcessor):
    """Writes each image as min(keep, tokens) ``[IMG]`` placeholders."""

    row_breaks = False


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneLightOnOCRMultiModalProcessor, info=VTPruneLightOnOCRProcessingInfo, dummy_inputs=Mistral3DummyInputsBuilder
)
class VTPruneLightOnOCRForConditionalGeneration(Mistral3ImagePruning, LightOnOCRForConditionalGeneration):
    """vLLM's LightOnOCR with every image pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE
    vtprune_row_breaks = False
