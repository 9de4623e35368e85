"""Pruned Qwen2.5-Omni thinker for vLLM: ``VTPruneQwen2_5OmniModel`` and
``VTPruneQwen2_5OmniForConditionalGeneration`` (the two architecture names vLLM serves the checkpoints under;
both are vLLM's ``Qwen2_5OmniThinkerForConditionalGeneration``: text output only).

Images and videos as Qwen2.5-VL (``qwen2_5_vl.py``: the thinker's tower is Qwen2.5-VL's), as ``apply()``
prunes the transformers thinker (``integrations/qwen_omni.py``). Audio is not pruned: its encoder output
goes to the model as stock vLLM computes it, with zero offset channels (``PositionChannels`` strips the
channels of every multimodal embedding), and its placeholders keep their text-like positions (one
step per token, as the thinker's ``get_rope_index`` places standalone audio).

Differences from Qwen2.5-VL:
- the ``vtprune`` switch sits on the top-level config (``hf_overrides``); the model's ``config`` is the
  thinker's (``thinker_config``);
- a video's temporal step is ``second_per_grid_ts`` x ``vision_config.tokens_per_second`` (25 when the
  config has none, as vLLM's thinker; transformers reads ``thinker_config.position_id_per_seconds``);
- ``use_audio_in_video`` (a video's audio interleaved with its frames in 2-second chunks) is refused
  when a request asks for it.
"""
from __future__ import annotations

from typing import Tuple

import torch
from vllm.forward_context import set_forward_context
from vllm.model_executor.models.qwen2_5_omni_thinker import (
    Qwen2_5OmniThinkerDummyInputsBuilder,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2_5OmniThinkerMultiModalProcessor,
    Qwen2_5OmniThinkerProcessingInfo,
)
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLVideoPixelInputs
from vllm.multimodal import MULTIMODAL_REGISTRY

from .mrope_positions import POSITION_CHANNELS, item_span, prompt_positions
from .qwen2_5_vl import Qwen2_5_VLWindows
from .qwen2_vl import Qwen2VLPruning
from .qwen_vl_pruning import KeptCountsInfo, PositionChannels, PrunedPlaceholders

ARCHITECTURE = "VTPruneQwen2_5OmniModel"
CG_ARCHITECTURE = "VTPruneQwen2_5OmniForConditionalGeneration"

# vLLM's thinker (``iter_mm_features``): a video's temporal positions per second when the vision config has none
DEFAULT_TOKENS_PER_SECOND = 25


def refuse_audio_in_video(architecture: str, hf_processor_mm_kwargs) -> None:
    """A clear error for a request with ``use_audio_in_video`` (interleaved chunks are not pruned yet)."""
    if hf_processor_mm_kwargs.get("use_audio_in_video"):
        raise ValueError(
            f"{architecture}: use_audio_in_video=True (a video's audio interleaved with its frames) is not supported "
            "with pruning; pass the video's audio as a separate audio item"
        )


class OmniConfigInfo(KeptCountsInfo):
    """Processing-info mixin: the kept counts, read from the top-level config (``get_hf_config`` is the thinker's)."""

    def _vtprune_config(self):
        return self.ctx.model_config.hf_config


class VTPruneQwen2_5OmniProcessingInfo(OmniConfigInfo, Qwen2_5OmniThinkerProcessingInfo):
    vtprune_architecture = ARCHITECTURE


class VTPruneQwen2_5OmniCGProcessingInfo(OmniConfigInfo, Qwen2_5OmniThinkerProcessingInfo):
    vtprune_architecture = CG_ARCHITECTURE


