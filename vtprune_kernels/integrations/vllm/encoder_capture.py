"""Scores from vLLM's own vision attention: q/k captured by a hook on its ``MMEncoderAttention``.

vLLM's vision towers (CLIP, SigLIP, InternViT) compute q, k, v and call one attention module per
layer, ``MMEncoderAttention(query, key, value)``, with q and k [B, S, H_local*D] (or
[B, S, H_local, D]). A forward pre-hook on that module sees them while the tower keeps vLLM's own
attention backend; ``ScoreAccumulator`` (shared with the transformers capture) turns them into
scores with ``ops.attention_scores`` at once; nothing else of the tower is touched, and the hook
exists only during one encoder call. vLLM's encoder attention does not return its log-sum-exp, so
the op computes the normaliser itself (``lse=None``; for a [CLS] row that is one row).

Tensor parallelism: a tower sharded over the tensor-parallel group gives each rank H/tp of the
heads (``H_local < H``). Each rank's head mean covers its heads only; the capture all-reduces
(sum) the [B, S] scores over the group and scales by H_local / H, which is the mean over all H
heads, identical on every rank. A tower run data-parallel (``mm_encoder_tp_mode="data"``) or not
sharded (InternViT's attention) holds every head: no communication.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Sequence

import torch
from torch import nn

from ..score_accumulator import ScoreAccumulator


@dataclasses.dataclass(frozen=True)
class EncoderLayout:
    """Where a vLLM vision tower's attention lives.

    attention(i): layer i's ``MMEncoderAttention`` module. num_layers: layers instantiated (vLLM
    builds LLaVA towers only up to the feature layer). local_heads / total_heads: heads this rank
    computes / the model's heads. has_cls: the sequence starts with a [CLS] token.
    """

    attention: Callable[[int], nn.Module]
    num_layers: int
    local_heads: int
    total_heads: int
    head_dim: int
    scale: float
    has_cls: bool


def describe_encoder(tower: nn.Module) -> EncoderLayout:
    """The layout of vLLM's CLIPVisionModel, SiglipVisionModel or InternS1VisionModel (InternViT)."""
    name = type(tower).__name__
    if name in ("CLIPVisionModel", "SiglipVisionModel"):
        layers = [layer.self_attn for layer in tower.vision_model.encoder.layers]
    elif name == "InternS1VisionModel":
        layers = [layer.attention for layer in tower.encoder.layer]
    else:
        raise ValueError(
            f"vtprune: unsupported vLLM vision tower {name} (supported: CLIPVisionModel, SiglipVisionModel, InternS1VisionModel)"
        )
    first = layers[0]
    return EncoderLayout(
        attention=lambda i: layers[i].attn,
        num_layers=len(layers),
        local_heads=int(first.attn.num_heads),
        total_heads=int(first.num_heads),
        head_dim=int(first.head_dim),
        scale=float(first.scale),
        has_cls=name != "SiglipVisionModel",
    )


def _heads(x: torch.Tensor, layout: EncoderLayout) -> torch.Tensor:
    """[B, S, H*D] or [B, S, H, D] -> [B, H, S, D] (a view)."""
    if x.dim() == 3:
        x = x.unflatten(-1, (layout.local_heads, layout.head_dim))
    return x.transpose(1, 2)


class EncoderScoreCapture:
    """Context manager: during one encoder call, layers ``layers`` add their scores.

    query_rows: "cls" (the [CLS] row's attention) or "all" (attention received, mean over rows).
    ``scores()``: float32 [B, S], mean over the layers and over ALL heads of the model (all-reduced
    over the tensor-parallel group when this rank holds a slice of the heads).
    """

    def __init__(self, layout: EncoderLayout, layers: Sequence[int], query_rows: str, *, backend: str = "auto"):
        bad = [i for i in layers if not 0 <= i < layout.num_layers]
        if bad:
            raise ValueError(f"vision layers {bad} are not in this {layout.num_layers}-layer tower")
        self.layout = layout
        self.layers = tuple(sorted(set(int(i) for i in layers)))
        self._scores = ScoreAccumulator(query_rows, backend=backend)
        self._handles: List = []

    def __enter__(self):
        for i in self.layers:
            self._handles.append(self.layout.attention(i).register_forward_pre_hook(self._hook))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def _hook(self, module, args):
        query, key = args[0], args[1]
        self._scores.add(_heads(query, self.layout), _heads(key, self.layout), scale=self.layout.scale)

    def scores(self) -> torch.Tensor:
        if self._scores.count() != len(self.layers):
            raise RuntimeError(f"captured {self._scores.count()} of {len(self.layers)} vision layers")
        scores = self._scores.mean()
        if self.layout.local_heads != self.layout.total_heads:
            from vllm.distributed import tensor_model_parallel_all_reduce

            scores = tensor_model_parallel_all_reduce(scores) * (self.layout.local_heads / self.layout.total_heads)
        return scores
