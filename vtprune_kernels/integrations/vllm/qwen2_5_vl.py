"""Pruned Qwen2.5-VL for vLLM: ``VTPruneQwen2_5_VLForConditionalGeneration``.

As ``apply()`` (``integrations/qwen_vl.py``): no [CLS], so VisPruner scores the attention each
patch receives from every row of the vision block(s) it scores (by default the last
full-attention block, ``qwen_tower.feature_score_layer``), per frame (or per window for a windowed
block: the model's own attention segments, from the grids); the patch scores are put back in
merge-block order (vLLM runs the blocks on a window-permuted sequence, ``to_merge_order``) and
pooled onto the 2x2-merged tokens (``merged_grid_pool``); the de-duplication compares the
merger's inputs (``merged_features``). Selection unit: one frame (an image is one frame), budget
min(keep, merged tokens) per frame; the merger runs only on the kept tokens.

Positions: each kept token keeps its M-RoPE position from the unpruned layout, every text token
its own (``mrope_positions.py``). The request's positions put text exactly and each image's
placeholders at its base (``get_mrope_input_positions``); the encoder outputs carry each kept
token's grid offset as trailing channels, which ``embed_input_ids`` strips before merging and
``forward`` adds to the positions of the tokens just merged. vLLM's own route for pruned positions
(EVS: ``SupportsMultiModalPruning.recompute_mrope_positions``) is not used: vLLM runs it only when
video pruning is configured, and its CPU model runner never turns it on.

Selection indices: per image, indices into its merged grid in raster order; per video,
frame * (h/2)*(w/2) + raster index (as ``apply()``'s ``last_selection``).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

from ...methods import Random
from ...methods._device import from_host
from ...methods.merged_grid import merged_features, merged_grid_pool, to_merge_order
from ..qwen_tower import MergedGridItem, feature_score_layer, merge_kept, middle_layers
from ..stop_tower import StopTower, stopped_early
from .encoder_pruning import EncoderPruning
from .mrope_positions import POSITION_CHANNELS, add_kept_offsets, decode_offsets, encode_offsets, item_span, prompt_positions
from .switch import method_from_config

ARCHITECTURE = "VTPruneQwen2_5_VLForConditionalGeneration"


def kept_per_frame(keep: int, height: int, width: int, merge: int) -> int:
    """Merged tokens a frame of height x width patches keeps."""
    return min(keep, (height // merge) * (width // merge))


class VTPruneQwen2_5_VLProcessingInfo(Qwen2_5_VLProcessingInfo):
    """Qwen2.5-VL's processing info with the kept counts. (vLLM treats a ValueError raised here as
    "not multimodal" and goes on: the engine-start checks live in the model's ``__init__``.)"""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), ARCHITECTURE).keep

    def get_num_image_tokens(self, **kwargs) -> int:
        return min(self.vtprune_keep, super().get_num_image_tokens(**kwargs))

    def get_num_video_tokens(self, *, num_frames: int, **kwargs) -> int:
        full = super().get_num_video_tokens(num_frames=num_frames, **kwargs)
        temporal = self.get_hf_config().vision_config.temporal_patch_size
        frames = max((num_frames + (-num_frames % temporal)) // temporal, 1)
        return frames * min(self.vtprune_keep, full // frames)


class VTPruneQwen2_5_VLMultiModalProcessor(Qwen2_5_VLMultiModalProcessor):
    """Qwen2.5-VL's processor with min(keep, merged tokens) placeholders per image and video frame."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        merge = self.info.get_hf_config().vision_config.spatial_merge_size
        keep = self.info.vtprune_keep

        def pruned(update: PromptReplacement) -> PromptReplacement:
            modality = update.modality

            def replacement(item_idx: int):
                t, h, w = (int(v) for v in out_mm_kwargs[modality][item_idx][f"{modality}_grid_thw"].data)
                tokens = update.replacement(item_idx)  # one placeholder id per unpruned merged token
                return tokens[: t * kept_per_frame(keep, h, w, merge)]

            return PromptReplacement(modality=modality, target=update.target, replacement=replacement)

        return [pruned(u) for u in super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)]


@dataclasses.dataclass
class _Item(MergedGridItem):
    """One image or video of an encoder call (``MergedGridItem``) and its temporal position step
    per frame."""

    t_factor: float = 1.0


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneQwen2_5_VLMultiModalProcessor, info=VTPruneQwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder
)
class VTPruneQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL with every image and video frame pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if vllm_config.compilation_config.compile_mm_encoder:
            raise ValueError(f"{ARCHITECTURE}: the score capture runs eagerly; turn off compile_mm_encoder")
        mm_config = vllm_config.model_config.get_multimodal_config()
        if mm_config.enable_mm_embeds:
            raise ValueError(f"{ARCHITECTURE}: precomputed image/video embeddings (--enable-mm-embeds) cannot be pruned")
        if mm_config.get_video_pruning_spec() is not None:
            raise ValueError(f"{ARCHITECTURE} prunes video frames itself: it cannot be combined with --video-pruning-rate")
        if vllm_config.parallel_config.pipeline_parallel_size > 1:
            raise ValueError(f"{ARCHITECTURE}: pipeline parallelism is not supported (positions are fixed on the first stage)")
        visual = self.visual
        full = tuple(int(i) for i in visual.fullatt_block_indexes)
        self.vtprune = EncoderPruning(
            self.config, ARCHITECTURE, visual, tower_depth=len(visual.blocks),
            feature_layer=feature_score_layer(len(visual.blocks), full), middle_layers=middle_layers(full, windowed=True),
        )
        self.vtprune_full_attention = full
        self._vtprune_step = None  # (is_multimodal, offsets) of the rows embed_input_ids just merged

    def vtprune_selections(self, clear: bool = False):
        """Kept merged-token indices of the images and videos encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    # -- encoder ----------------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs):
        inputs = self._parse_and_validate_multimodal_inputs(**kwargs)
        embeddings: Tuple[torch.Tensor, ...] = ()
        tokens_per_second = float(getattr(self.config.vision_config, "tokens_per_second", 1.0))
        for modality, item in inputs.items():  # the order of the call's modalities, as vLLM's model
            if item["type"] in ("image_embeds", "video_embeds"):
                raise ValueError(f"{ARCHITECTURE}: precomputed {modality} embeddings cannot be pruned")
            if modality == "image":
                grids, pixels, factors = item["image_grid_thw"], item["pixel_values"], None
            else:
                grids, pixels = item["video_grid_thw"], item["pixel_values_videos"]
                seconds = item.get("second_per_grid_ts")
                factors = [1.0 * tokens_per_second] * len(grids) if seconds is None else [
                    float(s) * tokens_per_second for s in seconds.tolist()
                ]
            embeddings += self._pruned_embeddings(pixels, grids, factors)
        return embeddings

    def _pruned_embeddings(self, pixel_values, grid_thw, t_factors) -> Tuple[torch.Tensor, ...]:
        """Per item: [kept, D + POSITION_CHANNELS], the merged kept tokens and their M-RoPE offsets."""
        visual, merge = self.visual, self.visual.spatial_merge_size
        grids = [tuple(int(v) for v in g) for g in grid_thw.tolist()]  # kept on the CPU by vLLM
        items, first = [], 0
        for i, grid in enumerate(grids):
            items.append(_Item(grid, first, merge, t_factor=1.0 if t_factors is None else t_factors[i]))
            first += items[-1].tokens
        window_index, window_lengths = self._windows(grids)

        def segments(layer: int) -> List[int]:
            if layer in self.vtprune_full_attention:
                return [g[1] * g[2] for g in grids for _ in range(g[0])]  # one segment per frame
            return window_lengths

        with self.vtprune.capture(segments) as capture:
            hidden = self._run_blocks(pixel_values, grids)  # [S, C], window order
        scores = capture.scores()
        window_index = from_host(window_index, hidden.device)  # one upload for both reorders
        merged = merged_features(to_merge_order(hidden, window_index, merge), merge)  # [T, 4C]
        pooled = None if scores is None else merged_grid_pool(to_merge_order(scores[0], window_index, merge), merge)
        kept_rows, offsets, keeps = self._select(items, merged, pooled)
        self.vtprune.record(keeps)
        embeds = merge_kept(visual.merger, merged[torch.cat(kept_rows)], visual.hidden_size)
        channels = encode_offsets(torch.cat(offsets), embeds.dtype)
        return tuple(torch.cat([embeds, channels], dim=1).split([r.numel() for r in kept_rows]))

    def _windows(self, grids) -> Tuple[torch.Tensor, List[int]]:
        """(window_index int64 [T] of the call, as the tower permutes; window lengths in patches)."""
        index, lengths, offset = [], [], 0
        for t, h, w in grids:
            _, _, item_index, cu_windows, _ = self.visual.get_rope_by_thw(t, h, w)  # host, cached by vLLM
            index.append(item_index + offset)
            offset += item_index.numel()
            lengths += torch.diff(cu_windows.long(), prepend=cu_windows.new_zeros(1).long()).tolist()
        return torch.cat(index), lengths

    def _run_blocks(self, pixel_values, grids) -> torch.Tensor:
        """[S, C]: the merger's input (the last block's output, window order); the tower is left
        before its merger runs. (vLLM calls its compile-capable blocks and merger without module
        hooks, so the stop is a pre-hook on the merger's first module, its norm.)"""
        captured: Dict[str, torch.Tensor] = {}

        def stop(module, args):
            captured["hidden"] = args[0]
            raise StopTower()

        with stopped_early([self.visual.merger.ln_q.register_forward_pre_hook(stop)]):
            self.visual(pixel_values, grid_thw=grids)
        if "hidden" not in captured:
            raise RuntimeError(f"{ARCHITECTURE}: the vision tower returned without calling its merger")
        return captured["hidden"].squeeze(1)

    def _select(self, items: Sequence[_Item], merged: torch.Tensor, pooled):
        """Per item: kept rows of ``merged`` (device int64), their int64 (t, h, w) offsets and its keep
        mask [frames, N]. Frames with one merged grid are selected together (Random: each item alone)."""
        groups: Dict[object, List[int]] = {}
        for i, item in enumerate(items):
            key = i if isinstance(self.vtprune.method, Random) else item.frame_grid
            groups.setdefault(key, []).append(i)
        device = merged.device
        kept_rows: List[torch.Tensor] = [None] * len(items)
        offsets: List[torch.Tensor] = [None] * len(items)
        keeps: List[torch.Tensor] = [None] * len(items)
        for members in groups.values():
            H, W = items[members[0]].frame_grid
            N = H * W
            frames = [items[i].grid[0] for i in members]
            starts = torch.tensor([items[i].first + f * N for i in members for f in range(items[i].grid[0])])
            rows = from_host(starts[:, None] + torch.arange(N), device)  # [F, N] merged-token rows
            keep = self.vtprune.select(None if pooled is None else pooled[rows], merged[rows], (H, W), frames)
            per_frame = min(self.vtprune.keep, N)
            index = torch.nonzero_static(keep, size=keep.shape[0] * per_frame)  # [F * k, 2], no host sync
            group_rows = rows[index[:, 0], index[:, 1]].view(len(starts), per_frame)
            cols = index[:, 1].view(len(starts), per_frame)
            first_frame = 0
            for i, t in zip(members, frames):
                frame_t = from_host(torch.tensor([int(f * items[i].t_factor) for f in range(t)]), device)
                c = cols[first_frame : first_frame + t]
                offsets[i] = torch.stack([frame_t[:, None].expand_as(c), c // W, c % W], dim=-1).reshape(-1, 3)
                kept_rows[i] = group_rows[first_frame : first_frame + t].reshape(-1)
                keeps[i] = keep[first_frame : first_frame + t]
                first_frame += t
        return kept_rows, offsets, keeps

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

    def embed_input_ids(self, input_ids, multimodal_embeddings=None, *, is_multimodal=None, **kwargs):
        """Strip the kept tokens' position channels before merging; ``forward`` adds them."""
        self._vtprune_step = None
        if not multimodal_embeddings:
            return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal, **kwargs)
        width = POSITION_CHANNELS
        offsets = decode_offsets(torch.cat([e[:, -width:] for e in multimodal_embeddings]))
        self._vtprune_step = (is_multimodal, offsets)
        stripped = [e[:, :-width] for e in multimodal_embeddings]
        return super().embed_input_ids(input_ids, stripped, is_multimodal=is_multimodal, **kwargs)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        step, self._vtprune_step = self._vtprune_step, None
        if step is not None and inputs_embeds is not None:
            positions = add_kept_offsets(positions, *step)
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)
