"""Pruned Qwen2.5-VL for vLLM: ``VTPruneQwen2_5_VLForConditionalGeneration``.

Qwen2-VL's encoder step and positions (``qwen2_vl.Qwen2VLPruning``: the module doc there) with
Qwen2.5-VL's windows: its blocks attend inside 112 px windows except ``fullatt_block_indexes``
and run on a window-permuted sequence. VisPruner scores the last full-attention block by default
(``qwen_tower.feature_score_layer``); a windowed block, if named with ``score_layer``, is scored per
window (the model's own attention segments, from the grids). The patch scores and the merger's
inputs are put back in merge-block order (``to_merge_order``) before pooling and selection.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from .qwen2_vl import Qwen2VLPruning
from .qwen_vl_pruning import KeptCountsInfo, PositionChannels, PrunedPlaceholders

ARCHITECTURE = "VTPruneQwen2_5_VLForConditionalGeneration"


class VTPruneQwen2_5_VLProcessingInfo(KeptCountsInfo, Qwen2_5_VLProcessingInfo):
    """Qwen2.5-VL's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


class VTPruneQwen2_5_VLMultiModalProcessor(PrunedPlaceholders, Qwen2_5_VLMultiModalProcessor):
    """Qwen2.5-VL's processor with min(keep, merged tokens) placeholders per image and video frame."""


class Qwen2_5_VLWindows:
    """Model mixin (before ``Qwen2VLPruning``): Qwen2.5-VL's full-attention blocks and windows (its tower's own
    ``get_rope_by_thw``)."""

    def _full_attention(self) -> Tuple[Sequence[int], bool]:
        return tuple(int(i) for i in self.visual.fullatt_block_indexes), True

    def _windows(self, grids) -> Tuple[torch.Tensor, List[int]]:
        """(window_index int64 [T] of the call, as the tower permutes; window lengths in patches)."""
        index, lengths, offset = [], [], 0
        for t, h, w in grids:
            _, _, item_index, cu_windows, _ = self.visual.get_rope_by_thw(t, h, w)  # host, cached by vLLM
            index.append(item_index + offset)
            offset += item_index.numel()
            lengths += torch.diff(cu_windows.long(), prepend=cu_windows.new_zeros(1).long()).tolist()
        return torch.cat(index), lengths


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen2_5_VLMultiModalProcessor, info=VTPruneQwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder
)
class VTPruneQwen2_5_VLForConditionalGeneration(Qwen2_5_VLWindows, Qwen2VLPruning, PositionChannels, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL with every image and video frame pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE
