"""HIVTP: per-region top tokens by received attention, then the best remaining cell of every window.

Paper: "HIVTP: A Training-Free Method to Improve VLMs Efficiency via Hierarchical Visual Token
Pruning Using Middle-Layer-Based Importance Score", arXiv:2509.23663 (docs/methods/hivtp.md).

Score: attention received from all query rows ([CLS] row included), averaged over ``layers``
(0-based). Departure from the released code, on purpose: the default follows the paper's layers
7..10 counted from 1, i.e. 0-based 6..9; the released code averages 0-based 6..8
(``HIVTP(layers=(6, 7, 8))`` reproduces it). Heads and rows are averaged, [CLS] column dropped.
``layers=None`` (the default) leaves the choice to the integration (``Needs.default_layers="middle"``):
6..9 on towers whose every layer attends over the whole image (CLIP, SigLIP, InternViT, Qwen3-VL);
on Qwen2.5-VL, whose other layers attend inside 112 px windows, the middle one or two of its
full-attention layers (15 and 23 of 7, 15, 23, 31): received attention only means what the paper
means where the attention spans the image.

Selection on an h x w grid (any h, w; no divisibility needed):
1. Regions: region_grid x region_grid blocks with row boundaries floor(i*h/r) and column
   boundaries floor(j*w/r), i, j = 0..r; region id = row band * r + column band (raster).
   Keep floor(region_ratio * region size) best tokens per region (``region_topk_mask``).
2. Windows: non-overlapping window x window windows from the top-left (edge windows partial);
   each marks its best cell not kept in stage 1 (``window_argmax_mask``).
The count varies per image: sum of the region budgets plus the windows not fully kept by stage 1.
``count_bounds(grid)`` states the range.

With ``valid`` (LLaVA-NeXT: the tokens of a tile that survive the model's unpadding, one rectangle
per tile), both stages run on that rectangle as a grid of its own: regions split the rectangle,
windows tile it from its top-left corner, and no token outside it is kept.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from .. import ops
from . import _checks, valid_tokens
from ._device import from_host
from .base import Captured, Needs, PruningMethod


PAPER_LAYERS = (6, 7, 8, 9)  # the paper's layers 7..10 counted from 1: ``layers=None`` on towers that attend globally


def _bands(n: int, parts: int) -> List[int]:
    """Band index of each of n positions, boundaries at floor(i*n/parts)."""
    bounds = [i * n // parts for i in range(parts + 1)]
    return [band for band in range(parts) for _ in range(bounds[band], bounds[band + 1])]


@functools.lru_cache(maxsize=64)
def _region_layout(h: int, w: int, parts: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(region id of every cell in raster order, size of every region)."""
    rows, cols = _bands(h, parts), _bands(w, parts)
    ids = tuple(rows[y] * parts + cols[x] for y in range(h) for x in range(w))
    sizes = [0] * (parts * parts)
    for r in ids:
        sizes[r] += 1
    return ids, tuple(sizes)


def _max_windows_with_a_free_cell(windows: List[Dict[int, int]], free: List[int]) -> int:
    """Most windows that can each get one distinct non-kept cell: a bipartite b-matching of
    windows to the regions they touch, region r holding ``free[r]`` non-kept cells (augmenting
    paths, Kuhn's algorithm with capacities)."""
    assigned: List[List[int]] = [[] for _ in free]

    def place(win: int, seen: set) -> bool:
        for region in windows[win]:
            if region in seen:
                continue
            seen.add(region)
            if len(assigned[region]) < free[region]:
                assigned[region].append(win)
                return True
            for i, other in enumerate(assigned[region]):
                if place(other, seen):
                    assigned[region][i] = win
                    return True
        return False

    return sum(place(win, set()) for win in range(len(windows)))


