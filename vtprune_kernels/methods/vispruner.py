"""VisPruner: important tokens by [CLS] attention, then diverse tokens by cosine de-duplication.

Published algorithm (Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for
Effective Token Pruning in VLMs", arXiv:2412.01818; docs/methods/vispruner.md), with T = min(keep, N)
(N = the row's valid tokens when the integration passes ``valid``, e.g. LLaVA-NeXT's unpadding):
1. T_imp = floor(T * important_ratio) tokens with the highest score (one region of
   ``region_topk_mask``). The score is the head-mean [CLS]->patch attention of the scored layer
   ([CLS] column dropped, not renormalised); towers without [CLS] use received attention (mean over
   every query row). The scored layer is ``score_layer``: by default (None) the feature layer, whose
   output the model uses, as the paper does on CLIP; the published SigLIP code scores the last
   layer's received attention whatever the feature layer: ``score_layer=-1``. On Qwen2.5-VL,
   whose windowed layers never see the whole image, the default is the last full-attention layer
   (its last layer in every released checkpoint).
2. T_div = T - T_imp tokens among the rest by ``cosine_dedup_mask``: the residual ranked by score
   (descending), rounds of r = min(step, |R| - T_div) drops of even-position tokens whose best
   cosine match among the odd-position ones is highest; survivors first, then the odd ones.

Ties follow the contract (higher wins, equal -> lower index, NaN last), where the published code
uses unstable sorts. Where the published code crashes, this is defined: an odd residual size
gives the even positions one token more (a lone token with no odd partner has similarity -inf),
keep >= N keeps every token, keep = 1 keeps the one diverse token left by de-duplication.
Every row keeps exactly min(keep, N) tokens; keep must be >= 1 (the integration needs at least one
placeholder per image; the op ``cosine_dedup_mask`` itself accepts n_keep = 0). With ``valid``, the selection equals
VisPruner on the row's valid tokens alone (same order, same ties), mapped back.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .. import ops
from . import _checks, valid_tokens
from .base import Captured, Needs, PruningMethod


class VisPruner(PruningMethod):
    """VisPruner(keep, important_ratio=0.5, step=8, score_layer=None): keep ``keep`` tokens per image (per
    tile; per image and per video frame on Qwen-VL).

    score_layer: the 0-based vision layer whose attention gives the importance score; None (default)
        = the feature layer (``vision_feature_layer``); negative counts from the end (-1: the last
        layer, as the published code does on towers without [CLS]). The diverse stage always uses
        the feature layer's output tokens.
    """

    STAGES = ("important", "diverse")

    def __init__(self, keep: int, important_ratio: float = 0.5, step: int = 8, score_layer: Optional[int] = None):
        self.keep = _checks.keep(keep)
        self.important_ratio = _checks.fraction("important_ratio", important_ratio)
        self.step = _checks.count("step", step, 1)
        self.score_layer = None if score_layer is None else _checks.integer("score_layer", score_layer)

    def __repr__(self):
        layer = "" if self.score_layer is None else f", score_layer={self.score_layer}"
        return f"VisPruner(keep={self.keep}, important_ratio={self.important_ratio}, step={self.step}{layer})"

    def budgets(self, n_tokens: int) -> Tuple[int, int]:
        """(T_imp, T_div) for rows of ``n_tokens``: T = min(keep, N), T_imp = floor(T * ratio)
        (Python float product, as the published ``int(T * ratio)``), T_div = T - T_imp."""
        total = min(self.keep, n_tokens)
        important = math.floor(total * self.important_ratio)
        return important, total - important

    def needs(self, has_cls: bool) -> Needs:
        layers = None if self.score_layer is None else (self.score_layer,)
        return Needs(
            vision_layers=layers, query_rows="cls" if has_cls else "all", features=True, vision_layers_arg="score_layer"
        )

    def select(
        self,
        cls_attn: torch.Tensor,
        features: torch.Tensor,
        *,
        valid: Optional[torch.Tensor] = None,
        backend: str = "auto",
    ) -> torch.Tensor:
        """bool [B, N] keep mask with exactly min(keep, N) tokens per row (min(keep, valid tokens)
        with ``valid``).

        cls_attn float [B, N]: [CLS]->patch attention, head mean, [CLS] column dropped (or the
        received attention on towers without [CLS]). features [B, N, C]: the feature layer's
        output tokens. valid: optional bool [B, N] (CPU or the scores' device), the tokens that may
        be kept. ``backend`` is forwarded to the ops.
        """
        important, diverse = self.select_stages(cls_attn, features, valid=valid, backend=backend)
        return important | diverse

    def select_stages(
        self,
        cls_attn: torch.Tensor,
        features: torch.Tensor,
        *,
        valid: Optional[torch.Tensor] = None,
        backend: str = "auto",
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(important, diverse): the two disjoint bool [B, N] masks whose union ``select`` returns
        (names in ``STAGES``). Arguments as ``select``."""
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
        valid = valid_tokens.check(valid, B, N)
        device = cls_attn.device
        if valid is None:
            n_important, n_diverse = self.budgets(N)
            region_ids = torch.zeros(N, dtype=torch.int64, device=device)
            k_important = torch.full((B, 1), n_important, dtype=torch.int64, device=device)
            n_diverse = torch.full((B,), n_diverse, dtype=torch.int64, device=device)
        else:
            # per row on the device (no host sync): T = min(keep, valid), T_imp = floor(T * ratio) in
            # float64, the same IEEE product as the Python float one in ``budgets``
            valid = valid_tokens.on_device(valid, device)
            total = valid_tokens.row_budget(valid, self.keep)
            n_important = torch.floor(total.double() * self.important_ratio).long()
            region_ids, k_important = valid_tokens.valid_and_invalid_regions(valid, n_important)
            n_diverse = total - n_important
        important = ops.region_topk_mask(
            cls_attn,
            region_ids,
            k_important,
            backend=backend,
            validate=False,  # T_imp <= valid tokens <= N by construction
        )
        rest = ~important if valid is None else valid & ~important
        diverse = ops.cosine_dedup_mask(
            features,
            rest,
            cls_attn,
            n_diverse,
            self.step,
            backend=backend,
            validate=False,  # 0 <= T_div <= |rest| by construction
        )
        return important, diverse

    def select_captured(self, captured: Captured, *, backend: str = "auto") -> torch.Tensor:
        """Uses ``cls_attn`` when the integration filled it, else ``received`` (towers without [CLS])."""
        return self.select(*self._captured_inputs(captured), valid=captured.valid, backend=backend)

    def select_captured_stages(self, captured: Captured, *, backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
        """``select_stages`` on the captures (what ``select_captured`` unites)."""
        return self.select_stages(*self._captured_inputs(captured), valid=captured.valid, backend=backend)

    @staticmethod
    def _captured_inputs(captured: Captured) -> Tuple[torch.Tensor, torch.Tensor]:
        (features,) = captured.require("features")
        if captured.cls_attn is not None:
            return captured.cls_attn, features
        if captured.received is not None:
            return captured.received, features
        raise ValueError("captured scores lack both cls_attn and received: VisPruner needs one of them")
