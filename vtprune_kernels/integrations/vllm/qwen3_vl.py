"""Pruned Qwen3-VL for vLLM: ``VTPruneQwen3VLForConditionalGeneration``.

As ``apply()`` (``integrations/qwen_vl.py``): no [CLS], so VisPruner scores the attention each
patch receives from every row of its frame in the vision block it scores (by default the last one,
whose output the merger uses; every Qwen3-VL block attends over the whole frame), pooled onto the
2x2-merged tokens (``merged_grid_pool``); the de-duplication compares the merger's inputs
(``merged_features``). Selection unit: one frame (an image is one frame), budget min(keep, merged
tokens) per frame. The merger and the DeepStack mergers run on the kept tokens only: every
DeepStack level drops exactly the tokens the main features drop.

The tower is run by vLLM's own forward; pre-hooks on the mergers' first module (their norm) take
the blocks' outputs: a DeepStack merger, called inside the block loop, is handed one merged token
instead of all of them; the final merger's hook leaves the tower before it runs.

Prompt: Qwen3-VL writes a video as frames, each "<t seconds>" + vision start + its placeholders +
vision end; the pruned processor keeps min(keep, merged tokens) placeholders per frame (and per
image). Positions (``mrope_positions.py``, ``qwen_vl_pruning.PositionChannels``): each frame of a
video has its own base position, as an image has (the text between frames moves on past it), so
every kept token's offset is (0, row, column) in its frame's merged grid, and text tokens keep their
unpruned positions.

Selection indices: per image, indices into its merged grid in raster order; per video,
frame * (h/2)*(w/2) + raster index (as ``apply()``'s ``last_selection``).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods.merged_grid import merged_features, merged_grid_pool
from ..qwen_tower import feature_score_layer, merge_kept
from ..stop_tower import StopTower, stopped_early
from .encoder_pruning import EncoderPruning
from .mrope_positions import frame_run_positions
from .qwen_vl_pruning import (
    FrameItem,
    KeptCountsInfo,
    PositionChannels,
    PrunedFrameRuns,
    check_engine_config,
    frame_placeholder,
    select_frames,
    with_offsets,
)

ARCHITECTURE = "VTPruneQwen3VLForConditionalGeneration"


class VTPruneQwen3VLProcessingInfo(KeptCountsInfo, Qwen3VLProcessingInfo):
    """Qwen3-VL's processing info with the kept counts."""

    vtprune_architecture = ARCHITECTURE


class VTPruneQwen3VLMultiModalProcessor(PrunedFrameRuns, Qwen3VLMultiModalProcessor):
    """Qwen3-VL's processor with min(keep, merged tokens) placeholders per image and per video frame
    (a video's timestamps and frame delimiters unchanged)."""


