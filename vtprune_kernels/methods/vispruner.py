"""VisPruner: important tokens by [CLS] attention, then diverse tokens by cosine de-duplication.

Published algorithm (DESIGN.md section 3, NOTES.md "published code's behaviour"), with T = min(keep, N):
1. T_imp = floor(T * important_ratio) tokens with the highest score (one region of
   ``region_topk_mask``). The score is the head-mean [CLS]->patch attention of the feature layer
   ([CLS] column dropped, not renormalised); towers without [CLS] use received attention.
2. T_div = T - T_imp tokens among the rest by ``cosine_dedup_mask``: the residual ranked by score
   (descending), rounds of r = min(step, |R| - T_div) drops of even-position tokens whose best
   cosine match among the odd-position ones is highest; survivors first, then the odd ones.

``layer`` (0-based vision layer) overrides the scored layer; None (the default) is the layer whose
output the model uses as features (on Qwen2.5-VL the last full-attention layer, which is its last
layer in every released checkpoint; its windowed layers never see the whole image).

Ties follow the contract (higher wins, equal -> lower index, NaN last), where the published code
uses unstable sorts. Where the published code crashes, this is defined: an odd residual size
gives the even positions one token more (a lone token with no odd partner has similarity -inf),
keep >= N keeps every token, keep = 0 keeps none, keep = 1 keeps the one diverse token left by
de-duplication. Every row keeps exactly min(keep, N) tokens.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .. import ops
from . import _checks
from .base import Captured, Needs, PruningMethod


class VisPruner(PruningMethod):
    """VisPruner(keep, important_ratio=0.5, step=8, layer=None): keep ``keep`` tokens per image (per
    tile, per video frame); ``layer``: the scored vision layer (None: the feature layer)."""

    def __init__(self, keep: int, important_ratio: float = 0.5, step: int = 8, layer: Optional[int] = None):
        self.keep = _checks.count("keep", keep)
        self.important_ratio = _checks.fraction("important_ratio", important_ratio)
        self.step = _checks.count("step", step, 1)
        self.layer = None if layer is None else _checks.count("layer", layer)

    def __repr__(self):
        layer = "" if self.layer is None else f", layer={self.layer}"
        return f"VisPruner(keep={self.keep}, important_ratio={self.important_ratio}, step={self.step}{layer})"

    def budgets(self, n_tokens: int) -> Tuple[int, int]:
        """(T_imp, T_div) for rows of ``n_tokens``: T = min(keep, N), T_imp = floor(T * ratio)
        (Python float product, as the published ``int(T * ratio)``), T_div = T - T_imp."""
        total = min(self.keep, n_tokens)
        important = math.floor(total * self.important_ratio)
        return important, total - important

    def needs(self, has_cls: bool) -> Needs:
        layers = None if self.layer is None else (self.layer,)
        return Needs(vision_layers=layers, query_rows="cls" if has_cls else "all", features=True)

    def select(self, cls_attn: torch.Tensor, features: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
        """bool [B, N] keep mask with exactly min(keep, N) tokens per row.

        cls_attn float [B, N]: [CLS]->patch attention, head mean, [CLS] column dropped (or the
        received attention on towers without [CLS]). features [B, N, C]: the feature layer's
        output tokens. ``backend`` is forwarded to the ops.
        """
        _checks.float_tensor("cls_attn", cls_attn, 2)
        _checks.float_tensor("features", features, 3)
        _checks.backend(backend)
        B, N = cls_attn.shape
        if tuple(features.shape[:2]) != (B, N):
            raise ValueError(
                f"features must have shape [B={B}, N={N}, C] to match cls_attn, got {tuple(features.shape)}"
            )
        if features.device != cls_attn.device:
            raise ValueError(f"features is on {features.device} but cls_attn is on {cls_attn.device}")
        n_important, n_diverse = self.budgets(N)
        device = cls_attn.device
        one_region = torch.zeros(N, dtype=torch.int64, device=device)
        important = ops.region_topk_mask(
            cls_attn,
            one_region,
            torch.full((B, 1), n_important, dtype=torch.int64, device=device),
            backend=backend,
            validate=False,  # n_important <= N by construction
        )
        diverse = ops.cosine_dedup_mask(
            features,
            ~important,
            cls_attn,
            torch.full((B,), n_diverse, dtype=torch.int64, device=device),
            self.step,
            backend=backend,
            validate=False,  # n_diverse >= 0 by construction
        )
        return important | diverse

    def select_captured(self, captured: Captured, *, backend: str = "auto") -> torch.Tensor:
        """Uses ``cls_attn`` when the integration filled it, else ``received`` (towers without [CLS])."""
        (features,) = captured.require("features")
        if captured.cls_attn is not None:
            scores = captured.cls_attn
        elif captured.received is not None:
            scores = captured.received
        else:
            raise ValueError("captured scores lack both cls_attn and received: VisPruner needs one of them")
        return self.select(scores, features, backend=backend)
