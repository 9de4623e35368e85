"""Tokens a method may keep: an optional bool mask per row, ``valid`` [B, N].

LLaVA-NeXT unpads its tile grid to the image's aspect ratio: tokens in the padding never reach the
language model, so a method must choose among the others (``keep`` counts survivors only). An
integration passes those survivors as ``valid`` (``None``: every token may be kept).

- Score-based methods (VisPruner, Random) accept any subset: each row keeps min(keep, valid count)
  tokens chosen among its valid ones (``row_budget``, ``valid_and_invalid_regions``).
- Spatial methods (Uniform, HIVTP) need the grid: each row's valid tokens must form one axis-aligned
  rectangle of the (h, w) grid (what unpadding leaves of a tile; possibly empty). The method runs on
  the rectangle as a grid of its own (``rectangles`` / ``on_rectangles``). Reading the rectangles is
  host work: a ``valid`` mask on CUDA is copied to the host (one synchronisation); integrations pass
  a CPU mask.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from ._device import from_host

Rectangle = Tuple[int, int, int, int]  # (top, left, height, width)


def check(valid: Optional[torch.Tensor], batch: int, n_tokens: int) -> Optional[torch.Tensor]:
    """``valid`` as a bool [batch, n_tokens] tensor (or None), with errors naming the argument."""
    if valid is None:
        return None
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool:
        got = valid.dtype if isinstance(valid, torch.Tensor) else type(valid).__name__
        raise ValueError(f"valid must be a bool tensor [B, N], got {got}")
    if tuple(valid.shape) != (batch, n_tokens):
        raise ValueError(f"valid must have shape [B={batch}, N={n_tokens}], got {tuple(valid.shape)}")
    return valid


def on_device(valid: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``valid`` on ``device`` (a CPU mask goes up without a host sync)."""
    return from_host(valid, device) if valid.device.type == "cpu" else valid.to(device)


def row_budget(valid: torch.Tensor, keep: int) -> torch.Tensor:
    """int64 [B]: min(keep, valid tokens of the row), on ``valid``'s device (no host sync)."""
    return valid.sum(1).clamp(max=keep)


def valid_and_invalid_regions(valid: torch.Tensor, keep_valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(region_ids int64 [B, N], k int64 [B, 2]) for ``region_topk_mask``: region 0 = the valid tokens,
    keeping ``keep_valid[b]`` of them; region 1 = the others, keeping none."""
    region_ids = (~valid).long()
    k = torch.stack([keep_valid, torch.zeros_like(keep_valid)], dim=1)
    return region_ids, k


def rectangles(valid: torch.Tensor, grid: Tuple[int, int]) -> List[Optional[Rectangle]]:
    """Per row, the (top, left, height, width) of its valid cells on the (h, w) grid, or None when the
    row has none; an error when a row's valid cells are not exactly one rectangle."""
    h, w = grid
    cells = valid.detach().to("cpu").reshape(-1, h, w)
    # host lists, not tensor ops: a host mask costs no device synchronisation
    rows_used, cols_used = cells.any(2).tolist(), cells.any(1).tolist()
    counts = cells.sum((1, 2)).tolist()
    out: List[Optional[Rectangle]] = []
    for b, (row_flags, col_flags, count) in enumerate(zip(rows_used, cols_used, counts)):
        ys = [y for y, used in enumerate(row_flags) if used]
        xs = [x for x, used in enumerate(col_flags) if used]
        if not ys:
            out.append(None)
            continue
        top, left = ys[0], xs[0]
        height, width = ys[-1] - top + 1, xs[-1] - left + 1
        if count != height * width:
            raise ValueError(
                f"valid: row {b}'s valid tokens do not form one rectangle of the {h}x{w} grid "
                "(spatial methods need the tile's surviving rectangle)"
            )
        out.append((top, left, height, width))
    return out


def rectangle_cells(rect: Rectangle, grid_width: int) -> torch.Tensor:
    """int64 [height*width]: raster indices (on the full grid) of the rectangle's cells, in its raster order."""
    top, left, height, width = rect
    ys = torch.arange(top, top + height).repeat_interleave(width)
    xs = torch.arange(left, left + width).repeat(height)
    return ys * grid_width + xs


def on_rectangles(
    valid: torch.Tensor,
    grid: Tuple[int, int],
    device: torch.device,
    select_rows: Callable[[torch.Tensor, torch.Tensor, Tuple[int, int]], torch.Tensor],
) -> torch.Tensor:
    """bool [B, h*w]: ``select_rows(rows, cells, (height, width))`` run once per distinct rectangle.

    rows: int64 indices of the rows sharing the rectangle; cells: int64 [height*width] raster indices
    of its cells on the full grid (both on ``device``); it returns a bool [len(rows), height*width]
    mask over the rectangle's own grid, scattered back here. Rows without valid tokens keep none.
    """
    h, w = grid
    groups: Dict[Rectangle, List[int]] = {}
    for b, rect in enumerate(rectangles(valid, grid)):
        if rect is not None:
            groups.setdefault(rect, []).append(b)
    out = torch.zeros(valid.shape[0], h * w, dtype=torch.bool, device=device)
    for rect, rows in groups.items():
        rows_t = from_host(torch.tensor(rows, dtype=torch.int64), device)
        cells = from_host(rectangle_cells(rect, w), device)
        out[rows_t[:, None], cells[None, :]] = select_rows(rows_t, cells, rect[2:])
    return out
