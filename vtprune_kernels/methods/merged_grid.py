"""Patch scores and features on Qwen-VL's merged token grid (the 2x2 patch merger).

Qwen2-VL-family vision towers (Qwen2.5-VL, Qwen3-VL) see an image as a grid of h x w patches,
but the language model gets one token per m x m block (``spatial_merge_size`` m = 2): the
merger concatenates the hidden states of the m*m patches of a block (``view(-1, m*m*C)``) and
projects them. The processor lays the patches out so that each block's patches are consecutive:
sequence position s = ((t * (h/m) + i) * (w/m) + j) * m*m + di * m + dj holds patch
(t, m*i + di, m*j + dj). So merged token n = (t * (h/m) + i) * (w/m) + j, the raster order of
the merged grid, frame by frame, owns positions n*m*m .. n*m*m + m*m - 1.

Qwen2.5-VL additionally runs its layers on a window-permuted sequence (whole merge blocks moved
together, ``window_index``) and un-permutes after the merger; ``to_merge_order`` undoes that
permutation for anything captured inside the layers. ``tests/test_methods_merged_grid.py`` proves
these orders with tracers through the model's own forward and the processor's own flattening.

These functions are model-agnostic: the transformers integration and a serving engine's Qwen-VL
model both hold the patch sequence in this layout.
"""
from __future__ import annotations

import torch

from . import _checks


def _unit(merge_size: int) -> int:
    return _checks.count("merge_size", merge_size, 1) ** 2


def merged_grid_pool(patch_scores: torch.Tensor, merge_size: int = 2) -> torch.Tensor:
    """[..., S / m^2]: the mean score of the m x m patches each merged token concatenates.

    patch_scores [..., S]: per patch, in the processor's merge-block order (see the module doc);
    output in the merged grid's raster order (frame by frame), the order of the merger's output.
    """
    unit = _unit(merge_size)
    if patch_scores.dim() < 1 or patch_scores.shape[-1] % unit:
        raise ValueError(f"patch_scores must be [..., S] with S a multiple of {unit} (merge blocks), got {tuple(patch_scores.shape)}")
    return patch_scores.unflatten(-1, (-1, unit)).mean(-1)


def merged_features(hidden: torch.Tensor, merge_size: int = 2) -> torch.Tensor:
    """[S / m^2, m^2 * C]: the patch hidden states [S, C] concatenated per merged token, exactly as
    the merger's ``view(-1, m*m*C)`` concatenates them (patch order inside a block: di, then dj)."""
    unit = _unit(merge_size)
    if hidden.dim() != 2 or hidden.shape[0] % unit:
        raise ValueError(f"hidden must be [S, C] with S a multiple of {unit} (merge blocks), got {tuple(hidden.shape)}")
    return hidden.reshape(hidden.shape[0] // unit, unit * hidden.shape[1])


def raster_to_merge_order(grids, merge_size: int = 2) -> torch.Tensor:
    """int64 [S] (host): for towers that see each frame's patches in raster order (PaddleOCR-VL's
    NaViT), ``x[index]`` puts per-patch values [S, ...] of a packed batch of ``grids`` ((t, h, w) per
    image, h and w multiples of m) in the merge-block order above: position s of merged token
    (t, i, j), patch (di, dj) takes raster patch (t, m*i + di, m*j + dj) of its image."""
    m = _checks.count("merge_size", merge_size, 1)
    parts, first = [], 0
    for t, h, w in grids:
        t, h, w = int(t), int(h), int(w)
        if h % m or w % m:
            raise ValueError(f"a grid of {t} x {h} x {w} patches is not a whole number of {m} x {m} merge blocks")
        raster = torch.arange(t * h * w, dtype=torch.int64).view(t, h // m, m, w // m, m)
        parts.append(raster.permute(0, 1, 3, 2, 4).flatten() + first)
        first += t * h * w
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def to_merge_order(x: torch.Tensor, window_index: torch.Tensor, merge_size: int = 2) -> torch.Tensor:
    """Undo Qwen2.5-VL's window permutation: ``x`` [S, ...] holds per-patch values in the order the
    tower's layers see them (merge block u of that order is block ``window_index[u]`` of the
    merge-block order); returns them in merge-block order. ``window_index``: int64 [S / m^2], the
    permutation transformers' ``get_vision_window_index`` returns (a bijection)."""
    unit = _unit(merge_size)
    if x.shape[0] != window_index.numel() * unit:
        raise ValueError(
            f"x has {x.shape[0]} rows but window_index covers {window_index.numel()} merge blocks of {unit} patches"
        )
    blocks = x.reshape(window_index.numel(), unit, *x.shape[1:])
    restored = torch.empty_like(blocks)
    restored[window_index.to(x.device)] = blocks
    return restored.reshape(x.shape)