class Qwen3VLPruning:
    """Model mixin (first in the bases, before vLLM's model class): the pruned encoder step and
    prompt positions of Qwen3-VL and the models built on its tower (Qwen3-VL-MoE, Qwen3.5,
    Qwen3.5-MoE; without DeepStack mergers where a model has none). Subclasses set
    ``vtprune_architecture``."""

    vtprune_architecture = ""

    def __init__(self, *, vllm_config, prefix: str = "model"):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_engine_config(vllm_config, self.vtprune_architecture)
        depth = len(self.visual.blocks)
        # every block attends over the whole frame: HIVTP's middle layers would be the paper's (it is
        # refused by the switch anyway, its count depends on the content)
        self.vtprune = EncoderPruning(
            self.config, self.vtprune_architecture, self.visual, tower_depth=depth,
            feature_layer=feature_score_layer(depth, range(depth)),
        )

    def vtprune_selections(self, clear: bool = False):
        """Kept merged-token indices of the images and videos encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    # -- encoder ----------------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs):
        inputs = self._parse_and_validate_multimodal_inputs(**kwargs)
        embeddings: Tuple[torch.Tensor, ...] = ()
        for modality, item in inputs.items():  # the order of the call's modalities, as vLLM's model
            if item["type"] in ("image_embeds", "video_embeds"):
                raise ValueError(f"{self.vtprune_architecture}: precomputed {modality} embeddings cannot be pruned")
            if modality == "image":
                embeddings += self._pruned_embeddings(item["pixel_values"], item["image_grid_thw"])
            else:
                embeddings += self._pruned_embeddings(item["pixel_values_videos"], item["video_grid_thw"])
        return embeddings

    def _pruned_embeddings(self, pixel_values, grid_thw) -> Tuple[torch.Tensor, ...]:
        """Per item: [kept, D * (1 + DeepStack levels) + POSITION_CHANNELS], the kept tokens' merged
        features, their DeepStack features and their M-RoPE offsets."""
        visual, merge = self.visual, self.visual.spatial_merge_size
        grids = [tuple(int(v) for v in g) for g in grid_thw.tolist()]  # kept on the CPU by vLLM
        items, first = [], 0
        for grid in grids:
            items.append(FrameItem(grid, first, merge, t_factor=0.0))  # every frame at its own base
            first += items[-1].tokens
        frames = [h * w for t, h, w in grids for _ in range(t)]  # the attention segments of every block
        with self.vtprune.capture(lambda layer: frames) as capture:
            hidden, levels = self._run_blocks(pixel_values, grids)
        scores = capture.scores()
        merged = merged_features(hidden, merge)  # [T, 4C]
        pooled = None if scores is None else merged_grid_pool(scores[0], merge)
        kept_rows, offsets, keeps = select_frames(self.vtprune, items, merged, pooled)
        self.vtprune.record(keeps)
        rows = torch.cat(kept_rows)
        embeds = [merge_kept(visual.merger, merged[rows], visual.hidden_size)]
        embeds += [merge_kept(m, level[rows], visual.hidden_size) for m, level in zip(visual.deepstack_merger_list, levels)]
        return with_offsets(torch.cat(embeds, dim=1), offsets, kept_rows)

    def _run_blocks(self, pixel_values, grids) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """([S, C] the last block's output, per DeepStack level [T, 4C] its block's output in merged
        rows); the tower is left before its final merger runs."""
        captured: Dict[object, torch.Tensor] = {}
        unit = self.visual.spatial_merge_size**2

        def stop(module, args):
            captured["hidden"] = args[0]
            raise StopTower()

        channels = unit * self.visual.hidden_size

        def level(index):
            def shrink(module, args):  # the level's input [S/4, 4C] (its norm runs after the shuffle); merge one token
                captured[index] = args[0]
                return (args[0][:1],)

            return shrink

        handles = [self.visual.merger.norm.register_forward_pre_hook(stop)]
        handles += [m.norm.register_forward_pre_hook(level(i)) for i, m in enumerate(self.visual.deepstack_merger_list)]
        with stopped_early(handles):
            self.visual(pixel_values, grid_thw=grids)
        if "hidden" not in captured:
            raise RuntimeError(f"{self.vtprune_architecture}: the vision tower returned without calling its merger")
        levels = [captured[i].reshape(-1, channels) for i in range(len(self.visual.deepstack_merger_list))]
        return captured["hidden"].reshape(-1, self.visual.hidden_size), levels

    # -- positions --------------------------------------------------------------------------------
    def get_mrope_input_positions(self, input_tokens, mm_features):
        """Exact text positions of the pruned prompt; each frame's placeholders at its base until
        ``forward`` adds its kept tokens' offsets."""
        return frame_run_positions(input_tokens, mm_features, self.config, lambda m: frame_placeholder(self.config, m))


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen3VLMultiModalProcessor, info=VTPruneQwen3VLProcessingInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class VTPruneQwen3VLForConditionalGeneration(Qwen3VLPruning, PositionChannels, Qwen3VLForConditionalGeneration):
    """vLLM's Qwen3-VL with every image and video frame pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE
