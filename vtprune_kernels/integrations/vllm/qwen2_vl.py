"""Pruned Qwen2-VL for vLLM: ``VTPruneQwen2VLForConditionalGeneration``, and the encoder step it shares
with Qwen2.5-VL (``Qwen2VLPruning``; ``qwen2_5_vl.py`` adds the windows).

As ``apply()`` (``integrations/qwen_vl.py``): no [CLS], so VisPruner scores the attention each
patch receives from every row of the vision block(s) it scores (by default the last block whose
attention spans the whole frame, ``qwen_tower.feature_score_layer``: on Qwen2-VL, where every block
does, the last one), per frame (or, for a windowed Qwen2.5-VL block, per window: the model's own
attention segments, from the grids); the patch scores are put in merge-block order (Qwen2.5-VL's
blocks run on a window-permuted sequence, ``to_merge_order``) and pooled onto the 2x2-merged tokens
(``merged_grid_pool``); the de-duplication compares the merger's inputs (``merged_features``).
Selection unit: one frame (an image is one frame), budget min(keep, merged tokens) per frame; the
merger runs only on the kept tokens.

Positions: each kept token keeps its M-RoPE position from the unpruned layout, every text token
its own (``mrope_positions.py``). The request's positions put text exactly and each item's
placeholders at its base (``get_mrope_input_positions``); the encoder outputs carry each kept
token's grid offset as trailing channels, which ``embed_input_ids`` strips before merging and
``forward`` adds to the positions of the tokens just merged (``qwen_vl_pruning.PositionChannels``).
vLLM's own route for pruned positions (EVS: ``SupportsMultiModalPruning.recompute_mrope_positions``)
is not used: vLLM runs it only when video pruning is configured, and its CPU model runner never
turns it on.

Selection indices: per image, indices into its merged grid in raster order; per video,
frame * (h/2)*(w/2) + raster index (as ``apply()``'s ``last_selection``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from vllm.model_executor.models.qwen2_vl import (
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods._device import from_host
from ...methods.merged_grid import merged_features, merged_grid_pool, to_merge_order
from ..qwen_tower import feature_score_layer, merge_kept, middle_layers
from ..stop_tower import StopTower, stopped_early
from .encoder_pruning import EncoderPruning
from .mrope_positions import item_span, prompt_positions
from .qwen_vl_pruning import (
    FrameItem,
    KeptCountsInfo,
    PositionChannels,
    PrunedPlaceholders,
    check_engine_config,
    select_frames,
    with_offsets,
)

ARCHITECTURE = "VTPruneQwen2VLForConditionalGeneration"


def _field(item, key: str):
    """``item[key]`` of a parsed multimodal input (a dict or a TensorSchema), None when it has none."""
    try:
        return item[key]
    except (KeyError, AttributeError):
        return None


class Qwen2VLPruning:
    """Model mixin (first in the bases, before vLLM's model class): the pruned encoder step and
    prompt positions of Qwen2-VL and Qwen2.5-VL. Subclasses set ``vtprune_architecture`` and, with
    windows, override ``_full_attention`` and ``_windows`` (GLM-4V: ``_merger_input``, ``_merge_kept``
    and the positions; PaddleOCR-VL: ``_vision_depth``, ``_block_width``, ``_encode``, ``_merge_kept``)."""

    vtprune_architecture = ""
    vtprune_position_channels = True  # False: a language model with 1-D positions (EXAONE 4.5) needs no offsets
    vtprune_tokens_per_second = 1.0  # a video's temporal positions per second when the vision config has none

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_engine_config(vllm_config, self.vtprune_architecture)
        depth = self._vision_depth()
        full_attention, windowed = self._full_attention()
        self.vtprune = EncoderPruning(
            self._vtprune_config(vllm_config), self.vtprune_architecture, self.visual, tower_depth=depth,
            feature_layer=feature_score_layer(depth, full_attention), middle_layers=middle_layers(full_attention, windowed),
        )
        self.vtprune_full_attention = tuple(full_attention)
        self._vtprune_width = self._block_width()  # the blocks' width C
        self._vtprune_merge = int(self.config.vision_config.spatial_merge_size)

    def _vision_depth(self) -> int:
        """The tower's number of blocks."""
        return len(self.visual.blocks)

    def _block_width(self) -> int:
        """The blocks' width C (the merger's input is 4C per merged token; Qwen2-VL names it ``embed_dim``)."""
        return int(getattr(self.visual, "embed_dim", None) or self.visual.hidden_size)

    def _vtprune_config(self, vllm_config):
        """The config that carries the ``vtprune`` switch (the model's own; Qwen2.5-Omni: the top-level one)."""
        return self.config

    def _full_attention(self) -> Tuple[Sequence[int], bool]:
        """(the blocks that attend over the whole frame, whether the others attend inside windows)."""
        return range(self._vision_depth()), False

    def vtprune_selections(self, clear: bool = False):
        """Kept merged-token indices of the images and videos encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    # -- encoder ----------------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs):
        inputs = self._parse_and_validate_multimodal_inputs(**kwargs)
        embeddings: Tuple[torch.Tensor, ...] = ()
        for modality, item in inputs.items():  # the order of the call's modalities, as vLLM's model
            embeddings += self._embed_item(modality, item)
        return embeddings

    def _embed_item(self, modality: str, item) -> Tuple[torch.Tensor, ...]:
        """Per item of one modality's parsed input: its encoder output (``_pruned_embeddings``)."""
        if item["type"] in ("image_embeds", "video_embeds"):
            raise ValueError(f"{self.vtprune_architecture}: precomputed {modality} embeddings cannot be pruned")
        if modality.startswith("image"):  # Qwen2.5-VL says "image", Qwen2-VL "images"
            grids, pixels, factors = item["image_grid_thw"], item["pixel_values"], None
        else:
            grids, pixels = item["video_grid_thw"], item["pixel_values_videos"]
            factors = self._video_t_factors(item, len(grids))
        return self._pruned_embeddings(pixels, grids, factors)

    def _video_t_factors(self, item, count: int) -> List[float]:
        """Per video, the M-RoPE temporal position step of one temporal patch (Qwen2.5-VL: seconds per
        temporal patch x tokens per second; Qwen2-VL: 1)."""
        tokens_per_second = float(getattr(self.config.vision_config, "tokens_per_second", self.vtprune_tokens_per_second))
        seconds = _field(item, "second_per_grid_ts")
        if seconds is None:
            return [tokens_per_second] * count
        return [float(s) * tokens_per_second for s in seconds.tolist()]

    def _pruned_embeddings(self, pixel_values, grid_thw, t_factors) -> Tuple[torch.Tensor, ...]:
        """Per item: [kept, D + POSITION_CHANNELS], the merged kept tokens and their M-RoPE offsets ([kept, D]
        without ``vtprune_position_channels``)."""
        merge = self._vtprune_merge
        grids = [tuple(int(v) for v in g) for g in grid_thw.tolist()]  # kept on the CPU by vLLM
        items, first = [], 0
        for i, grid in enumerate(grids):
            items.append(FrameItem(grid, first, merge, t_factor=1.0 if t_factors is None else t_factors[i]))
            first += items[-1].tokens
        hidden, patch_scores = self._encode(pixel_values, grids)
        merged = merged_features(hidden, merge)  # [T, 4C]
        pooled = None if patch_scores is None else merged_grid_pool(patch_scores, merge)
        kept_rows, offsets, keeps = select_frames(self.vtprune, items, merged, pooled)
        self.vtprune.record(keeps)
        embeds = self._merge_kept_rows(merged, torch.cat(kept_rows))
        if not self.vtprune_position_channels:
            return tuple(embeds.split([r.numel() for r in kept_rows]))
        return with_offsets(embeds, offsets, kept_rows)

    def _encode(self, pixel_values, grids) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(the merger's input [S, C], float32 patch scores [S] or None), both in merge-block order: one
        tower run over the call's items (host ``grids``), scored per attention segment."""
        merge = self._vtprune_merge
        window_index, window_lengths = self._windows(grids)

        def segments(layer: int) -> List[int]:
            if layer in self.vtprune_full_attention:
                return [g[1] * g[2] for g in grids for _ in range(g[0])]  # one segment per frame
            return window_lengths

        with self.vtprune.capture(segments) as capture:
            hidden = self._run_blocks(pixel_values, grids)  # [S, C], the blocks' order
        scores = capture.scores()
        patch_scores = None if scores is None else scores[0]
        if window_index is not None:  # back to merge order (one upload for both reorders)
            window_index = from_host(window_index, hidden.device)
            hidden = to_merge_order(hidden, window_index, merge)
            patch_scores = None if scores is None else to_merge_order(patch_scores, window_index, merge)
        return hidden, patch_scores

    def _merge_kept_rows(self, merged: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """[K, D]: the encoder output of the kept rows (device int64 [K]) of the call's merged tokens [T, 4C]
        (Qwen3-Omni: with its DeepStack features)."""
        return self._merge_kept(merged[rows])

    def _merge_kept(self, kept: torch.Tensor) -> torch.Tensor:
        """[K, D]: the model's merger on kept merged tokens [K, 4C]."""
        return merge_kept(self.visual.merger, kept, self._vtprune_width)

    def _merger_input(self):
        """The module the tower calls first after its last block (the stop's pre-hook goes there)."""
        return self.visual.merger.ln_q

    def _windows(self, grids) -> Tuple[Optional[torch.Tensor], Optional[List[int]]]:
        """(window_index int64 [T] of the call, window lengths in patches); None, None: no windows."""
        return None, None

    def _run_blocks(self, pixel_values, grids) -> torch.Tensor:
        """[S, C]: the merger's input (the last block's output); the tower is left before its merger
        runs. (vLLM calls its compile-capable blocks and merger without module hooks, so the stop is
        a pre-hook on the merger's first module, its norm: ``_merger_input``.)"""
        captured: Dict[str, torch.Tensor] = {}

        def stop(module, args):
            captured["hidden"] = args[0]
            raise StopTower()

        with stopped_early([self._merger_input().register_forward_pre_hook(stop)]):
            self._run_tower(pixel_values, grids)
        if "hidden" not in captured:
            raise RuntimeError(f"{self.vtprune_architecture}: the vision tower returned without calling its merger")
        return captured["hidden"].reshape(-1, self._vtprune_width)

    def _run_tower(self, pixel_values, grids) -> None:
        """The vision tower on one call's pixels, as vLLM's model calls it (its output is not used: ``_run_blocks``)."""
        self.visual(pixel_values, grid_thw=grids)

    # -- positions --------------------------------------------------------------------------------
    def get_mrope_input_positions(self, input_tokens, mm_features):
        """Exact text positions of the pruned prompt; each placeholder at its item's base until
        ``forward`` adds its kept token's offset."""
        features = sorted(mm_features, key=lambda f: f.mm_position.offset)
        items = [
            (offset, feature.mm_position.length, item_span(t, h, w, t_factor))
            for feature, (offset, t, h, w, t_factor) in zip(features, self.iter_mm_grid_thw(mm_features))
        ]
        return prompt_positions(len(input_tokens), items)


class VTPruneQwen2VLProcessingInfo(KeptCountsInfo, Qwen2VLProcessingInfo):
    """Qwen2-VL's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


class VTPruneQwen2VLMultiModalProcessor(PrunedPlaceholders, Qwen2VLMultiModalProcessor):
    """Qwen2-VL's processor with min(keep, merged tokens) placeholders per image and video frame."""


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen2VLMultiModalProcessor, info=VTPruneQwen2VLProcessingInfo, dummy_inputs=Qwen2VLDummyInputsBuilder
)
class VTPruneQwen2VLForConditionalGeneration(Qwen2VLPruning, PositionChannels, Qwen2VLForConditionalGeneration):
    """vLLM's Qwen2-VL with every image and video frame pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE
