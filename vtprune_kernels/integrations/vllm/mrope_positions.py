"""M-RoPE positions of a pruned Qwen-VL prompt in vLLM: every kept token keeps its unpruned position.

vLLM computes a request's M-RoPE positions when the request arrives (``get_mrope_input_positions``),
before the encoder has chosen the tokens an image keeps, and feeds the language model slices of
them as prefill chunks are scheduled. The work is split in two:

- ``prompt_positions`` (request arrival): every TEXT token's position is exact from the start. It
  depends only on the grids: text continues after an image at base + span, where base is the
  position the image's first token would have unpruned and span = 1 + the unpruned image's largest
  position offset (over t, h, w), whatever it keeps. Every placeholder of an image is put at its
  image's base, on all three axes.
- ``add_kept_offsets`` (each step that merges image rows into the prompt): the encoder outputs carry
  each kept token's (t, h, w) offset in its unpruned grid as trailing channels (``encode_offsets``);
  adding them to the placeholders' positions gives base + offset, the unpruned position.

So text positions never move and a placeholder's position depends only on its own row: chunked
prefill, the encoder cache and prefix caching (chunks that are never merged again) all see the
positions ``apply()`` gives (``integrations/mrope.py``).

Offsets travel as (offset // 256, offset % 256) per axis (``POSITION_CHANNELS`` = 6), exact in
bfloat16 and float16 for offsets below 65536.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import numpy as np
import torch

POSITION_CHANNELS = 6
_RADIX = 256


def encode_offsets(offsets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[K, 6] channels in ``dtype`` for int64 offsets [K, 3] (t, h, w) of kept tokens."""
    return torch.cat([offsets // _RADIX, offsets % _RADIX], dim=1).to(dtype)


def decode_offsets(channels: torch.Tensor) -> torch.Tensor:
    """int64 [K, 3] offsets from the [K, 6] channels of ``encode_offsets``."""
    values = channels.float().round().long()
    return values[:, :3] * _RADIX + values[:, 3:]


def item_span(t: int, h: int, w: int, t_factor: float) -> int:
    """1 + the largest position offset of an unpruned item of t frames of h x w merged tokens
    (frame f at temporal offset int(f * t_factor), as vLLM's and transformers' Qwen-VL compute it)."""
    return max(int((t - 1) * t_factor), h - 1, w - 1) + 1


def prompt_positions(num_tokens: int, items: Iterable[Tuple[int, int, int]]) -> Tuple[torch.Tensor, int]:
    """(int64 [3, N] positions, delta) of a pruned prompt of N tokens: text exact, every placeholder
    at its item's base. items: per multimodal item in prompt order, (offset of its first
    placeholder, number of placeholders, span). delta: the next token's position minus N (the
    position the token after the prompt has in the unpruned layout)."""
    positions = np.empty((3, num_tokens), dtype=np.int64)
    start = next_position = 0
    for offset, length, span in items:
        text = offset - start
        positions[:, start:offset] = np.arange(text) + next_position
        next_position += text
        positions[:, offset : offset + length] = next_position
        next_position += span
        start = offset + length
    positions[:, start:] = np.arange(num_tokens - start) + next_position
    next_position += num_tokens - start
    return torch.from_numpy(positions), next_position - num_tokens


def add_kept_offsets(positions: torch.Tensor, is_multimodal: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """positions [3, L] of one step's tokens (``prompt_positions`` slices; L >= M) with the offsets
    [R, 3] of the R kept tokens merged at ``is_multimodal`` (bool [M], R True) added to theirs.
    No host synchronisation (``masked_scatter``)."""
    M = is_multimodal.shape[0]
    mask = is_multimodal.to(positions.device)[None].expand(3, M)
    shift = torch.zeros_like(positions[:, :M]).masked_scatter(mask, offsets.to(positions).T.contiguous())
    out = positions.clone()
    out[:, :M] += shift
    return out


def placeholder_runs(tokens, start: int, end: int, token_id: int) -> List[Tuple[int, int]]:
    """(offset, length) of every maximal run of ``token_id`` in tokens[start:end], in order (the frames
    of a Qwen3-VL video: each frame's placeholders are one run between its delimiters)."""
    runs: List[Tuple[int, int]] = []
    i = start
    while i < end:
        if tokens[i] == token_id:
            j = i
            while j < end and tokens[j] == token_id:
                j += 1
            runs.append((i, j - i))
            i = j
        else:
            i += 1
    return runs


def shortened_runs(tokens: Sequence[int], token_id: int, keep: int) -> List[int]:
    """``tokens`` with every maximal run of ``token_id`` cut to its first ``keep`` tokens."""
    out: List[int] = []
    run = 0
    for token in tokens:
        run = run + 1 if token == token_id else 0
        if run <= keep:
            out.append(token)
    return out


def frame_run_positions(input_tokens, mm_features, config, placeholder) -> Tuple[torch.Tensor, int]:
    """``prompt_positions`` of a prompt whose every frame (an image, or a frame of a video) is one run of
    placeholders with its own base (Qwen3-VL, Qwen3.5, GLM-4V). mm_features: vLLM's feature specs
    (modality, ``<modality>_grid_thw``, placeholder range); placeholder(modality) -> its token id."""
    merge = config.vision_config.spatial_merge_size
    items = []
    for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
        t, h, w = (int(v) for v in feature.data[f"{feature.modality}_grid_thw"].data.tolist())
        start = feature.mm_position.offset
        runs = placeholder_runs(input_tokens, start, start + feature.mm_position.length, placeholder(feature.modality))
        if len(runs) != t:
            raise RuntimeError(f"a {feature.modality} of {t} frames has {len(runs)} placeholder runs in the prompt")
        span = item_span(1, h // merge, w // merge, 0.0)
        items += [(offset, length, span) for offset, length in runs]
    return prompt_positions(len(input_tokens), items)
