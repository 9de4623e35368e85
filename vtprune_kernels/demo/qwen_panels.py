"""Demo pictures for Qwen-VL inputs: flattened patches back to an image, kept merged tokens.

Qwen-VL processors hand the model flattened patches [S, 3 * 2 * P * P] (channels, 2 temporal
copies, P x P pixels) in merge-block order (``methods/merged_grid.py``) plus ``image_grid_thw``;
the handle's selection indexes each image's merged grid of (h/2) x (w/2) tokens in raster order.
"""
from __future__ import annotations

from typing import List, Sequence

import torch

from .render import Panel, pixels_to_image


def patches_to_pixels(patches: torch.Tensor, grid, patch: int, merge: int = 2) -> torch.Tensor:
    """[3, h*P, w*P]: the first frame of one image's flattened patches [t*h*w, 3*T*P*P] (normalised
    values, as the processor left them), ``grid`` = (t, h, w) in patches."""
    t, h, w = (int(v) for v in grid)
    temporal = patches.shape[1] // (3 * patch * patch)
    blocks = patches[: h * w].reshape(h // merge, w // merge, merge, merge, 3, temporal, patch, patch)[:, :, :, :, :, 0]
    # (block row, block col, row in block, col in block, channel, y, x) -> (channel, row, y, col, x)
    return blocks.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, h * patch, w * patch)


def qwen_panels(
    selection: Sequence[torch.Tensor],
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor,
    patch: int,
    mean: Sequence[float],
    std: Sequence[float],
    merge: int = 2,
) -> List[Panel]:
    """One panel per image: its pixels and the keep grid of its merged tokens. ``selection``: per
    image, kept indices into its (h/2) * (w/2) merged tokens (``None`` entries draw the input only)."""
    panels, first = [], 0
    for i, grid in enumerate(image_grid_thw.tolist()):
        t, h, w = grid
        pixels = patches_to_pixels(pixel_values[first : first + t * h * w].float().cpu(), grid, patch, merge)
        keep = None
        if selection is not None:
            keep = torch.zeros((h // merge) * (w // merge), dtype=torch.bool)
            keep[selection[i].cpu()] = True
            keep = keep.view(h // merge, w // merge)
        panels.append(Panel(pixels_to_image(pixels, mean, std), keep))
        first += t * h * w
    return panels
