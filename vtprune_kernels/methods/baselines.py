"""The baselines every pruning paper reports: Random (seeded) and Uniform (even spatial spread).

Both keep exactly min(keep, N) tokens per row and need no scores, only the grid. With ``valid``
(tokens that may be kept, e.g. what survives LLaVA-NeXT's unpadding), each row keeps
min(keep, its valid tokens), all among the valid ones: Random draws among them, Uniform spreads
over the row's valid rectangle as if it were the whole grid (``methods.valid_tokens``).
"""
from __future__ import annotations

import abc
import math
import threading
from typing import List, Optional, Sequence, Union

import torch

from .. import ops
from . import _checks, valid_tokens
from ._device import from_host
from .base import Captured, Needs, PruningMethod

Grid = Union[int, Sequence[int]]


class _ScoreFreeBaseline(PruningMethod):
    """A baseline that needs no scores: keep ``keep`` tokens chosen from the grid alone."""

    def __init__(self, keep: int):
        self.keep = _checks.keep(keep)

    def needs(self, has_cls: bool) -> Needs:
        return Needs(query_rows="none")

    def select(
        self,
        grid: Grid,
        batch_size: int = 1,
        *,
        device: Optional[Union[str, torch.device]] = None,
        valid: Optional[torch.Tensor] = None,
        backend: str = "auto",
    ) -> torch.Tensor:
        """bool [batch_size, N] keep mask with exactly min(keep, N) tokens per row, N = h*w
        (``grid`` is (h, w), or N for a 1-D sequence); with ``valid`` (bool [batch_size, N]), exactly
        min(keep, valid tokens of the row), all valid. ``backend`` is forwarded to the ops."""
        h, w = _checks.grid(grid)
        batch_size = _checks.count("batch_size", batch_size)
        valid = valid_tokens.check(valid, batch_size, h * w)
        return self._mask(h, w, batch_size, torch.device(device or "cpu"), _checks.backend(backend), valid)

    @abc.abstractmethod
    def _mask(
        self, h: int, w: int, batch_size: int, device: torch.device, backend: str, valid: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """bool [batch_size, h*w] on ``device``."""

    def select_captured(self, captured: Captured, *, backend: str = "auto") -> torch.Tensor:
        batch_size, device = captured.batch_and_device()
        return self.select(captured.grid, batch_size, device=device, valid=captured.valid, backend=backend)


class Random(_ScoreFreeBaseline):
    """Random(keep, seed=0): a uniformly random subset of min(keep, N) tokens per row.

    One CPU ``torch.Generator``, seeded with ``seed`` once when the object is made, draws
    ``torch.randperm(N)`` for every row of every call in turn: successive rows and calls (batches)
    get independent masks, and a new ``Random(keep, seed)`` replays the same sequence. The draw is
    made on the CPU, then moved, so every device gets the same masks. The tokens whose permutation
    value is among the ``keep`` largest are kept (``region_topk_mask`` with one region).
    """

    def __init__(self, keep: int, seed: int = 0):
        super().__init__(keep)
        self.seed = _checks.count("seed", seed)
        self._generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self._lock = threading.Lock()  # one draw at a time: rows of a call stay consecutive draws

    def __repr__(self):
        return f"Random(keep={self.keep}, seed={self.seed})"

    def __getstate__(self):
        """copy/deepcopy/pickle: the generator's position travels with the method (not the lock)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_generator", "_lock")}
        with self._lock:
            state["_generator_state"] = self._generator.get_state()
        return state

    def __setstate__(self, state):
        generator_state = state.pop("_generator_state")
        self.__dict__.update(state)
        self._generator = torch.Generator(device="cpu")
        self._generator.set_state(generator_state)
        self._lock = threading.Lock()

    def random_scores(self, n_tokens: int, batch_size: int) -> torch.Tensor:
        """float32 [B, N] on the CPU: the generator's next B random permutations of 0..N-1."""
        if n_tokens > 2**24:
            raise ValueError(f"Random supports at most 2**24 tokens per row (exact float32 ranks), got {n_tokens}")
        with self._lock:
            rows = [torch.randperm(n_tokens, generator=self._generator) for _ in range(batch_size)]
        return torch.stack(rows).float() if rows else torch.zeros(0, n_tokens)

    def _mask(self, h, w, batch_size, device, backend, valid):
        n_tokens = h * w
        scores = from_host(self.random_scores(n_tokens, batch_size), device)  # drawn on the CPU; no host sync
        if valid is None:
            region_ids = torch.zeros(n_tokens, dtype=torch.int64, device=device)
            k = torch.full((batch_size, 1), min(self.keep, n_tokens), dtype=torch.int64, device=device)
        else:  # the permutation's best among the valid tokens; the others form a region keeping none
            valid = valid_tokens.on_device(valid, device)
            region_ids, k = valid_tokens.valid_and_invalid_regions(valid, valid_tokens.row_budget(valid, self.keep))
        return ops.region_topk_mask(
            scores,
            region_ids,
            k,
            backend=backend,
            validate=False,  # min(keep, region size) fits the region by construction
        )


def _spread(n: int, k: int) -> List[int]:
    """k of 0..n-1 evenly spread: floor((i + 0.5) * n / k), i = 0..k-1 (exact integer arithmetic)."""
    return [((2 * i + 1) * n) // (2 * k) for i in range(k)]


class Uniform(_ScoreFreeBaseline):
    """Uniform(keep): min(keep, N) tokens spread evenly over the (h, w) grid, the same for every row.

    Rule (K = min(keep, N)): use a = floor(sqrt(K * h / w) + 0.5) rows, clamped to
    [ceil(K / w), min(h, K)]; row band i (i = 0..a-1) gets n_i = floor((i+1)K/a) - floor(iK/a)
    tokens; the rows are _spread(h, a) and row i's columns are _spread(w, n_i), where
    _spread(n, k) = floor((j + 0.5) * n / k), j = 0..k-1. For a square grid and K = s*s this is
    the regular s x s sub-grid (stride n/s, offset floor(n/(2s)) when s divides n).
    A fixed pattern: no op runs, ``backend`` is only checked (common method interface). With
    ``valid``, row b uses the pattern of its valid rectangle's own (height, width) grid.
    """

    def __repr__(self):
        return f"Uniform(keep={self.keep})"

    def kept_indices(self, grid: Grid) -> List[int]:
        """Raster indices of the kept cells, ascending."""
        h, w = _checks.grid(grid)
        k = min(self.keep, h * w)
        if k == 0:
            return []
        rows = math.floor(math.sqrt(k * h / w) + 0.5)
        rows = max(-(-k // w), min(rows, h, k))
        per_row = [(i + 1) * k // rows - i * k // rows for i in range(rows)]
        return [y * w + x for y, n in zip(_spread(h, rows), per_row) for x in _spread(w, n)]

    def _mask(self, h, w, batch_size, device, backend, valid):
        if valid is None:
            row = torch.zeros(h * w, dtype=torch.bool)
            row[torch.tensor(self.kept_indices((h, w)), dtype=torch.int64)] = True
            return from_host(row.expand(batch_size, -1).contiguous(), device)  # no host sync
        # the pattern of the valid rectangle's own grid, placed on the rectangle (host work)
        mask = torch.zeros(batch_size, h * w, dtype=torch.bool)
        for b, rect in enumerate(valid_tokens.rectangles(valid, (h, w))):
            if rect is not None:
                cells = valid_tokens.rectangle_cells(rect, w)
                mask[b, cells[torch.tensor(self.kept_indices(rect[2:]), dtype=torch.int64)]] = True
        return from_host(mask, device)
