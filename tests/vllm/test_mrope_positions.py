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


# -- Qwen3-VL: each video frame is its own run of placeholders, between a timestamp and delimiters ----
START, END, IMAGE_PAD, VIDEO_PAD, TEXT = 9, 10, 11, 12, 50


def _kept(n: int, keep):
    """The placeholders a frame of n merged tokens keeps: all (keep None), else min(keep, n), strided."""
    if keep is None:
        return list(range(n))
    return list(range(n))[:: max(1, n // min(keep, n))][: min(keep, n)]


def _qwen3_prompt(items, keep=None):
    """(tokens, mm_features, keep mask over the tokens, kept offsets) of a Qwen3-VL prompt. items: per
    item (text before it, "image" | "video", t, h, w) with h, w in merged tokens; keep: placeholders kept
    per frame (None: unpruned), min(keep, h*w) of every frame (``_kept``); the keep mask covers the UNPRUNED layout."""
    tokens, features, keep_mask, offsets = [], [], [], []
    for text, kind, t, h, w in items:
        tokens += [TEXT] * text + [START]  # the prompt's own delimiters around the item
        keep_mask += [True] * (text + 1)
        start = len(tokens)
        pad = IMAGE_PAD if kind == "image" else VIDEO_PAD
        for _ in range(t):
            # an image's range is its placeholders; a video's, per frame "<x.y seconds>" + delimited placeholders
            before, after = ([TEXT] * 3 + [START], [END]) if kind == "video" else ([], [])
            chosen = _kept(h * w, keep)
            tokens += before + [pad] * len(chosen) + after
            keep_mask += [True] * len(before) + [c in chosen for c in range(h * w)] + [True] * len(after)
            offsets += [(0, c // w, c % w) for c in chosen]
        tokens += [END]
        keep_mask += [True]
        grid = types.SimpleNamespace(data=torch.tensor([t, h * MERGE, w * MERGE]))
        features.append(types.SimpleNamespace(
            modality=kind, data={f"{kind}_grid_thw": grid},
            mm_position=types.SimpleNamespace(offset=start, length=len(tokens) - 1 - start),
        ))
    tokens += [TEXT] * 4
    keep_mask += [True] * 4
    return tokens, features, keep_mask, offsets


@pytest.mark.parametrize("seed", range(6))
def test_qwen3_pruned_positions_are_the_unpruned_ones_of_the_kept_tokens(seed):
    from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration as Stock

    from vtprune_kernels.integrations.vllm.qwen3_vl import VTPruneQwen3VLForConditionalGeneration as Pruned

    g = torch.Generator().manual_seed(seed)

    def randint(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    items = [
        (randint(0, 4), ["image", "video"][randint(0, 1)], 0, randint(1, 6), randint(1, 6)) for _ in range(randint(1, 4))
    ]
    items = [(text, kind, 1 if kind == "image" else randint(1, 4), h, w) for text, kind, _, h, w in items]
    keep = randint(1, 10)
    config = types.SimpleNamespace(
        image_token_id=IMAGE_PAD, video_token_id=VIDEO_PAD, vision_start_token_id=START, vision_end_token_id=END,
        vision_config=types.SimpleNamespace(spatial_merge_size=MERGE),
    )
    full_tokens, full_features, _, _ = _qwen3_prompt(items)
    stock, stock_delta = Stock._get_mrope_input_positions(full_tokens, full_features, config)
    tokens, features, keep_mask, offsets = _qwen3_prompt(items, keep)
    expected = kept_position_columns(stock, torch.tensor(keep_mask))  # keep_mask: over the unpruned tokens

    positions, delta = Pruned.get_mrope_input_positions(types.SimpleNamespace(config=config), tokens, features)
    assert delta == stock_delta + len(full_tokens) - len(tokens)
    is_mm = torch.tensor([t in (IMAGE_PAD, VIDEO_PAD) for t in tokens])
    got = add_kept_offsets(positions, is_mm, torch.tensor(offsets, dtype=torch.int64).reshape(-1, 3))
    assert torch.equal(got, expected)


def test_placeholder_runs_and_shortened_runs():
    from vtprune_kernels.integrations.vllm.mrope_positions import placeholder_runs, shortened_runs

    tokens = [1, 7, 7, 7, 2, 3, 7, 2, 7, 7]
    assert placeholder_runs(tokens, 0, len(tokens), 7) == [(1, 3), (6, 1), (8, 2)]
    assert placeholder_runs(tokens, 2, 9, 7) == [(2, 2), (6, 1), (8, 1)]
    assert placeholder_runs(tokens, 0, len(tokens), 5) == []
    assert shortened_runs(tokens, 7, 2) == [1, 7, 7, 2, 3, 7, 2, 7, 7]
    assert shortened_runs(tokens, 7, 1) == [1, 7, 2, 3, 7, 2, 7]
