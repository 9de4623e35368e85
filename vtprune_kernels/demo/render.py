"""PNG pictures of which visual tokens a method kept.

A *panel* is one image (or one tile) as the model saw it plus the keep mask of its token grid.
Pruned tokens are darkened, kept tokens stay in full colour with a thin outline. One picture per
method, and one picture with every method side by side (one row when each method has a single
panel, else one row per method).
"""
from __future__ import annotations

import dataclasses
from typing import List, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

PANEL_SIZE = 336  # pixels per panel side in the pictures
CAPTION_HEIGHT = 28
GAP = 8
KEPT_OUTLINE = (255, 220, 0)


@dataclasses.dataclass
class Panel:
    """One image or tile: ``image`` RGB as the model saw it, ``keep`` bool [h, w] over its token grid
    (``None``: the input itself, nothing drawn on it)."""

    image: Image.Image
    keep: torch.Tensor | None = None


def overlay(panel: Panel, size: int = PANEL_SIZE) -> Image.Image:
    """``size`` x ``size`` RGB picture of the panel: pruned token cells darkened, kept ones outlined."""
    base = panel.image.convert("RGB").resize((size, size), Image.BICUBIC)
    if panel.keep is None:
        return base
    keep = panel.keep.detach().to("cpu", torch.bool)
    if keep.dim() != 2:
        raise ValueError(f"overlay: keep must be a [h, w] grid, got shape {tuple(keep.shape)}")
    h, w = keep.shape
    dark = Image.blend(base, Image.new("RGB", base.size, (20, 20, 20)), 0.75)
    cell_mask = Image.new("L", (w, h))
    cell_mask.putdata([255 if v else 0 for v in keep.flatten().tolist()])
    out = Image.composite(base, dark, cell_mask.resize(base.size, Image.NEAREST))
    draw = ImageDraw.Draw(out)
    for i, j in keep.nonzero().tolist():
        x0, x1 = round(j * size / w), round((j + 1) * size / w) - 1
        y0, y1 = round(i * size / h), round((i + 1) * size / h) - 1
        draw.rectangle([x0, y0, x1, y1], outline=KEPT_OUTLINE)
    return out


def _font(size: int):
    return ImageFont.load_default(size=size)


def _captioned_row(caption: str, panels: Sequence[Panel]) -> Image.Image:
    pictures = [overlay(p) for p in panels]
    width = len(pictures) * PANEL_SIZE + (len(pictures) - 1) * GAP
    row = Image.new("RGB", (width, CAPTION_HEIGHT + PANEL_SIZE), (255, 255, 255))
    ImageDraw.Draw(row).text((4, 4), caption, fill=(0, 0, 0), font=_font(18))
    for i, pic in enumerate(pictures):
        row.paste(pic, (i * (PANEL_SIZE + GAP), CAPTION_HEIGHT))
    return row


def method_picture(caption: str, panels: Sequence[Panel]) -> Image.Image:
    """The panels of one method side by side under a caption."""
    if not panels:
        raise ValueError("method_picture: no panels to draw")
    return _captioned_row(caption, panels)


def comparison_picture(rows: Sequence[tuple]) -> Image.Image:
    """All methods in one picture. ``rows`` = [(caption, [Panel, ...]), ...], the input first.

    When every row has exactly one panel they are laid out side by side in one row (caption
    above each); otherwise one row per method, stacked."""
    if not rows:
        raise ValueError("comparison_picture: no rows to draw")
    pictures: List[Image.Image] = [_captioned_row(caption, panels) for caption, panels in rows]
    side_by_side = all(len(panels) == 1 for _, panels in rows)
    if side_by_side:
        width = sum(p.width for p in pictures) + GAP * (len(pictures) - 1)
        height = max(p.height for p in pictures)
    else:
        width = max(p.width for p in pictures)
        height = sum(p.height for p in pictures) + GAP * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    offset = 0
    for pic in pictures:
        canvas.paste(pic, (offset, 0) if side_by_side else (0, offset))
        offset += (pic.width if side_by_side else pic.height) + GAP
    return canvas


def pixels_to_image(pixel_values: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """RGB image from one normalised tile [3, H, W] (undoes the processor's mean/std normalisation)."""
    if pixel_values.dim() != 3 or pixel_values.shape[0] != 3:
        raise ValueError(f"pixels_to_image: pixel_values must be [3, H, W], got {tuple(pixel_values.shape)}")
    x = pixel_values.detach().float().cpu()
    x = x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(x.numpy(), "RGB")
