"""Pruned LLaVA for vLLM: ``VTPruneLlavaForConditionalGeneration`` (LLaVA-1.5's CLIP tower with [CLS], a
SigLIP tower without, or Pixtral-12B's Pixtral tower).

CLIP / SigLIP: the processor emits min(keep, N) placeholders per image (N = patch tokens); the model
runs vLLM's own tower (built up to the feature layer) with the score capture on that layer, selects
per image, gathers the kept tokens and projects only them. Selection indices: patch index in raster
order, as ``apply()``'s ``last_selection``.

Pixtral (Pixtral-12B in its LLaVA form): images at their own size, every patch a token, written row by
row; as vLLM's Mistral 3 (``mistral3.py``) without the merger: scores per image inside the packed
sequence, each row's kept tokens then the language model's ``[IMG_BREAK]`` embedding, ``[IMG_END]``
after the last row (kept + rows - 1 ``[IMG]`` placeholders per image).
"""
from __future__ import annotations

from transformers import PixtralVisionConfig
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaImageEmbeddingInputs,
    LlavaProcessingInfo,
    PixtralHFMultiModalProcessor,
    PixtralHFProcessingInfo,
    _build_llava_or_pixtral_hf_processor,
)
from vllm.model_executor.models.pixtral import PixtralHFEncoderInfo
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..adapter import check_strategy, square_grid
from .encoder_pruning import EncoderPruning, gather_kept
from .mistral3 import KeptRowsPrompt, PixtralRowsPruning, placeholders
from .switch import method_from_config

ARCHITECTURE = "VTPruneLlavaForConditionalGeneration"


class VTPruneLlavaProcessingInfo(LlavaProcessingInfo):
    """LLaVA's processing info with the kept count per image. Validates the switch when the
    processor is built (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_method = method_from_config(self.get_hf_config(), ARCHITECTURE)

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        full = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        return min(self.vtprune_method.keep, full)


class VTPrunePixtralHFProcessingInfo(PixtralHFProcessingInfo):
    """Pixtral-in-LLaVA's processing info: kept + rows - 1 embeddings per image (``mistral3.placeholders``)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), ARCHITECTURE).keep

    def merged_grid(self, width: int, height: int, mm_kwargs=None):
        """(rows, columns) of an image's tokens, as vLLM's own processor counts them."""
        cols, rows = PixtralHFEncoderInfo(self.get_hf_config()).get_patch_grid_size(image_width=width, image_height=height)
        return rows, cols

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        return placeholders(self.merged_grid(image_width, image_height), self.vtprune_keep)


class VTPrunePixtralHFMultiModalProcessor(KeptRowsPrompt, PixtralHFMultiModalProcessor):
    """Writes each image as kept + rows - 1 ``[IMG]`` placeholders and ``[IMG_END]``."""


def _processing_info(ctx):
    if isinstance(ctx.get_hf_config().vision_config, PixtralVisionConfig):
        return VTPrunePixtralHFProcessingInfo(ctx)
    return VTPruneLlavaProcessingInfo(ctx)


def _processor(info, dummy_inputs, **kwargs):
    if isinstance(info, PixtralHFProcessingInfo):
        return VTPrunePixtralHFMultiModalProcessor(info, dummy_inputs, **kwargs)
    return _build_llava_or_pixtral_hf_processor(info, dummy_inputs, **kwargs)


@MULTIMODAL_REGISTRY.register_processor(_processor, info=_processing_info, dummy_inputs=LlavaDummyInputsBuilder)
class VTPruneLlavaForConditionalGeneration(PixtralRowsPruning, LlavaForConditionalGeneration):
    """vLLM's LLaVA with every image pruned by the configured method (``hf_config.vtprune``)."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtprune_pixtral = isinstance(self.config.vision_config, PixtralVisionConfig)
        if self.vtprune_pixtral:
            self.vtprune_setup(vllm_config, ARCHITECTURE, merge=1)
        else:
            if not isinstance(self.config.vision_feature_layer, int):
                raise ValueError(f"{ARCHITECTURE}: vision_feature_layer must be one layer, got {self.config.vision_feature_layer!r}")
            self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)
        check_strategy(self.config.vision_feature_select_strategy, self.vtprune.layout.has_cls, ARCHITECTURE)

    def _process_image_input(self, image_input):
        if isinstance(image_input, LlavaImageEmbeddingInputs):
            return super()._process_image_input(image_input)  # precomputed embeddings: nothing to prune
        pixel_values = image_input["pixel_values"]
        if self.vtprune_pixtral:
            return self.vtprune_images(
                pixel_values, lambda images: self._image_pixels_to_features(self.vision_tower, images),
                lambda hidden, sizes: (self.multi_modal_projector(hidden), hidden),
            )
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
