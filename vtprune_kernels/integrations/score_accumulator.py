"""Running sum of attention scores over layers, from (q, k, lse) however they were obtained.

``ScoreAccumulator`` knows nothing about models: a transformers attention function
(``attention_capture``), a vLLM hook or a test hands it one layer's queries and keys (and the row
log-sum-exp when the attention kernel produced it); it reduces them at once with
``ops.attention_scores`` (one pass over the keys with ``lse``, two without) and keeps only a
float32 [B, N] running sum, so no layer's q/k outlives its layer.

Calls are grouped by ``chunk``: a tower that attends once per layer adds everything to chunk 0; a
packed tower that attends once per image (Qwen2.5-VL's per-``cu_seqlens`` calls) adds image i's
calls to chunk i, each with its own N.
"""
from __future__ import annotations

from typing import Dict, Hashable, List, Optional

import torch

from .. import ops


class ScoreAccumulator:
    """Sum over ``add`` calls of head-mean attention scores, per chunk.

    query_rows: ``"cls"`` -> attention of query row ``cls_row`` ([CLS]: 0, or -1 for a tower that
        appends it) over the keys; ``"all"`` -> attention received by each key, averaged over all query rows.
    reuse_lse: pass the given ``lse`` on to the op (one pass); False ignores it (two passes; for
        comparisons).
    backend: forwarded to ``ops.attention_scores``.
    """

    def __init__(self, query_rows: str, *, reuse_lse: bool = True, backend: str = "auto", cls_row: int = 0):
        if query_rows not in ("cls", "all"):
            raise ValueError(f"query_rows must be 'cls' or 'all', got {query_rows!r}")
        if cls_row not in (0, -1):
            raise ValueError(f"cls_row must be 0 (first token) or -1 (last token), got {cls_row!r}")
        self.query_rows = query_rows
        self.cls_row = cls_row
        self.reuse_lse = reuse_lse
        self.backend = backend
        self._sums: Dict[Hashable, torch.Tensor] = {}
        self._counts: Dict[Hashable, int] = {}
        self.adds_with_lse = 0  # adds whose normaliser came from the model's attention (one pass)

    def add(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        *,
        scale: Optional[float] = None,
        lse: Optional[torch.Tensor] = None,
        chunk: Hashable = 0,
    ) -> None:
        """Add one layer's scores to ``chunk``: q [B, Hq, M, D], k [B, Hk, N, D] (as the attention
        received them), lse float32 [B, Hq, M] (natural log, over all N keys) or None, scale the
        attention's softmax scale (None: D**-0.5)."""
        if self.query_rows == "cls":
            rows = slice(0, 1) if self.cls_row == 0 else slice(-1, None)
            q = q[:, :, rows]
            lse = None if lse is None else lse[:, :, rows]
        if not self.reuse_lse:
            lse = None
        s = ops.attention_scores(
            q.detach(), k.detach(), scale=scale, query_reduce="mean", head_reduce="mean", lse=lse, backend=self.backend
        )
        self._sums[chunk] = s if chunk not in self._sums else self._sums[chunk] + s
        self._counts[chunk] = self._counts.get(chunk, 0) + 1
        self.adds_with_lse += lse is not None

    @property
    def chunks(self) -> List[Hashable]:
        """The chunks added to, in the order of their first add."""
        return list(self._sums)

    def count(self, chunk: Hashable = 0) -> int:
        """Number of adds to ``chunk``."""
        return self._counts.get(chunk, 0)

    def mean(self, chunk: Hashable = 0) -> torch.Tensor:
        """float32 [B, N]: the scores of ``chunk`` averaged over its adds."""
        if chunk not in self._sums:
            raise RuntimeError(f"no scores were added to chunk {chunk!r}")
        return self._sums[chunk] / self._counts[chunk]
