"""LLaVA-OneVision's packing, as seen by a selection (shared by ``apply()`` and the vLLM plugin).

The language model gets an image as its base tile (h x w tokens) then the big grid of its tiles,
unpadded and, when large, bilinearly downsized, with a newline per row; a video frame as its grid
bilinearly pooled to ceil(h/2) x ceil(w/2). A selection runs per tile on an h x w *canvas*: the
tile's share of the packed grid (one rectangle), top-left aligned, its other slots invalid.

``packed_rows`` says where each packed row comes from (tile, canvas slot); ``valid_slots`` which
canvas slots hold a token; ``canvas`` moves values packed by the model onto the canvases;
``resized`` resizes scores and features together as the model resizes its tokens.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, List, Optional, Tuple

import torch

from ..methods._device import from_host


@dataclasses.dataclass
class PackedRows:
    """Where the rows of one packed image come from, on the host.

    tile: int64 [L], the row's tile among the image's tiles (base tile 0), -1 for a newline row;
    slot: int64 [L], the row's cell on that tile's h x w canvas, -1 for a newline.
    """

    tile: torch.Tensor
    slot: torch.Tensor

    @property
    def is_token(self) -> torch.Tensor:
        return self.tile >= 0


def packed_rows(
    pack: Optional[Callable[[torch.Tensor], torch.Tensor]], tiles: int, grid: Tuple[int, int], tile_grid: Tuple[int, int]
) -> PackedRows:
    """Where each packed row of one image of ``tiles`` tiles (base first) comes from.

    pack: float64 [tiles, N, 3] -> [L, 3], the model's packing of one image with a zero newline
    (not called for one tile: base tokens then one newline); grid: (h, w) tokens per tile;
    tile_grid: (rows, columns) of the grid tiles. A tracer of (flag, source row, source column) in
    the padded big grid goes through ``pack``: a bilinear resize of a coordinate map gives each packed
    token's sampling point, whose nearest source token (exactly halfway: the lower index) names its
    tile. Each tile's tokens form one rectangle of the packed grid; a token's canvas slot is its
    place in that rectangle.
    """
    h, w = grid
    N = h * w
    base_tile, base_slot = torch.zeros(N, dtype=torch.int64), torch.arange(N)
    if tiles == 1:
        minus_one = torch.tensor([-1])
        return PackedRows(torch.cat([base_tile, minus_one]), torch.cat([base_slot, minus_one]))
    cols_of_tiles = tile_grid[1]
    tracer = torch.zeros(tiles, N, 3, dtype=torch.float64)
    tracer[..., 0] = 1.0
    k = torch.arange(tiles - 1)
    tracer[1:, :, 1] = ((k // cols_of_tiles) * h)[:, None] + (torch.arange(N) // w)[None]  # row in the padded big grid
    tracer[1:, :, 2] = ((k % cols_of_tiles) * w)[:, None] + (torch.arange(N) % w)[None]
    big = pack(tracer)[N:]
    is_token = big[:, 0] > 0.5
    tile = torch.full((big.shape[0],), -1, dtype=torch.int64)
    slot = torch.full((big.shape[0],), -1, dtype=torch.int64)
    if bool(is_token.any()):  # (unpadding may leave nothing of the grid tiles)
        width = int(is_token.sum()) // int((~is_token).sum())
        source = torch.ceil(big[is_token, 1:] - 0.5).long()  # the nearest source token
        owner = 1 + (source[:, 0] // h) * cols_of_tiles + source[:, 1] // w
        out_y = torch.arange(owner.numel()) // width
        out_x = torch.arange(owner.numel()) % width
        top = torch.zeros(tiles, dtype=torch.int64).scatter_reduce(0, owner, out_y, "amin", include_self=False)
        left = torch.zeros(tiles, dtype=torch.int64).scatter_reduce(0, owner, out_x, "amin", include_self=False)
        cy, cx = out_y - top[owner], out_x - left[owner]
        if bool((cy >= h).any() or (cx >= w).any()):
            raise RuntimeError("LLaVA-OneVision packing: a tile's share of the packed grid is larger than a tile")
        tile[is_token], slot[is_token] = owner, cy * w + cx
    return PackedRows(torch.cat([base_tile, tile]), torch.cat([base_slot, slot]))


def valid_slots(layouts: List[PackedRows], tiles: List[int], N: int) -> torch.Tensor:
    """Host bool [sum(tiles), N]: the canvas slots that hold a packed token (the methods' ``valid``)."""
    valid = torch.zeros(sum(tiles), N, dtype=torch.bool)
    first = 0
    for layout, t in zip(layouts, tiles):
        tokens = layout.is_token
        valid[first + layout.tile[tokens], layout.slot[tokens]] = True
        first += t
    return valid


def canvas(values: torch.Tensor, packed: List[torch.Tensor], layouts: List[PackedRows], tiles: List[int]) -> torch.Tensor:
    """[T, N, ...]: each tile's canvas of ``values`` [T, N, ...] as the model packs them (``packed``:
    per image its packed rows [L, ...]); zero where a slot holds no token."""
    out = values.new_zeros(values.shape)
    flat = out.view(-1, *values.shape[2:])
    N, first = values.shape[1], 0
    for rows, layout, t in zip(packed, layouts, tiles):
        tokens = layout.is_token.nonzero().flatten()
        target = (first + layout.tile[tokens]) * N + layout.slot[tokens]
        flat[from_host(target, values.device)] = rows[from_host(tokens, rows.device)]
        first += t
    return out


def resized(scores: Optional[torch.Tensor], features: Optional[torch.Tensor], resize):
    """(scores, features) resized as the model resizes its tokens: ``resize`` of one float32 stack
    [T, N, 1 + C] (scores first), split back; None stays None."""
    parts = [t for t in (None if scores is None else scores[..., None], features) if t is not None]
    if not parts:
        return None, None
    stacked = resize(torch.cat([p.float() for p in parts], -1))
    out_scores = stacked[..., 0] if scores is not None else None
    out_features = stacked[..., (1 if scores is not None else 0):] if features is not None else None
    return out_scores, out_features


def pooled_grid(grid: Tuple[int, int]) -> Tuple[int, int]:
    """A video frame's pooled grid (the model's ``apply_pooling``): ceil(h/2) x ceil(w/2)."""
    return math.ceil(grid[0] / 2), math.ceil(grid[1] / 2)
