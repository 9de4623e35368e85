"""What the pruned Qwen-VL models of the vLLM plugin (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) share.

They select per frame (an image is one frame) among the 2x2-merged tokens, keep min(keep, merged
tokens) per frame, run the merger(s) on the kept tokens only, and keep every kept token's M-RoPE
position from the unpruned layout by carrying its grid offset in trailing channels of the encoder
output (``mrope_positions.py``). Here:

- ``KeptCountsInfo``: the processing-info mixin that announces the kept counts (vLLM sizes the
  prompt, the encoder budget and profiling from it);
- ``PrunedPlaceholders`` / ``PrunedFrameRuns``: the processor mixins that write the kept counts into
  the prompt (an item as one placeholder run: Qwen2-VL, Qwen2.5-VL; a run per frame: Qwen3-VL,
  Qwen3.5, GLM-4V);
- ``check_engine_config``: the engine-start refusals;
- ``select_frames``: selection of a call's frames, grouped by merged grid;
- ``with_offsets``: the per-item encoder outputs, offset channels appended;
- ``PositionChannels``: the model mixin that strips the channels before merging and adds the offsets
  to the positions of the tokens just merged.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

import torch

from ...methods import Random
from ...methods._device import from_host
from ..qwen_tower import MergedGridItem
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails

from .encoder_pruning import check_encoder_runs_eagerly
from .mrope_positions import POSITION_CHANNELS, add_kept_offsets, decode_offsets, encode_offsets, shortened_runs
from .switch import method_from_config


def kept_per_frame(keep: int, height: int, width: int, merge: int) -> int:
    """Merged tokens a frame of height x width patches keeps."""
    return min(keep, (height // merge) * (width // merge))


class KeptCountsInfo:
    """Mixin for a Qwen-VL processing info (vLLM's ``Qwen2VLProcessingInfo`` family): min(keep,
    merged tokens) per image and per video frame. Subclasses set ``vtprune_architecture``. (vLLM
    treats a ValueError raised here as "not multimodal" and goes on: the engine-start checks live in
    the model's ``__init__``.)"""

    vtprune_architecture = ""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self._vtprune_config(), self.vtprune_architecture).keep

    def _vtprune_config(self):
        """The config that carries the ``vtprune`` switch (the model's own; Qwen2.5-Omni: the top-level one)."""
        return self.get_hf_config()

    def get_num_image_tokens(self, **kwargs) -> int:
        return min(self.vtprune_keep, super().get_num_image_tokens(**kwargs))

    def get_num_video_tokens(self, *, num_frames: int, **kwargs) -> int:
        full = super().get_num_video_tokens(num_frames=num_frames, **kwargs)
        temporal = self.get_hf_config().vision_config.temporal_patch_size
        frames = max((num_frames + (-num_frames % temporal)) // temporal, 1)
        return frames * min(self.vtprune_keep, full // frames)


class PrunedPlaceholders:
    """Processor mixin (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni): min(keep, merged tokens) placeholders per image
    and video frame (an item's placeholders are one run of t * h*w/4 tokens); other modalities' (audio) unchanged."""

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

        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        return [pruned(u) if u.modality in ("image", "video") else u for u in updates]


def frame_placeholder(config, modality: str, video_frames_use_image_token: bool = False) -> int:
    """The placeholder token of a modality's frames: its own (Qwen3-VL, Qwen3.5), or the image's for
    a model that marks video frames with it (GLM-4V)."""
    if modality == "video" and not video_frames_use_image_token:
        return int(config.video_token_id)
    return int(config.image_token_id)


class PrunedFrameRuns:
    """Processor mixin (Qwen3-VL, Qwen3.5, GLM-4V): min(keep, merged tokens) placeholders per image and
    per video frame, where every frame's placeholders are one run (a video's timestamps and frame
    delimiters unchanged). ``video_frames_use_image_token``: see ``frame_placeholder``."""

    video_frames_use_image_token = False

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        config = self.info.get_hf_config()
        merge = config.vision_config.spatial_merge_size
        keep = self.info.vtprune_keep

        def pruned(update: PromptReplacement) -> PromptReplacement:
            modality = update.modality
            pad = frame_placeholder(config, modality, self.video_frames_use_image_token)

            def replacement(item_idx: int):
                _, h, w = (int(v) for v in out_mm_kwargs[modality][item_idx][f"{modality}_grid_thw"].data)
                full = update.replacement(item_idx)  # one placeholder run of h*w/4 per frame
                tokens = full.full if isinstance(full, PromptUpdateDetails) else list(full)
                tokens = shortened_runs(tokens, pad, kept_per_frame(keep, h, w, merge))
                return PromptUpdateDetails.select_token_id(tokens, pad) if isinstance(full, PromptUpdateDetails) else tokens

            return PromptReplacement(modality=modality, target=update.target, replacement=replacement)

        return [pruned(u) for u in super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)]


def check_engine_config(vllm_config, architecture: str) -> None:
    """Engine-start refusals of what the pruned Qwen-VL models cannot serve, with the reason."""
    check_encoder_runs_eagerly(vllm_config, architecture)
    mm_config = vllm_config.model_config.get_multimodal_config()
    if mm_config.enable_mm_embeds:
        raise ValueError(f"{architecture}: precomputed image/video embeddings (--enable-mm-embeds) cannot be pruned")
    if mm_config.get_video_pruning_spec() is not None:
        raise ValueError(f"{architecture} prunes video frames itself: it cannot be combined with --video-pruning-rate")
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        raise ValueError(f"{architecture}: pipeline parallelism is not supported (positions are fixed on the first stage)")


@dataclasses.dataclass
class FrameItem(MergedGridItem):
    """One image or video of an encoder call (``MergedGridItem``) and the temporal position step of its
    frames (Qwen2-VL, Qwen2.5-VL: frame f at int(f * t_factor); Qwen3-VL: 0, every frame has its own base)."""

    t_factor: float = 1.0


def select_frames(pruning, items: Sequence[FrameItem], merged: torch.Tensor, pooled):
    """Per item: kept rows of ``merged`` [T, 4C] (device int64), their int64 (t, h, w) offsets and its
    keep mask [frames, N]. ``pruning``: the model's ``EncoderPruning``; pooled: float32 [T] merged-token
    scores or None. Frames with one merged grid are selected together (Random: each item alone)."""
    groups: Dict[object, List[int]] = {}
    for i, item in enumerate(items):
        key = i if isinstance(pruning.method, Random) else item.frame_grid
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
        keep = pruning.select(None if pooled is None else pooled[rows], merged[rows], (H, W), frames)
        per_frame = min(pruning.keep, N)
        index = torch.nonzero_static(keep, size=keep.shape[0] * per_frame)  # [F * k, 2], no host sync
        group_rows = rows[index[:, 0], index[:, 1]].view(len(starts), per_frame)
        cols = index[:, 1].view(len(starts), per_frame)
        first_frame = 0
        for i, t in zip(members, frames):
            # int(f * t_factor) of every frame, on the device (float64: Python's product, truncated)
            frame_t = (torch.arange(t, dtype=torch.float64, device=device) * items[i].t_factor).long()
            c = cols[first_frame : first_frame + t]
            offsets[i] = torch.stack([frame_t[:, None].expand_as(c), c // W, c % W], dim=-1).reshape(-1, 3)
            kept_rows[i] = group_rows[first_frame : first_frame + t].reshape(-1)
            keeps[i] = keep[first_frame : first_frame + t]
            first_frame += t
    return kept_rows, offsets, keeps


def with_offsets(embeds: torch.Tensor, offsets: Sequence[torch.Tensor], kept_rows: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """Per item: [kept, D + POSITION_CHANNELS], its rows of ``embeds`` [K, D] (items in order) with
    their M-RoPE offsets appended."""
    channels = encode_offsets(torch.cat(list(offsets)), embeds.dtype)
    return tuple(torch.cat([embeds, channels], dim=1).split([r.numel() for r in kept_rows]))


class PositionChannels:
    """Model mixin: ``embed_input_ids`` strips the kept tokens' position channels before merging;
    ``forward`` adds their offsets to the positions of the tokens just merged."""

    _vtprune_step = None  # (is_multimodal, offsets) of the rows embed_input_ids just merged

    def embed_input_ids(self, input_ids, multimodal_embeddings=None, *, is_multimodal=None, **kwargs):
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
