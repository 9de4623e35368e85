"""Pruned PaliGemma / PaliGemma 2 for vLLM: ``VTPrunePaliGemmaForConditionalGeneration``.

As ``apply()`` (``integrations/paligemma.py``): every SigLIP patch is a language-model token (16 x 16
at 224 px, 32 x 32 at 448 px, 64 x 64 at 896 px); scores are the tower's received attention (no
[CLS]), VisPruner's de-duplication compares the tower's output features; min(keep, patches) per
image, the kept features projected. vLLM inserts the image's placeholders (then the BOS) at the start
of the prompt, min(keep, patches) of them. vLLM runs PaliGemma's prefix causally (transformers
attends bidirectionally over it, with ``token_type_ids``); pruning changes neither. Selection
indices: raster indices into the patch grid.
"""
from __future__ import annotations

from vllm.model_executor.models.paligemma import (
    PaliGemmaDummyInputsBuilder,
    PaliGemmaForConditionalGeneration,
    PaliGemmaMultiModalProcessor,
    PaliGemmaProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..adapter import square_grid
from .encoder_pruning import EncoderPruning, gather_kept
from .switch import method_from_config

ARCHITECTURE = "VTPrunePaliGemmaForConditionalGeneration"


class VTPrunePaliGemmaProcessingInfo(PaliGemmaProcessingInfo):
    """PaliGemma's processing info with min(keep, patches) placeholders per image (the insertion reads it).
    Validates the switch when the processor is built (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), ARCHITECTURE).keep

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        return min(self.vtprune_keep, super().get_num_image_tokens(image_width=image_width, image_height=image_height))


@MULTIMODAL_REGISTRY.register_processor(
    PaliGemmaMultiModalProcessor, info=VTPrunePaliGemmaProcessingInfo, dummy_inputs=PaliGemmaDummyInputsBuilder
)
class VTPrunePaliGemmaForConditionalGeneration(PaliGemmaForConditionalGeneration):
    """vLLM's PaliGemma with every image pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)

    def vtprune_selections(self, clear: bool = False):
        """Kept patch indices of the images encoded so far (see ``EncoderPruning.selections``)."""
        return self.vtprune.selections(clear)

    def _process_image_input(self, image_input):
        if image_input["type"] == "image_embeds":
            return super()._process_image_input(image_input)  # precomputed embeddings: nothing to prune
        with self.vtprune.capture() as capture:
            features = self._image_pixels_to_features(self.vision_tower, image_input["data"])  # [n, N, C]
        n, N = features.shape[:2]
        keep = self.vtprune.select(capture.scores(), features, square_grid(N, ARCHITECTURE), [1] * n)
        self.vtprune.record(keep.split(1))
        return self.multi_modal_projector(gather_kept(features, keep, min(self.vtprune.keep, N)))  # [n, k, D]
