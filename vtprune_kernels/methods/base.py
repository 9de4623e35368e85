"""What a pruning method asks the integration for (``Needs``) and what it gets back (``Captured``).

A method declares its needs; an integration captures exactly that from the model (q/k at the
named vision layers, the feature layer's output, an LLM probe) and calls
``method.select_captured(captured)``, which forwards to the method's own ``select(...)``.
A serving engine that computes scores its own way calls ``select(...)`` directly.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Optional, Tuple

import torch


@dataclasses.dataclass(frozen=True)
class Needs:
    """Captures a method needs from the model.

    vision_layers: 0-based vision encoder layers whose attention is scored (negative: counted from
        the end, -1 = the last layer); ``None`` lets the integration pick them by ``default_layers``.
    default_layers: the layers ``vision_layers=None`` stands for: ``"feature"``, the layer whose
        output the model uses as image features (LLaVA's ``vision_feature_layer``; on Qwen2.5-VL,
        whose windowed layers do not see the whole image, the last full-attention layer), or
        ``"middle"``, HIVTP's middle layers (0-based 6..9 on towers that attend globally in every
        layer; the middle full-attention layers on Qwen2.5-VL).
    query_rows: ``"cls"`` for the [CLS] query row only, ``"all"`` for attention received from every
        row (mean over rows, [CLS] row included), ``"none"`` for no attention at all (baselines).
    features: the feature layer's output tokens (before the projector), [B, N, C].
    cls_embedding: each tile's [CLS] output token at the feature layer (PTP region scores).
    llm_probe_layer: LLM block index whose instruction->visual attention is scored (PTP), or None.
    instruction: which prompt tokens are the probe's instruction queries: ``"text"`` (the user's
        instruction: after the image end marker, before the first end-of-turn token) or
        ``"after_image"`` (everything after the last image placeholder).
    Layer indices may be negative, counted from the end as Python does (-1: the last layer); the
    integration resolves them against the model.
    vision_layers_arg / llm_probe_layer_arg: the method's constructor argument that set those
        layers (``"layers"``, ``"vision_layer"``, ...), named when a layer does not exist in the
        model; not part of equality.
    """

    vision_layers: Optional[Tuple[int, ...]] = None
    default_layers: str = "feature"
    query_rows: str = "cls"
    features: bool = False
    cls_embedding: bool = False
    llm_probe_layer: Optional[int] = None
    instruction: str = "text"
    vision_layers_arg: str = dataclasses.field(default="vision_layers", compare=False)
    llm_probe_layer_arg: str = dataclasses.field(default="llm_layer", compare=False)

    def __post_init__(self):
        if self.query_rows not in ("cls", "all", "none"):
            raise ValueError(f"query_rows must be 'cls', 'all' or 'none', got {self.query_rows!r}")
        if self.default_layers not in ("feature", "middle"):
            raise ValueError(f"default_layers must be 'feature' or 'middle', got {self.default_layers!r}")
        if self.instruction not in ("text", "after_image"):
            raise ValueError(f"instruction must be 'text' or 'after_image', got {self.instruction!r}")


@dataclasses.dataclass
class Captured:
    """Scores and features captured for a batch of B images (or B tiles of one image).

    grid: (h, w) token grid of one image/tile, N = h * w, [CLS] already dropped.
    cls_attn: float32 [B, N], head-mean [CLS]->patch attention (probabilities over all keys, the
        [CLS] column dropped, not renormalised).
    received: float32 [B, N], attention received from all rows, averaged over the needed layers,
        heads and rows, [CLS] column dropped.
    features: [B, N, C] feature-layer output tokens.
    cls_regions: [S, C] per-tile [CLS] tokens, thumbnail last (PTP, one image).
    b_scores, c_scores: float32 [S, T] per-tile token and instruction scores (PTP, one image).
    batch_size, device: B and the device of the batch, for methods that capture no tensor (Random,
        Uniform); when left None they are read from any tensor field that is filled.
    valid: bool [B, N] or None: the tokens the method may keep (None: all). LLaVA-NeXT passes the
        tokens that survive the model's unpadding (per tile one rectangle of the grid, on the host);
        budgets count valid tokens only (``methods.valid_tokens``).
    """

    grid: Tuple[int, int]
    cls_attn: Optional[torch.Tensor] = None
    received: Optional[torch.Tensor] = None
    features: Optional[torch.Tensor] = None
    cls_regions: Optional[torch.Tensor] = None
    b_scores: Optional[torch.Tensor] = None
    c_scores: Optional[torch.Tensor] = None
    batch_size: Optional[int] = None
    device: Optional[torch.device] = None
    valid: Optional[torch.Tensor] = None

    def require(self, *names: str):
        """Return the named fields, raising a clear error for any the integration did not fill."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"captured scores lack {missing}: the integration did not capture what the method needs")
        return tuple(getattr(self, n) for n in names)

    def batch_and_device(self) -> Tuple[int, torch.device]:
        """(B, device) from ``batch_size``/``device``, else from the first filled tensor field."""
        tensors = [t for t in (self.cls_attn, self.received, self.features) if t is not None]
        batch = self.batch_size if self.batch_size is not None else (tensors[0].shape[0] if tensors else None)
        if batch is None:
            raise ValueError("captured scores lack batch_size (and no [B, ...] tensor to read it from)")
        device = self.device if self.device is not None else (tensors[0].device if tensors else torch.device("cpu"))
        return int(batch), torch.device(device)


class PruningMethod(abc.ABC):
    """A pruning method: what it needs captured, and ``select_captured`` turning captures into a
    keep mask. Each subclass also has its own ``select(...)`` taking the scores directly."""

    @abc.abstractmethod
    def needs(self, has_cls: bool) -> Needs:
        """What to capture from a vision tower with (``has_cls=True``) or without a [CLS] token."""

    @abc.abstractmethod
    def select_captured(self, captured: Captured) -> torch.Tensor:
        """bool keep mask from the captures (forwards the needed fields to ``select``)."""
