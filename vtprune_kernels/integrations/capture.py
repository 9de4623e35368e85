"""Attention scores of vision layers from captured queries and keys (no attention maps).

Forward hooks on the modules that emit a layer's query and key (``VisionTower.query_module`` /
``key_module``) receive q and k [B, S, H*D] while the tower keeps its own attention
implementation (SDPA, flash, ...). As soon as both of a layer's q and k exist, they are turned into
scores with ``vtprune_kernels.ops.attention_scores`` and dropped, so no layer's q/k outlives its
layer; scores of several layers are accumulated as a running sum.

The op computes its own softmax normaliser (``lse=None``): the towers' SDPA/flash calls do not
expose their log-sum-exp through transformers, and for [CLS] rows the normaliser is one row.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional, Sequence

import torch

from .. import ops
from .vision_runner import VisionTower


class VisionScoreCapture:
    """Context manager: while active, layers ``layers`` of ``tower`` add their scores to ``self.scores``.

    query_rows: ``"cls"`` -> head-mean attention of the [CLS] query row (row 0) over all S keys;
        ``"all"`` -> head-mean attention received by each key, averaged over all S query rows.
    Result (``scores()``): float32 [B, S] averaged over the layers (S = tokens including [CLS]).
    Hooks fire only in the thread that entered the context.
    """

    def __init__(self, tower: VisionTower, layers: Sequence[int], query_rows: str, *, backend: str = "auto"):
        if query_rows not in ("cls", "all"):
            raise ValueError(f"query_rows must be 'cls' or 'all', got {query_rows!r}")
        if query_rows == "cls" and not tower.has_cls:
            raise ValueError("query_rows='cls' needs a tower with a [CLS] token")
        bad = [i for i in layers if not 0 <= i < tower.num_layers]
        if bad:
            raise ValueError(f"vision layers {bad} do not exist in a {tower.num_layers}-layer tower")
        self.tower = tower
        self.layers = tuple(sorted(set(int(i) for i in layers)))
        self.query_rows = query_rows
        self.backend = backend
        self._pending: Dict[int, Dict[str, torch.Tensor]] = {}
        self._sum: Optional[torch.Tensor] = None
        self._count = 0
        self._handles: List = []
        self._owner: Optional[int] = None

    def __enter__(self):
        self._owner = threading.get_ident()
        for layer in self.layers:
            self._handles.append(self.tower.query_module(layer).register_forward_hook(self._hook(layer, "q")))
            self._handles.append(self.tower.key_module(layer).register_forward_hook(self._hook(layer, "k")))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._pending.clear()
        return False

    def _hook(self, layer: int, which: str):
        def hook(module, args, output):
            if threading.get_ident() != self._owner:
                return
            heads = output.detach().unflatten(-1, (self.tower.num_heads, self.tower.head_dim)).transpose(1, 2)
            slot = self._pending.setdefault(layer, {})
            slot[which] = heads  # [B, H, S, D]
            if "q" in slot and "k" in slot:
                del self._pending[layer]
                self._add(slot["q"], slot["k"])

        return hook

    def _add(self, q: torch.Tensor, k: torch.Tensor):
        if self.query_rows == "cls":
            q = q[:, :, :1]
        s = ops.attention_scores(q, k, scale=self.tower.scale, query_reduce="mean", head_reduce="mean", backend=self.backend)
        self._sum = s if self._sum is None else self._sum + s
        self._count += 1

    def scores(self) -> torch.Tensor:
        """float32 [B, S]: the scores averaged over the captured layers."""
        if self._count != len(self.layers):
            raise RuntimeError(f"captured {self._count} of {len(self.layers)} layers: the tower stopped before a needed layer")
        return self._sum / self._count