class HIVTP(PruningMethod):
    """HIVTP(region_grid=2, region_ratio=0.25, window=2, layers=None); layers=None: the model's middle
    layers (see the module doc; (6, 7, 8, 9) on towers that attend globally in every layer). Given
    layers are 0-based; negative ones count from the last layer (-1), resolved against the tower."""

    STAGES = ("regional", "local")

    def __init__(
        self,
        region_grid: int = 2,
        region_ratio: float = 0.25,
        window: Union[int, Sequence[int]] = 2,
        layers: Optional[Sequence[int]] = None,
    ):
        self.region_grid = _checks.count("region_grid", region_grid, 1)
        self.region_ratio = _checks.fraction("region_ratio", region_ratio)
        self.window = _checks.window(window)
        if layers is not None and (isinstance(layers, int) or len(layers) == 0):
            raise ValueError(f"layers must be None or a non-empty sequence of 0-based layer indices, got {layers!r}")
        self.layers = None if layers is None else tuple(_checks.integer("layers", layer) for layer in layers)

    def __repr__(self):
        return (
            f"HIVTP(region_grid={self.region_grid}, region_ratio={self.region_ratio}, "
            f"window={self.window}, layers={self.layers})"
        )

    def needs(self, has_cls: bool) -> Needs:
        return Needs(vision_layers=self.layers, default_layers="middle", query_rows="all", vision_layers_arg="layers")

    def region_ids(self, grid: Tuple[int, int]) -> torch.Tensor:
        """int64 [h*w]: the region of every cell (raster order)."""
        h, w = _checks.grid(grid)
        return torch.tensor(_region_layout(h, w, self.region_grid)[0], dtype=torch.int64)

    def region_budgets(self, grid: Tuple[int, int]) -> List[int]:
        """Tokens kept per region in stage 1: floor(region_ratio * size) (Python float product,
        as the published ``int(size * ratio)``)."""
        h, w = _checks.grid(grid)
        return [math.floor(self.region_ratio * size) for size in _region_layout(h, w, self.region_grid)[1]]

    def count_bounds(self, grid: Tuple[int, int]) -> Tuple[int, int]:
        """(lo, hi): every image on this grid keeps between lo and hi tokens.

        count = K + (windows with a cell not kept in stage 1), K = sum of region budgets.
        hi is exact (attained by some scores): K + the most windows that can each hold a distinct
        non-kept cell. lo = K + windows - (most windows stage 1 could fill), where a window costs
        its cells in the region holding most of it; exact when no window straddles a region
        boundary (e.g. 24x24 or 16x16 with 2x2 regions and 2x2 windows), a valid bound otherwise.
        """
        h, w = _checks.grid(grid)
        ids, sizes = _region_layout(h, w, self.region_grid)
        budgets = self.region_budgets((h, w))
        wh, ww = self.window
        windows: List[Dict[int, int]] = []
        for y0 in range(0, h, wh):
            for x0 in range(0, w, ww):
                parts: Dict[int, int] = {}
                for y in range(y0, min(y0 + wh, h)):
                    for x in range(x0, min(x0 + ww, w)):
                        parts[ids[y * w + x]] = parts.get(ids[y * w + x], 0) + 1
                windows.append(parts)
        kept = sum(budgets)
        hi = kept + _max_windows_with_a_free_cell(windows, [s - k for s, k in zip(sizes, budgets)])
        # most windows stage 1 could fill: each window charged to its main region, cheapest first
        costs: List[List[int]] = [[] for _ in sizes]
        for parts in windows:
            main = max(sorted(parts), key=lambda r: parts[r])
            costs[main].append(parts[main])
        filled = 0
        for region, region_costs in enumerate(costs):
            left = budgets[region]
            for cost in sorted(region_costs):
                if cost > left:
                    break
                left -= cost
                filled += 1
        return kept + len(windows) - filled, hi

    def select(
        self,
        received: torch.Tensor,
        grid: Tuple[int, int],
        *,
        valid: Optional[torch.Tensor] = None,
        backend: str = "auto",
    ) -> torch.Tensor:
        """bool [B, h*w] keep mask; the count per row is ``mask.sum(1)`` (see ``count_bounds``).

        received float [B, h*w]: attention received per patch ([CLS] column dropped), row-major
        over the (h, w) grid. valid: optional bool [B, h*w], each row's valid tokens one rectangle
        of the grid (read on the host); HIVTP then runs on each row's rectangle. ``backend`` is
        forwarded to the ops.
        """
        _checks.float_tensor("received", received, 2)
        _checks.backend(backend)
        h, w = _checks.grid(grid)
        B, N = received.shape
        if h * w != N:
            raise ValueError(f"grid {(h, w)} has {h * w} cells but received has N={N} tokens per row")
        device = received.device
        if valid_tokens.check(valid, B, N) is not None:
            return valid_tokens.on_rectangles(
                valid,
                (h, w),
                device,
                lambda rows, cells, sub_grid: self.select(received[rows][:, cells], sub_grid, backend=backend),
            )
        regional = self._regional(received, (h, w), backend)
        local = ops.window_argmax_mask(
            received.reshape(B, h, w), regional.reshape(B, h, w), self.window, backend=backend
        ).reshape(B, N)
        return regional | local

    def select_stages(
        self,
        received: torch.Tensor,
        grid: Tuple[int, int],
        *,
        valid: Optional[torch.Tensor] = None,
        backend: str = "auto",
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(regional, local): the disjoint bool [B, h*w] masks of stage 1 (per-region top tokens)
        and stage 2 (one token per window) whose union ``select`` returns (names in ``STAGES``)."""
        keep = self.select(received, grid, valid=valid, backend=backend)
        h, w = _checks.grid(grid)
        if valid is None:
            regional = self._regional(received, (h, w), backend)
        else:  # stage 1 again on each row's rectangle (one region_topk_mask; the selection is not redone)
            regional = valid_tokens.on_rectangles(
                valid, (h, w), received.device,
                lambda rows, cells, sub_grid: self._regional(received[rows][:, cells], sub_grid, backend),
            )
        return regional, keep & ~regional

    def _regional(self, received: torch.Tensor, grid: Tuple[int, int], backend: str) -> torch.Tensor:
        """Stage 1: bool [B, h*w], the floor(region_ratio * size) best tokens of every region."""
        device = received.device
        # host-built constants of the grid, copied without a host sync (pinned, non-blocking)
        region_ids = from_host(self.region_ids(grid), device)
        budgets = from_host(torch.tensor(self.region_budgets(grid), dtype=torch.int64), device)
        return ops.region_topk_mask(
            received,
            region_ids,
            budgets.expand(received.shape[0], -1).contiguous(),
            backend=backend,
            validate=False,  # ids in range and budgets <= region sizes by construction
        )

    def select_captured(self, captured: Captured, *, backend: str = "auto") -> torch.Tensor:
        (received,) = captured.require("received")
        return self.select(received, captured.grid, valid=captured.valid, backend=backend)

    def select_captured_stages(self, captured: Captured, *, backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
        """``select_stages`` on the captures (what ``select_captured`` unites)."""
        (received,) = captured.require("received")
        return self.select_stages(received, captured.grid, valid=captured.valid, backend=backend)
