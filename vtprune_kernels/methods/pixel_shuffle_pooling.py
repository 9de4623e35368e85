"""Patch scores pooled onto InternVL's pixel-shuffled token grid.

InternVL (transformers' ``InternVLModel.pixel_shuffle``, downsample_ratio 0.5) merges every
2 x 2 patch neighbourhood into one token before the projector. Its output token t = i * (w/2) + j
(raster order of the (h/2, w/2) grid) concatenates the channels of patches (2i + di, 2j + dj),
di, dj in {0, 1}. So the score of token t is the mean of those four patch scores: 2 x 2 average
pooling in raster order. ``tests/test_methods_pixel_shuffle.py`` proves the grouping with a
tracer through the model's own function. ``factor`` generalises to other ratios (1 / factor).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import _checks


def pixel_shuffle_pool(scores: torch.Tensor, grid: Sequence[int], factor: int = 2) -> torch.Tensor:
    """float [B, (h/f)*(w/f)]: mean of the f x f patch scores each pixel-shuffled token merges.

    scores float [B, h*w]: per-patch scores ([CLS] dropped) in raster order of the (h, w) patch
    grid; h and w must be multiples of ``factor`` (InternVL: factor = 1 / downsample_ratio = 2).
    Output in the token order of ``InternVLModel.pixel_shuffle`` followed by its reshape.
    """
    _checks.float_tensor("scores", scores, 2)
    h, w = _checks.grid(grid)
    factor = _checks.count("factor", factor, 1)
    B, N = scores.shape
    if h * w != N:
        raise ValueError(f"grid {(h, w)} has {h * w} cells but scores has N={N} tokens per row")
    if h % factor or w % factor:
        raise ValueError(f"grid {(h, w)} must be divisible by factor={factor} (pixel shuffle needs whole blocks)")
    pooled = F.avg_pool2d(scores.reshape(B, 1, h, w), kernel_size=factor, stride=factor)
    return pooled.reshape(B, (h // factor) * (w // factor))
