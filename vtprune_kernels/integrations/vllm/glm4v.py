"""Pruned GLM-4.1V and GLM-4.5V for vLLM, images: ``VTPruneGlm4vForConditionalGeneration`` and
``VTPruneGlm4vMoeForConditionalGeneration``.

GLM-4V's tower is packed like Qwen2-VL's (2x2 blocks of 14 px patches in merge order, attention
over each image in every block), so the Qwen2 family's encoder step serves it
(``qwen2_vl.Qwen2VLPruning``: scores, selection, offsets). What differs:

- the merge of a 2x2 block: the tower's per-patch norm, a 2x2 convolution and the merger MLP (as
  ``apply()``'s ``qwen_tower.Glm4vMerge``), run on the kept blocks only;
- the prompt positions: an image's placeholders are one run between its delimiters, at the image's
  base until ``forward`` adds each kept token's offset (``mrope_positions.py``).

Videos are refused when the engine starts unless ``limit_mm_per_prompt`` allows none: GLM-4V marks
video frames with the image token and ``apply()`` does not prune them either.
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
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

from .mrope_positions import item_span, placeholder_runs, prompt_positions
from .qwen2_vl import Qwen2VLPruning
from .qwen_vl_pruning import KeptCountsInfo, PositionChannels, kept_per_frame

ARCHITECTURE = "VTPruneGlm4vForConditionalGeneration"
MOE_ARCHITECTURE = "VTPruneGlm4vMoeForConditionalGeneration"


def check_no_videos(vllm_config, architecture: str) -> None:
    """Engine-start refusal: this plugin prunes GLM-4V's images only."""
    limit = vllm_config.model_config.get_multimodal_config().get_limit_per_prompt("video")
    if limit > 0:
        raise ValueError(
            f"{architecture} prunes images only (GLM-4V marks video frames with the image token): serve it with "
            "--limit-mm-per-prompt '{\"video\": 0}' (limit_mm_per_prompt={'video': 0})"
        )


class VTPruneGlm4vProcessingInfo(KeptCountsInfo, Glm4vProcessingInfo):
    """GLM-4.1V's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


class VTPruneGlm4vMoeProcessingInfo(KeptCountsInfo, Glm4vProcessingInfo):
    """GLM-4.5V's processing info with the kept counts."""

    vtprune_architecture = MOE_ARCHITECTURE


class VTPruneGlm4vMultiModalProcessor(Glm4vMultiModalProcessor):
    """GLM-4V's processor with min(keep, merged tokens) placeholders per image."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        merge = self.info.get_hf_config().vision_config.spatial_merge_size
        keep = self.info.vtprune_keep

        def pruned(update: PromptReplacement) -> PromptReplacement:
            if update.modality != "image":
                return update  # refused at engine start (check_no_videos)

            def replacement(item_idx: int):
                _, h, w = (int(v) for v in out_mm_kwargs["image"][item_idx]["image_grid_thw"].data)
                return update.replacement(item_idx)[: kept_per_frame(keep, h, w, merge)]

            return PromptReplacement(modality="image", target=update.target, replacement=replacement)

        return [pruned(u) for u in super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)]


class Glm4vPruning(Qwen2VLPruning):
    """Model mixin: the Qwen2 family's encoder step with GLM-4V's merge and image positions."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        check_no_videos(vllm_config, self.vtprune_architecture)
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def _merger_input(self):
        return self.visual.post_layernorm

    def _merge_kept(self, kept: torch.Tensor) -> torch.Tensor:
        """[K, D]: per-patch norm, 2x2 convolution and merger on kept blocks [K, 4C] (as the tower)."""
        visual, m, C = self.visual, self.visual.spatial_merge_size, self._vtprune_width
        x = visual.post_layernorm(kept.reshape(-1, C)).view(-1, m, m, C).permute(0, 3, 1, 2)
        return visual.merger(visual.downsample(x).view(-1, visual.out_hidden_size))

    def get_mrope_input_positions(self, input_tokens, mm_features):
        """Exact text positions of the pruned prompt; each image's placeholders at its base until
        ``forward`` adds its kept tokens' offsets."""
        merge = self.config.vision_config.spatial_merge_size
        items = []
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            _, h, w = (int(v) for v in feature.data["image_grid_thw"].data.tolist())
            start = feature.mm_position.offset
            runs = placeholder_runs(input_tokens, start, start + feature.mm_position.length, self.config.image_token_id)
            if len(runs) != 1:
                raise RuntimeError(f"{self.vtprune_architecture}: an image has {len(runs)} placeholder runs")
            items.append((*runs[0], item_span(1, h // merge, w // merge, 1.0)))
        return prompt_positions(len(input_tokens), items)


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
