"""Pruned Gemma 3 for vLLM: ``VTPruneGemma3ForConditionalGeneration``.

As ``apply()`` (``integrations/gemma3.py``): the selection runs on the projector's average-pooled
t x t grid (16 x 16 on the released models), scores are the tower's received attention (SigLIP has
no [CLS]) pooled as the projector pools, VisPruner's de-duplication compares the pooled tower
features; min(keep, t*t) tokens per image and per pan-and-scan crop (a crop is an image of its own).
The processor writes min(keep, t*t) placeholders per image or crop; the other prompt text (the
crops' framing text, the newlines around each image) is unchanged.

Gemma 3 attends bidirectionally inside each image. On the GPU vLLM builds that mask from each
image's placeholder range (``is_mm_prefix_lm``), which for a pruned image is its kept placeholders
(still one contiguous block); vLLM's CPU attention has no such mask and runs images causally, pruned
or not. Selection indices: per image, crop * t*t + raster index over its crops (the image first).
"""
from __future__ import annotations

from vllm.model_executor.models.gemma3_mm import (
    Gemma3DummyInputsBuilder,
    Gemma3ForConditionalGeneration,
    Gemma3MultiModalProcessor,
    Gemma3ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptUpdateDetails

from ..gemma3 import pooled
from .encoder_pruning import EncoderPruning, gather_kept
from .mrope_positions import shortened_runs
from .switch import method_from_config

ARCHITECTURE = "VTPruneGemma3ForConditionalGeneration"


class VTPruneGemma3ProcessingInfo(Gemma3ProcessingInfo):
    """Gemma 3's processing info with min(keep, tokens per image) placeholders per image and crop."""

    def __init__(self, ctx):
        super().__init__(ctx)
        config = self.get_hf_config()
        self.vtprune_kept = min(method_from_config(config, ARCHITECTURE).keep, int(config.mm_tokens_per_image))

    def get_image_repl(self, **kwargs) -> PromptUpdateDetails:
        full = super().get_image_repl(**kwargs)
        token = self.get_hf_config().image_token_id
        return PromptUpdateDetails.select_token_id(shortened_runs(full.full, token, self.vtprune_kept), token)

    def get_num_image_tokens(self, **kwargs) -> int:
        full = super().get_num_image_tokens(**kwargs)  # (crops + 1) * tokens per image
        return full // int(self.get_hf_config().mm_tokens_per_image) * self.vtprune_kept


@MULTIMODAL_REGISTRY.register_processor(
    Gemma3MultiModalProcessor, info=VTPruneGemma3ProcessingInfo, dummy_inputs=Gemma3DummyInputsBuilder
)
class VTPruneGemma3ForConditionalGeneration(Gemma3ForConditionalGeneration):
    """vLLM's Gemma 3 with every image (and crop) pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)
        projector = self.multi_modal_projector
        self.vtprune_grid = (projector.tokens_per_side, projector.tokens_per_side)

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the images encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _process_image_input(self, image_input):
        pixel_values = image_input["pixel_values"]
        crops = image_input["num_patches"].tolist()  # per image, itself and its crops (kept on the CPU)
        with self.vtprune.capture() as capture:
            hidden = self._image_pixels_to_features(self.vision_tower, pixel_values)  # [n, p*p, C]
        scores = capture.scores()
        projector = self.multi_modal_projector
        grid = self.vtprune_grid
        features = self.vtprune.selection_features(lambda: pooled(projector, hidden), hidden.shape[0], grid[0] * grid[1], hidden)
        keep = self.vtprune.select(None if scores is None else pooled(projector, scores), features, grid, crops)
        per_row = min(self.vtprune.keep, keep.shape[1])
        kept = gather_kept(projector(hidden), keep, per_row)  # [n, per_row, D]: rows of the projector's output
        self.vtprune.record(list(keep.split(crops)))
        return [e.flatten(0, 1) for e in kept.split(crops)]
