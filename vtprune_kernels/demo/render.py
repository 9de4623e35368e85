"""PNG pictures of which visual tokens a method kept.

A *panel* is one image (or one tile) as the model saw it plus the keep mask of its token grid.
Pruned tokens are darkened, kept tokens stay in full colour with an outline whose colour tells
which stage of the method kept them (``STAGE_COLOURS``: VisPruner's important tokens yellow,
its diverse ones cyan; HIVTP's regional ones yellow, its per-window ones cyan). One picture per
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
STAGE_COLOURS = ((255, 220, 0), (0, 210, 255))  # outline of stage 1, stage 2


@dataclasses.dataclass
class Panel:
    """One image or tile: ``image`` RGB as the model saw it, ``keep`` bool [h, w] over its token grid
    (``None``: the input itself, nothing drawn on it), ``stage`` optional int [h, w]: the 1-based
    stage that kept each cell (outline colour ``STAGE_COLOURS[stage - 1]``)."""

    image: Image.Image
    keep: torch.Tensor | None = None
    stage: torch.Tensor | None = None


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
    stage = None if panel.stage is None else panel.stage.detach().to("cpu").tolist()
    for i, j in keep.nonzero().tolist():
        x0, x1 = round(j * size / w), round((j + 1) * size / w) - 1
        y0, y1 = round(i * size / h), round((i + 1) * size / h) - 1
        if stage is None:
            draw.rectangle([x0, y0, x1, y1], outline=KEPT_OUTLINE)
        else:
            colour = STAGE_COLOURS[(stage[i][j] - 1) % len(STAGE_COLOURS)]
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
    return out


def _font(size: int):
    return ImageFont.load_default(size=size)


def _captioned_row(caption: str, panels: Sequence[Panel], legend: Sequence[str] = (), legend_line: bool = False) -> Image.Image:
    """The panels side by side under a caption; ``legend``: one name per stage, written next to a
    box of its stage's colour on a second caption line (reserved, even if empty, with
    ``legend_line``, so rows laid side by side align)."""
    pictures = [overlay(p) for p in panels]
    width = len(pictures) * PANEL_SIZE + (len(pictures) - 1) * GAP
    top = CAPTION_HEIGHT * (2 if legend or legend_line else 1)
    row = Image.new("RGB", (width, top + PANEL_SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(row)
    font = _font(18)
    draw.text((4, 4), caption, fill=(0, 0, 0), font=font)
    x = 4
    for name, colour in zip(legend, STAGE_COLOURS):
        draw.rectangle([x, CAPTION_HEIGHT + 6, x + 14, CAPTION_HEIGHT + 20], outline=colour, width=3)
        draw.text((x + 20, CAPTION_HEIGHT + 2), name, fill=(0, 0, 0), font=font)
        x += 30 + int(draw.textlength(name, font=font))
    for i, pic in enumerate(pictures):
        row.paste(pic, (i * (PANEL_SIZE + GAP), top))
    return row


def method_picture(caption: str, panels: Sequence[Panel], legend: Sequence[str] = ()) -> Image.Image:
    """The panels of one method side by side under a caption (and the stage legend)."""
    if not panels:
        raise ValueError("method_picture: no panels to draw")
    return _captioned_row(caption, panels, legend)


def comparison_picture(rows: Sequence[tuple]) -> Image.Image:
    """All methods in one picture. ``rows`` = [(caption, [Panel, ...], legend), ...], the input
    first (legend: the stage names, may be empty).

    When every row has exactly one panel they are laid out side by side in one row (caption
    above each); otherwise one row per method, stacked."""
    if not rows:
        raise ValueError("comparison_picture: no rows to draw")
    side_by_side = all(len(panels) == 1 for _, panels, _ in rows)
    legend_line = side_by_side and any(legend for _, _, legend in rows)
    pictures: List[Image.Image] = [
        _captioned_row(caption, panels, legend, legend_line) for caption, panels, legend in rows
    ]
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
