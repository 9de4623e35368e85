"""Pruned Qwen3-Omni thinker for vLLM: ``VTPruneQwen3OmniMoeForConditionalGeneration`` (the architecture name vLLM
serves the checkpoints under; vLLM's ``Qwen3OmniMoeThinkerForConditionalGeneration``: text output only).

As ``apply()`` prunes the transformers thinker (``integrations/qwen_omni.py``): the tower is Qwen3-VL's (full
attention in every block, DeepStack), so VisPruner scores the attention of the last block per frame, pooled onto
the 2x2-merged tokens; min(keep, merged tokens) kept per image and per video frame; the merger and every
DeepStack merger run on the kept tokens only. Audio is passed through as on Qwen2.5-Omni (``qwen2_5_omni.py``:
zero offset channels, text-like positions); ``use_audio_in_video`` is refused.

Differences from Qwen3-VL (``qwen3_vl.py``):
- the prompt writes an image or a video as ONE placeholder run (as Qwen2.5-VL), so a video's frame f sits at
  temporal offset int(f x second_per_grid_ts x ``position_id_per_seconds``) (vLLM's thinker: 2 s per temporal
  patch when the request has none) and the encoder step is ``Qwen2VLPruning``'s;
- the tower runs its DeepStack mergers after its block loop: their inputs are taken by forward hooks on the
  DeepStack blocks, and the tower is left at its final merger's norm.

Selection indices: per image, indices into its merged grid in raster order; per video,
frame * (h/2)*(w/2) + raster index (as ``apply()``'s ``last_selection``).
"""
from __future__ import annotations

from typing import List

import torch
from vllm.forward_context import set_forward_context
from vllm.model_executor.models.qwen3_omni_moe_thinker import (
    Qwen3OmniMoeThinkerDummyInputsBuilder,
    Qwen3OmniMoeThinkerForConditionalGeneration,
    Qwen3OmniMoeThinkerMultiModalProcessor,
    Qwen3OmniMoeThinkerProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..qwen_tower import merge_kept
from .qwen2_5_omni import OmniConfigInfo, OmniPruning, RefusedAudioInVideo
from .qwen2_vl import Qwen2VLPruning, _field
from .qwen_vl_pruning import PositionChannels, PrunedPlaceholders

ARCHITECTURE = "VTPruneQwen3OmniMoeForConditionalGeneration"

# vLLM's thinker (``iter_mm_features``): a video's seconds per temporal patch when the request has none
DEFAULT_SECONDS_PER_GRID = 2.0


class VTPruneQwen3OmniProcessingInfo(OmniConfigInfo, Qwen3OmniMoeThinkerProcessingInfo):
    vtprune_architecture = ARCHITECTURE


class VTPruneQwen3OmniMultiModalProcessor(RefusedAudioInVideo, PrunedPlaceholders, Qwen3OmniMoeThinkerMultiModalProcessor):
    """The thinker's processor with min(keep, merged tokens) placeholders per image and video frame; audio
    placeholders unchanged; ``use_audio_in_video`` refused."""


class Qwen3OmniPruning(OmniPruning, Qwen2VLPruning):
    """Model mixin (before ``PositionChannels`` and vLLM's thinker): the pruned encoder step with DeepStack, audio
    passed through, the thinker's positions with audio runs as text."""

    _vtprune_levels: List[torch.Tensor] = []  # per DeepStack level [T, 4C] of the last tower run (merged rows)

    def _video_t_factors(self, item, count: int) -> List[float]:
        """Per video: seconds per temporal patch x the thinker's ``position_id_per_seconds``."""
        per_second = float(self.config.position_id_per_seconds)
        seconds = _field(item, "second_per_grid_ts")
        if seconds is None:
            return [DEFAULT_SECONDS_PER_GRID * per_second] * count
        return [float(s) * per_second for s in seconds.tolist()]

    def _run_tower(self, pixel_values, grids) -> None:
        """The tower as the thinker runs it (a [N, 3] grid tensor), the DeepStack blocks' outputs kept."""
        indexes = sorted(int(i) for i in (self.visual.deepstack_visual_indexes or ()))  # the mergers' order
        width = self._vtprune_width * self.visual.spatial_merge_unit
        outputs = {}

        def keep(index):
            def hook(module, args, output):  # [S, 1, C] in merge-block order
                outputs[index] = output.reshape(-1, width)

            return hook

        handles = [self.visual.blocks[i].register_forward_hook(keep(i)) for i in indexes]
        try:
            with set_forward_context(None, self.vllm_config):
                self.visual(pixel_values.type(self.visual.dtype), grid_thw=torch.tensor(grids, dtype=torch.int64))
        finally:  # the tower is left at its merger (StopTower)
            for handle in handles:
                handle.remove()
            self._vtprune_levels = [outputs.get(i) for i in indexes]

    def _merge_kept_rows(self, merged: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """[K, D * (1 + DeepStack levels)]: the merger's and every DeepStack merger's output on the kept rows."""
        levels, self._vtprune_levels = self._vtprune_levels, []
        if any(level is None for level in levels):
            raise RuntimeError(f"{self.vtprune_architecture}: a DeepStack block ran without its hook")
        embeds = [merge_kept(self.visual.merger, merged[rows], self._vtprune_width)]
        mergers = getattr(self.visual, "merger_list", ())
        embeds += [merge_kept(m, level[rows], self._vtprune_width) for m, level in zip(mergers, levels)]
        return torch.cat(embeds, dim=1)


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen3OmniMultiModalProcessor, info=VTPruneQwen3OmniProcessingInfo,
    dummy_inputs=Qwen3OmniMoeThinkerDummyInputsBuilder,
)
class VTPruneQwen3OmniMoeForConditionalGeneration(
    Qwen3OmniPruning, PositionChannels, Qwen3OmniMoeThinkerForConditionalGeneration
):
    """vLLM's Qwen3-Omni thinker with every image and video frame pruned by the configured method; audio unpruned."""

    vtprune_architecture = ARCHITECTURE
