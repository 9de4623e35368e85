"""Pruned LLaVA-NeXT-Video for vLLM: ``VTPruneLlavaNextVideoForConditionalGeneration``.

vLLM serves LLaVA-NeXT-Video for videos only (one per prompt). As ``apply()``
(integrations/llava_next_video.py): per frame on the resampler's pooled grid, scores pooled with the
resampler's own pooling, VisPruner's de-duplication on the resampler's output, min(keep, pooled
tokens) per frame; only the kept tokens go through the projector. The processor writes that many
placeholders per frame. Selection indices (``vtprune_selections``): per video, frame * (pooled
tokens per frame) + raster index, as ``apply()``'s.
"""
from __future__ import annotations

from typing import List

import torch
from vllm.model_executor.models.llava_next_video import (
    LlavaNextVideoDummyInputsBuilder,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoMultiModalProcessor,
    LlavaNextVideoProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..adapter import check_strategy, square_grid
from ..llava_next_video import pooled_frame_scores
from .encoder_pruning import EncoderPruning, gather_kept
from .switch import method_from_config

ARCHITECTURE = "VTPruneLlavaNextVideoForConditionalGeneration"


def pooled_tokens_per_frame(hf_config) -> int:
    """Tokens of a frame after the resampler: (side // stride)^2, as its pool (no padding) computes them."""
    side = hf_config.vision_config.image_size // hf_config.vision_config.patch_size
    return (side // hf_config.spatial_pool_stride) ** 2


class VTPruneLlavaNextVideoProcessingInfo(LlavaNextVideoProcessingInfo):
    """LLaVA-NeXT-Video's processing info with the kept count per frame; validates the switch (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        config = self.get_hf_config()
        self.vtprune_kept_per_frame = min(method_from_config(config, ARCHITECTURE).keep, pooled_tokens_per_frame(config))

    def _get_num_frame_tokens(self, *, image_width: int, image_height: int) -> int:
        return self.vtprune_kept_per_frame


@MULTIMODAL_REGISTRY.register_processor(
    LlavaNextVideoMultiModalProcessor, info=VTPruneLlavaNextVideoProcessingInfo, dummy_inputs=LlavaNextVideoDummyInputsBuilder
)
class VTPruneLlavaNextVideoForConditionalGeneration(LlavaNextVideoForConditionalGeneration):
    """vLLM's LLaVA-NeXT-Video with every video pruned per frame by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if not isinstance(self.config.vision_feature_layer, int):
            raise ValueError(f"{ARCHITECTURE}: vision_feature_layer must be one layer, got {self.config.vision_feature_layer!r}")
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)
        check_strategy(self.config.vision_feature_select_strategy, self.vtprune.layout.has_cls, ARCHITECTURE)
        self.vtprune_kept_per_frame = min(self.vtprune.keep, pooled_tokens_per_frame(self.config))

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the videos encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def get_mm_lora_token_counts(self, *, modality: str, mm_kwargs, num_mm_embeds: int):
        """(tower tokens, connector tokens) of ``num_mm_embeds`` kept tokens: the tower sees every
        patch of each frame, the projector only the kept tokens."""
        if num_mm_embeds <= 0:
            return 0, 0
        frames = num_mm_embeds // self.vtprune_kept_per_frame
        return frames * self.patch_grid_length**2, num_mm_embeds

    def _process_video_pixels(self, inputs) -> List[torch.Tensor]:
        videos = inputs["pixel_values_videos"]
        if isinstance(videos, torch.Tensor):
            frames, stacked = [videos.shape[1]] * videos.shape[0], videos.flatten(0, 1)
        else:
            frames, stacked = [v.shape[0] for v in videos], torch.cat(list(videos))
        with self.vtprune.capture() as capture:
            features = self.vision_tower(stacked, feature_select_strategy=self.config.vision_feature_select_strategy)
        scores = capture.scores()  # [T, 1 + N] with the [CLS] column
        pooled = self.vision_resampler(features)  # [T, n, C]
        if scores is not None:
            scores = pooled_frame_scores(self.vision_resampler, scores[:, 1:])
        keep = self.vtprune.select(scores, pooled, square_grid(pooled.shape[1], ARCHITECTURE), frames)
        self.vtprune.record([k.reshape(-1) for k in keep.split(frames)])
        embeds = self.multi_modal_projector(gather_kept(pooled, keep, self.vtprune_kept_per_frame))  # [T, k, D]
        return [e.flatten(0, 1) for e in embeds.split(frames)]
