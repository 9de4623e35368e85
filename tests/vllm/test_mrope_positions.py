"""M-RoPE positions of a pruned Qwen2.5-VL prompt (``integrations/vllm/mrope_positions.py``), without an
engine: text positions at request arrival plus the kept tokens' offsets added chunk by chunk equal the
columns of stock vLLM's unpruned positions (``Qwen2_5_VLForConditionalGeneration.get_mrope_input_positions``)
that survive pruning (``integrations/mrope.kept_position_columns``, shared with ``apply()``)."""
from __future__ import annotations

import functools
import types

import pytest
import torch

from vtprune_kernels.integrations.mrope import kept_position_columns
from vtprune_kernels.integrations.vllm.mrope_positions import (
    add_kept_offsets,
    decode_offsets,
    encode_offsets,
    item_span,
    prompt_positions,
)

MERGE = 2


def _stock_positions(tokens: int, items):
    """Stock vLLM's positions and delta of the unpruned prompt. items: (offset, t, h, w, seconds per
    temporal patch or None for an image) with h, w in merged tokens."""
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as Stock

    features = []
    for offset, t, h, w, seconds in items:
        grid = types.SimpleNamespace(data=torch.tensor([t, h * MERGE, w * MERGE]))
        data = {"image_grid_thw": grid} if seconds is None else {
            "video_grid_thw": grid, "second_per_grid_ts": types.SimpleNamespace(data=torch.tensor(seconds))
        }
        features.append(types.SimpleNamespace(
            mm_position=types.SimpleNamespace(offset=offset), modality="image" if seconds is None else "video", data=data
        ))
    model = types.SimpleNamespace(config=types.SimpleNamespace(
        vision_config=types.SimpleNamespace(spatial_merge_size=MERGE, tokens_per_second=2)
    ))
    model.iter_mm_grid_thw = functools.partial(Stock.iter_mm_grid_thw, model)
    return Stock.get_mrope_input_positions(model, [0] * tokens, features)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_pruned_positions_are_the_unpruned_ones_of_the_kept_tokens(seed, dtype):
    g = torch.Generator().manual_seed(seed)

    def randint(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    # a prompt of text, images and videos; keep: per frame, min(keep, h*w) merged tokens
    keep = randint(1, 12)
    unpruned_items, pruned_items, keep_mask, offsets, placeholder = [], [], [], [], []
    position = pruned_position = 0
    for _ in range(randint(1, 4)):
        text = randint(0, 5)
        keep_mask += [True] * text
        placeholder += [False] * text
        position, pruned_position = position + text, pruned_position + text
        is_video = bool(randint(0, 1))
        t, h, w = (randint(1, 4) if is_video else 1), randint(1, 7), randint(1, 7)
        seconds = [None, 0.5, 1.0, 1.5][randint(1, 3)] if is_video else None
        t_factor = 1.0 if seconds is None else seconds * 2
        unpruned_items.append((position, t, h, w, seconds))
        kept = min(keep, h * w)
        for f in range(t):
            chosen = torch.randperm(h * w, generator=g)[:kept].sort().values
            frame = torch.zeros(h * w, dtype=torch.bool)
            frame[chosen] = True
            keep_mask += frame.tolist()
            offsets += [(int(f * t_factor), int(c) // w, int(c) % w) for c in chosen]
        pruned_items.append((pruned_position, t * kept, item_span(t, h, w, t_factor)))
        placeholder += [True] * (t * kept)
        position, pruned_position = position + t * h * w, pruned_position + t * kept
    text = randint(0, 5)
    keep_mask += [True] * text
    placeholder += [False] * text
    unpruned_tokens, pruned_tokens = position + text, pruned_position + text

    stock, stock_delta = _stock_positions(unpruned_tokens, unpruned_items)
    expected = kept_position_columns(stock, torch.tensor(keep_mask))

    positions, delta = prompt_positions(pruned_tokens, pruned_items)
    assert delta == stock_delta + unpruned_tokens - pruned_tokens  # decoding continues at the unpruned max + 1
    # prefill in chunks: each step adds the offsets of the kept tokens it merges, carried through the
    # embeddings' trailing channels (``dtype``)
    channels = encode_offsets(torch.tensor(offsets, dtype=torch.int64).reshape(-1, 3), dtype)
    is_mm = torch.tensor(placeholder)
    got, start, row = [], 0, 0
    while start < pruned_tokens:
        end = min(pruned_tokens, start + randint(1, 9))
        rows = int(is_mm[start:end].sum())
        step = add_kept_offsets(positions[:, start:end], is_mm[start:end], decode_offsets(channels[row : row + rows]))
        got.append(step)
        start, row = end, row + rows
    assert torch.equal(torch.cat(got, dim=1), expected)


def test_offsets_survive_half_precision_channels():
    offsets = torch.tensor([[0, 0, 0], [1, 255, 256], [65535, 1000, 40000]])
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert torch.equal(decode_offsets(encode_offsets(offsets, dtype)), offsets)
