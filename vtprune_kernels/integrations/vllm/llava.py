"""Pruned LLaVA-1.5 for vLLM (CLIP tower with [CLS], or SigLIP without): ``VTPruneLlavaForConditionalGeneration``.

The processor emits min(keep, N) placeholders per image (N = patch tokens); the model runs vLLM's
own tower (built up to the feature layer) with the score capture on that layer, selects per image,
gathers the kept tokens and projects only them. Selection indices: patch index in raster order,
as ``apply()``'s ``last_selection``.
"""
from __future__ import annotations

from transformers import PixtralVisionConfig
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaImageEmbeddingInputs,
    LlavaProcessingInfo,
    _build_llava_or_pixtral_hf_processor,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..adapter import check_strategy, square_grid
from .encoder_pruning import EncoderPruning, gather_kept
from .switch import method_from_config

ARCHITECTURE = "VTPruneLlavaForConditionalGeneration"


class VTPruneLlavaProcessingInfo(LlavaProcessingInfo):
    """LLaVA's processing info with the kept count per image. Validates the switch when the
    processor is built (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        config = self.get_hf_config()
        if isinstance(config.vision_config, PixtralVisionConfig):
            raise ValueError(f"{ARCHITECTURE}: Pixtral vision towers are not supported (CLIP or SigLIP only)")
        self.vtprune_method = method_from_config(config, ARCHITECTURE)

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        full = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        return min(self.vtprune_method.keep, full)


@MULTIMODAL_REGISTRY.register_processor(
    _build_llava_or_pixtral_hf_processor, info=VTPruneLlavaProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class VTPruneLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """vLLM's LLaVA with every image pruned by the configured method (``hf_config.vtprune``)."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if not isinstance(self.config.vision_feature_layer, int):
            raise ValueError(f"{ARCHITECTURE}: vision_feature_layer must be one layer, got {self.config.vision_feature_layer!r}")
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)
        check_strategy(self.config.vision_feature_select_strategy, self.vtprune.layout.has_cls, ARCHITECTURE)

    def vtprune_selections(self, clear: bool = False):
        """Kept patch indices of the images encoded so far (see ``EncoderPruning.selections``)."""
        return self.vtprune.selections(clear)

    def _process_image_input(self, image_input):
        if isinstance(image_input, LlavaImageEmbeddingInputs):
            return super()._process_image_input(image_input)  # precomputed embeddings: nothing to prune
        pixel_values = image_input["pixel_values"]
        with self.vtprune.capture() as capture:
            features = self._image_pixels_to_features(self.vision_tower, pixel_values)  # [n, N, C], [CLS] dropped
        scores = capture.scores()
        if scores is not None and self.vtprune.layout.has_cls:
            scores = scores[:, 1:]
        n, N = features.shape[:2]
        keep = self.vtprune.select(scores, features, square_grid(N, ARCHITECTURE), [1] * n)
        self.vtprune.record(keep.split(1))
        kept = gather_kept(features, keep, min(self.vtprune.keep, N))
        return self.multi_modal_projector(kept)  # [n, k, D]
