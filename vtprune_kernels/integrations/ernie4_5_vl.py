"""ERNIE 4.5-VL (``Ernie4_5_VLMoeForConditionalGeneration``): Qwen-VL's plan, the resampler on kept tokens.

The tower is Qwen2-VL-like (``qwen_tower``: packed patches of one frame each in 2x2 merge-block order,
full attention per frame, ``cu_seqlens``) and ends with a LayerNorm ``ln``; the model's
``resampler_model`` then maps each merged token's 4C concatenation through a spatial MLP, a temporal
step (an image token is concatenated with itself; a video's frames are paired 2 by 2, frame 2p and
2p+1 at the same merged position), an MLP and an RMS norm. Images and videos may share a call, each
with its own placeholder token (and start/end markers).

Selection unit: one image on its merged grid (h/2 x w/2), and one temporal pair of a video's frames on
the same grid (the language model's tokens: a video of t frames has t/2 x h/2 x w/2). Budgets:
``keep`` tokens per image and per frame pair. Scores: the attention each patch receives (no [CLS]),
pooled onto the merged token (mean of its 4 patches); for a pair, the mean of the two frames' pooled
scores (every frame attends over itself alone, so both weigh the same). VisPruner's de-duplication
compares the resampler's input of a language-model token: the 4C concatenation after ``ln`` (image),
the two frames' 4C concatenations side by side, 8C (pair). Only the kept tokens go through the
resampler (per token: a pair's two frames go through the spatial MLP, then together through the rest).

Prompt: the pruned placeholders leave ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` and
``moe_mm_token_type_ids`` (the MoE's vision-expert routing, markers included) alike; the kept columns
keep their unpruned 3-D positions from the model's own ``get_rope_index`` (``mrope``), and
``rope_deltas`` continue generation at the unpruned max + 1.

Selection indices (``last_selection``): per image, raster indices on its merged grid; per video,
pair * (h/2)*(w/2) + raster index; images first, then videos. Images with the same merged grid are
selected together, and so are frame pairs (apart from images), in call order.
"""
from __future__ import annotations

import dataclasses
from typing import List

import torch
from torch import nn

from ..methods._device import from_host
from .qwen_tower import TowerRun, describe_tower
from .qwen_vl import QwenVLAdapter

FRAMES_PER_TOKEN = 2  # a video token pairs 2 frames (the model's temporal slicing is written for 2)


def resample_kept(resampler: nn.Module, tokens: torch.Tensor, frames: int) -> torch.Tensor:
    """[K, D]: the resampler on kept language-model tokens, as the model computes them.

    tokens: [K, frames * 4C], per token its frames' ``ln``-normed 4C concatenations side by side
    (frames=1: an image token, concatenated with itself for the temporal MLP; frames=2: a video pair).
    The spatial MLP runs on every first frame's rows, then every second frame's (the model's order for
    a single pair)."""
    K = tokens.shape[0]
    x = tokens.reshape(K, frames, -1).transpose(0, 1).reshape(frames * K, -1)
    x = resampler.spatial_linear(x).reshape(frames, K, -1)
    x = torch.cat([x[0], x[-1]], dim=-1)
    return resampler.after_norm(resampler.mlp(resampler.temporal_linear(x)))


class Ernie45VLAdapter(QwenVLAdapter):
    """Prunes the images and videos of one ``Ernie4_5_VLMoeForConditionalGeneration`` call."""

    consumed_kwargs = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw")
    host_inputs = ("image_grid_thw", "video_grid_thw", "mm_token_type_ids", "moe_mm_token_type_ids")

    def describe_tower(self):
        return describe_tower(self.inner.vision_tower)

    def _run_towers(self, kwargs, layers, backend, reads):
        """Qwen-VL's runs, then per run: ``ln`` on the last block's output (the resampler's input), and a
        video's frames paired (entries counted in pairs: grid (t/2, h, w))."""
        videos = reads.get("video_grid_thw") if kwargs.get("pixel_values_videos") is not None else None
        if videos is not None and videos.dim() == 2 and videos.shape[1] == 3 and bool((videos[:, 0] % FRAMES_PER_TOKEN).any()):
            raise ValueError(
                f"video_grid_thw: {self.family} pairs a video's frames 2 by 2, every video needs an even "
                f"number of frames, got t = {videos[:, 0].tolist()}"
            )
        entries, runs = super()._run_towers(kwargs, layers, backend, reads)
        C = self.tower.hidden_size
        ln = self.inner.vision_tower.ln
        for name, run in runs.items():
            merged = ln(run.merged.reshape(-1, C)).reshape(run.merged.shape)  # per patch, as the tower ends
            runs[name] = dataclasses.replace(run, merged=merged)
        if "video" in runs:
            runs["video"] = self._pairs(runs["video"], [e for e in entries if e.modality == "video"])
            for i, e in enumerate(entries):
                if e.modality == "video":
                    entries[i] = dataclasses.replace(e, grid=(e.grid[0] // FRAMES_PER_TOKEN, *e.grid[1:]), first=e.first // FRAMES_PER_TOKEN)
        return entries, runs

    @staticmethod
    def _pairs(run: TowerRun, videos: List) -> TowerRun:
        """The run with each video's frames paired: merged [T/2, 8C] (frame 2p's 4C, then frame 2p+1's),
        scores [T/2] (the two frames' mean)."""
        merged, scores = [], []
        for e in videos:
            t, N = e.grid[0], e.frame_tokens
            part = slice(e.first, e.first + t * N)
            merged.append(run.merged[part].reshape(t // 2, 2, N, -1).transpose(1, 2).reshape(t // 2 * N, -1))
            if run.scores is not None:
                scores.append(run.scores[part].reshape(t // 2, 2, N).mean(1).flatten())
        return dataclasses.replace(run, merged=torch.cat(merged), scores=torch.cat(scores) if scores else None)

    @staticmethod
    def group_key(entry) -> tuple:
        """Images and frame pairs are selected apart (their features differ in width: 4C, 8C)."""
        return (*entry.frame_grid, entry.modality)

    def _merge(self, run, keeps):
        """The model's ``mm_encoder_outputs`` entry of one modality: the kept tokens through the resampler."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        counts = [int(k.sum()) for k in keeps]
        index = from_host(torch.cat(keeps).nonzero().flatten(), run.merged.device)
        frames = run.merged.shape[-1] // (self.tower.merge_size**2 * self.tower.hidden_size)
        pooled = resample_kept(self.inner.resampler_model, run.merged[index], frames)
        return BaseModelOutputWithPooling(pooler_output=list(torch.split(pooled, counts)))

    def finish(self, out: dict, inputs: dict, reads, layout) -> None:
        """Qwen-VL's positions and token types; ``moe_mm_token_type_ids`` shortened like the prompt."""
        super().finish(out, inputs, reads, layout)
        moe = reads.get("moe_mm_token_type_ids")
        if moe is not None:
            if moe.shape != reads.get("input_ids").shape:
                raise ValueError(
                    f"moe_mm_token_type_ids shape {tuple(moe.shape)} != input_ids shape {tuple(reads.get('input_ids').shape)}"
                )
            out["moe_mm_token_type_ids"] = from_host(layout.gather(moe, 0), out["input_ids"].device)