class RefusedAudioInVideo:
    """Processor mixin (before vLLM's thinker processor): ``use_audio_in_video`` refused."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        refuse_audio_in_video(self.info.vtprune_architecture, hf_processor_mm_kwargs)
        return super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)


class VTPruneQwen2_5OmniMultiModalProcessor(RefusedAudioInVideo, PrunedPlaceholders, Qwen2_5OmniThinkerMultiModalProcessor):
    """The thinker's processor with min(keep, merged tokens) placeholders per image and video frame; audio
    placeholders unchanged; ``use_audio_in_video`` refused."""


class OmniPruning:
    """Model mixin (before ``Qwen2VLPruning``) of the Omni thinkers (Qwen2.5-Omni, Qwen3-Omni): the switch on the
    top-level config, audio passed through, the thinker's positions with audio runs as text."""

    def _vtprune_config(self, vllm_config):
        return vllm_config.model_config.hf_config

    def _parse_and_validate_video_input(self, **kwargs):
        """vLLM's thinker drops ``second_per_grid_ts`` here; the pruned step needs it (temporal offsets)."""
        seconds = kwargs.get("second_per_grid_ts")
        item = super()._parse_and_validate_video_input(**kwargs)
        if item is None or item["type"] != "pixel_values_videos":
            return item
        return Qwen2_5_VLVideoPixelInputs(
            type="pixel_values_videos", pixel_values_videos=item["pixel_values_videos"],
            video_grid_thw=item["video_grid_thw"], second_per_grid_ts=seconds,
        )

    def _embed_item(self, modality: str, item) -> Tuple[torch.Tensor, ...]:
        if modality != "audio":
            return super()._embed_item(modality, item)
        features = self._process_audio_input(item)  # per clip [tokens, D], as stock vLLM
        return tuple(torch.cat([f, f.new_zeros(f.shape[0], POSITION_CHANNELS)], dim=1) for f in features)

    def _run_tower(self, pixel_values, grids) -> None:
        with set_forward_context(None, self.vllm_config):  # as the thinker's _process_image_input
            self.visual(pixel_values.type(self.visual.dtype), grid_thw=grids)

    def get_mrope_input_positions(self, input_tokens, mm_features):
        """Exact text and audio positions of the pruned prompt (an audio clip's tokens step as text); each image
        and video placeholder at its item's base until ``forward`` adds its kept token's offset."""
        lengths = {f.mm_position.offset: f.mm_position.length for f in mm_features}
        items = []
        for offset, modality, data in self.iter_mm_features(mm_features):
            if modality == "audio":
                continue  # text-like: prompt_positions steps through every token outside the items
            if data.get("use_audio_in_video"):
                refuse_audio_in_video(self.vtprune_architecture, data)
            span = item_span(data["grid_t"], data["grid_h"], data["grid_w"], data["t_factor"])
            items.append((offset, lengths[offset], span))
        return prompt_positions(len(input_tokens), items)


class Qwen2_5OmniPruning(OmniPruning, Qwen2_5_VLWindows, Qwen2VLPruning):
    """Model mixin (before ``PositionChannels`` and vLLM's thinker): Qwen2.5-VL's pruned encoder step, audio
    passed through, the thinker's positions with audio runs as text."""

    vtprune_tokens_per_second = DEFAULT_TOKENS_PER_SECOND


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen2_5OmniMultiModalProcessor, info=VTPruneQwen2_5OmniProcessingInfo,
    dummy_inputs=Qwen2_5OmniThinkerDummyInputsBuilder,
)
class VTPruneQwen2_5OmniModel(Qwen2_5OmniPruning, PositionChannels, Qwen2_5OmniThinkerForConditionalGeneration):
    """vLLM's Qwen2.5-Omni thinker (checkpoints saying ``Qwen2_5OmniModel``) with every image and video frame
    pruned by the configured method; audio unpruned."""

    vtprune_architecture = ARCHITECTURE


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen2_5OmniMultiModalProcessor, info=VTPruneQwen2_5OmniCGProcessingInfo,
    dummy_inputs=Qwen2_5OmniThinkerDummyInputsBuilder,
)
class VTPruneQwen2_5OmniForConditionalGeneration(
    Qwen2_5OmniPruning, PositionChannels, Qwen2_5OmniThinkerForConditionalGeneration
):
    """The same for checkpoints saying ``Qwen2_5OmniForConditionalGeneration``."""

    vtprune_architecture = CG_ARCHITECTURE
