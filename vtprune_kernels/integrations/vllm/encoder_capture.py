"""Scores from vLLM's own vision attention: q/k captured by a hook on its ``MMEncoderAttention``.

vLLM's vision towers (CLIP, SigLIP, InternViT, Qwen2-VL's, Qwen2.5-VL's, Qwen3-VL's) compute q, k, v and call
one attention module per layer, ``MMEncoderAttention(query, key, value, ...)``, with q and k
[B, S, H_local*D] (or [B, S, H_local, D]; Qwen-VL: after its rotary embedding). A forward pre-hook on that module
sees them while the tower keeps vLLM's own attention backend; ``ScoreAccumulator`` (shared with the
transformers capture) turns them into scores with ``ops.attention_scores`` at once; nothing else of
the tower is touched, and the hook exists only during one encoder call. vLLM's encoder attention
does not return its log-sum-exp, so the op computes the normaliser itself (``lse=None``; for a
[CLS] row that is one row).

Packed towers (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) run every image of a batch as one sequence [1, S] and attend inside
segments of it (``cu_seqlens``: one per frame in full-attention blocks, one per window in the
others). The capture is then given each scored layer's segment lengths (host data, derived from
the image grids, so the device's ``cu_seqlens`` is never read) and scores each segment on its
own: a token's score is the attention it receives inside its segment, as the model computes it.

Padded towers (MiniCPM-V's Idefics2 tower) run a batch of units of different sizes as rows [B, S]
padded at the end, with a key mask; masked, that tower attends through SDPA instead of
``MMEncoderAttention``, so its layout hooks the fused q/k/v projection's output instead
(``EncoderLayout.qkv_output``), and the capture is given each scored layer's real row lengths
(``row_lengths``): each row's real queries and keys are scored alone, exactly the masked attention.

Tensor parallelism: a tower sharded over the tensor-parallel group gives each rank H/tp of the
heads (``H_local < H``). Each rank's head mean covers its heads only; the capture all-reduces
(sum) the [B, S] scores over the group and scales by H_local / H, which is the mean over all H
heads, identical on every rank. A tower run data-parallel (``mm_encoder_tp_mode="data"``) or not
sharded (InternViT's attention) holds every head: no communication.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..score_accumulator import ScoreAccumulator


@dataclasses.dataclass(frozen=True)
class EncoderLayout:
    """Where a vLLM vision tower's attention lives.

    attention(i): layer i's ``MMEncoderAttention`` module. num_layers: layers instantiated (vLLM
    builds LLaVA towers only up to the feature layer). local_heads / total_heads: heads this rank
    computes / the model's heads. has_cls: the sequence holds a [CLS] token, first or, with
    ``cls_last`` (Llama 4), last. local_kv_heads: the key heads of a grouped-query tower (EXAONE 4.5).
    qkv_output: ``attention(i)`` is layer i's fused q/k/v projection (vLLM's ``QKVParallelLinear``), whose
    output [B, S, 3 * H_local * D] is hooked instead (a tower that bypasses ``MMEncoderAttention``).
    """

    attention: Callable[[int], nn.Module]
    num_layers: int
    local_heads: int
    total_heads: int
    head_dim: int
    scale: float
    has_cls: bool
    cls_last: bool = False
    local_kv_heads: Optional[int] = None  # key heads this rank computes, when fewer than its query heads (GQA)
    qkv_output: bool = False


def describe_encoder(tower: nn.Module) -> EncoderLayout:
    """The layout of vLLM's CLIPVisionModel, SiglipVisionModel, Siglip2Model (LFM2-VL), InternS1VisionModel (InternViT), InternVisionModel
    (InternViT of original-format InternVL),
    Idefics2VisionTransformer (Idefics3, SmolVLM), PixtralHFVisionModel (Mistral 3), Llama4VisionModel,
    Qwen2VisionTransformer, Qwen2_5_VisionTransformer, Qwen3_VisionTransformer, Qwen3Omni_VisionTransformer,
    Glm4vVisionTransformer or
    GlmOcrVisionTransformer (the Qwen-VL and GLM-4V towers share one attention layout), or PaddleOCR-VL's
    SiglipVisionModel (its own class)."""
    name = type(tower).__name__
    if name in (
        "Qwen2VisionTransformer", "Qwen2_5_VisionTransformer", "Qwen3_VisionTransformer", "Qwen3Omni_VisionTransformer",
        "Glm4vVisionTransformer", "GlmOcrVisionTransformer",
    ):
        first = tower.blocks[0].attn
        return EncoderLayout(
            attention=lambda i: tower.blocks[i].attn.attn,
            num_layers=len(tower.blocks),
            local_heads=int(first.num_attention_heads_per_partition),
            total_heads=int(tower.num_heads),
            head_dim=int(first.hidden_size_per_attention_head),
            scale=float(first.attn.scale),
            has_cls=False,
        )
    if name == "EXAONE4_5_VisionTransformer":  # Qwen2.5-VL's layout with grouped-query attention
        first = tower.blocks[0].attn
        return EncoderLayout(
            attention=lambda i: tower.blocks[i].attn.attn,
            num_layers=len(tower.blocks),
            local_heads=int(first.num_heads),
            total_heads=int(first.total_num_heads),
            head_dim=int(first.head_dim),
            scale=float(first.attn.scale),
            has_cls=False,
            local_kv_heads=int(first.num_kv_heads),
        )
    if name == "SiglipVisionModel" and type(tower).__module__.endswith(".paddleocr_vl"):  # PaddleOCR-VL's NaViT (not SigLIP's)
        layers = tower.vision_model.encoder.layers
        first = layers[0].self_attn
        return EncoderLayout(
            attention=lambda i: layers[i].self_attn.attn,
            num_layers=len(layers),
            local_heads=int(first.num_attention_heads_per_partition),
            total_heads=int(tower.vision_model.config.num_attention_heads),
            head_dim=int(first.hidden_size_per_attention_head),
            scale=float(first.attn.scale),
            has_cls=False,
        )
    if name == "PixtralHFVisionModel":  # Mistral 3's tower: a batch's images packed in one sequence
        first = tower.transformer.layers[0].attention
        return EncoderLayout(
            attention=lambda i: tower.transformer.layers[i].attention.attn,
            num_layers=len(tower.transformer.layers),
            local_heads=int(first.n_heads),
            total_heads=int(first.total_num_heads),
            head_dim=int(first.head_dim),
            scale=float(first.attn.scale),
            has_cls=False,
        )
    if name == "InternVisionModel":  # InternViT of original-format InternVL checkpoints (InternVLChatModel)
        first = tower.encoder.layers[0].attn
        if first.dummy_dim != first.num_heads * first.head_dim:
            raise ValueError(
                f"vtprune: this InternViT pads {first.num_heads} heads with dummy heads to split them over the "
                "tensor-parallel ranks; their (empty) attention would enter the head mean: serve with a tensor-parallel "
                "size that divides the vision heads"
            )
        return EncoderLayout(
            attention=lambda i: tower.encoder.layers[i].attn.attn,
            num_layers=len(tower.encoder.layers),
            local_heads=int(first.num_heads_per_partition),
            total_heads=int(first.num_heads),
            head_dim=int(first.head_dim),
            scale=float(first.scale),
            has_cls=True,
        )
    if name == "Llama4VisionModel":  # Llama 4: the [CLS] token is appended after the patches
        first = tower.model.layers[0].self_attn
        return EncoderLayout(
            attention=lambda i: tower.model.layers[i].self_attn.attn,
            num_layers=len(tower.model.layers),
            local_heads=int(first.num_local_heads),
            total_heads=int(first.num_heads),
            head_dim=int(first.head_dim),
            scale=float(first.scaling),
            has_cls=True,
            cls_last=True,
        )
    if name in ("CLIPVisionModel", "SiglipVisionModel"):
        layers = [layer.self_attn for layer in tower.vision_model.encoder.layers]
    elif name == "InternS1VisionModel":
        layers = [layer.attention for layer in tower.encoder.layer]
    elif name == "Siglip2Model":  # LFM2-VL's SigLIP2 NaFlex tower (tiles packed in one sequence: segments)
        layers = [layer.self_attn for layer in tower.vision_model.encoder.layers]
    elif name == "Idefics2VisionTransformer":  # Idefics3's and SmolVLM's tower (no encoder mask: MMEncoderAttention)
        layers = [layer.self_attn for layer in tower.encoder.layers]
    else:
        raise ValueError(
            f"vtprune: unsupported vLLM vision tower {name} (supported: CLIPVisionModel, SiglipVisionModel, "
            "InternS1VisionModel, InternVisionModel, Idefics2VisionTransformer, Siglip2Model, PixtralHFVisionModel, Llama4VisionModel, "
            "Qwen2VisionTransformer, Qwen2_5_VisionTransformer, EXAONE4_5_VisionTransformer, "
            "Qwen3_VisionTransformer, Glm4vVisionTransformer, GlmOcrVisionTransformer)"
        )
    first = layers[0]
    return EncoderLayout(
        attention=lambda i: layers[i].attn,
        num_layers=len(layers),
        local_heads=int(first.attn.num_heads),
        total_heads=int(first.num_heads),
        head_dim=int(first.head_dim),
        scale=float(first.scale),
        has_cls=name in ("CLIPVisionModel", "InternS1VisionModel"),
    )


def _heads(x: torch.Tensor, layout: EncoderLayout, heads: Optional[int] = None) -> torch.Tensor:
    """[B, S, H*D] or [B, S, H, D] -> [B, H, S, D] (a view); ``heads``: H when not the query heads."""
    if x.dim() == 3:
        x = x.unflatten(-1, (heads or layout.local_heads, layout.head_dim))
    return x.transpose(1, 2)


class EncoderScoreCapture:
    """Context manager: during one encoder call, layers ``layers`` add their scores.

    query_rows: "cls" (the [CLS] row's attention) or "all" (attention received, mean over rows).
    segments: None (each layer attends over its whole [B, S] input), or per scored layer the
        lengths of the consecutive segments of S it attends inside (packed towers, B = 1).
    row_lengths: None, or the real length of each of the B rows every scored layer attends over
        (padded towers: rows padded at the end, a key mask).
    ``scores()``: float32 [B, S], mean over the layers and over ALL heads of the model (all-reduced
    over the tensor-parallel group when this rank holds a slice of the heads); with ``row_lengths``,
    S = the longest row, 0 past each row's length.
    """

    def __init__(
        self,
        layout: EncoderLayout,
        layers: Sequence[int],
        query_rows: str,
        *,
        segments: Optional[Dict[int, Sequence[int]]] = None,
        row_lengths: Optional[Sequence[int]] = None,
        backend: str = "auto",
    ):
        bad = [i for i in layers if not 0 <= i < layout.num_layers]
        if bad:
            raise ValueError(f"vision layers {bad} are not in this {layout.num_layers}-layer tower")
        self.layout = layout
        self.layers = tuple(sorted(set(int(i) for i in layers)))
        if segments is not None and any(i not in segments for i in self.layers):
            raise ValueError(f"segments must be given for every scored layer {self.layers}")
        if row_lengths is not None and segments is not None:
            raise ValueError("segments (packed towers) and row_lengths (padded towers) exclude each other")
        self.segments = None if segments is None else {i: [int(n) for n in segments[i]] for i in self.layers}
        self.row_lengths = None if row_lengths is None else [int(n) for n in row_lengths]
        self._scores = ScoreAccumulator(query_rows, backend=backend, cls_row=-1 if layout.cls_last else 0)
        self._handles: List = []

    def __enter__(self):
        for i in self.layers:
            module = self.layout.attention(i)
            if self.layout.qkv_output:
                handle = module.register_forward_hook(functools.partial(self._qkv_hook, i))
            else:
                handle = module.register_forward_pre_hook(functools.partial(self._hook, i), with_kwargs=True)
            self._handles.append(handle)
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def _hook(self, layer, module, args, kwargs):
        query = kwargs["query"] if "query" in kwargs else args[0]
        key = kwargs["key"] if "key" in kwargs else args[1]
        self._add(layer, query, key)

    def _qkv_hook(self, layer, module, args, output):
        qkv = output[0] if isinstance(output, tuple) else output  # [B, S, 3 * H_local * D] (and the bias)
        query, key, _ = qkv.chunk(3, dim=-1)
        self._add(layer, query, key)

    def _add(self, layer: int, query: torch.Tensor, key: torch.Tensor) -> None:
        q, k = _heads(query, self.layout), _heads(key, self.layout, self.layout.local_kv_heads)
        if self.row_lengths is not None:
            if len(self.row_lengths) != q.shape[0] or max(self.row_lengths) > q.shape[2]:
                raise RuntimeError(
                    f"vision layer {layer} attends over {q.shape[0]} rows of {q.shape[2]} tokens, row_lengths are {self.row_lengths}"
                )
            for b, n in enumerate(self.row_lengths):
                self._scores.add(q[b : b + 1, :, :n], k[b : b + 1, :, :n], scale=self.layout.scale, chunk=(layer, b))
            return
        if self.segments is None:
            self._scores.add(q, k, scale=self.layout.scale)
            return
        lengths = self.segments[layer]
        if sum(lengths) != q.shape[2]:
            raise RuntimeError(f"vision layer {layer} attends over {q.shape[2]} tokens, its segments cover {sum(lengths)}")
        start = 0
        for j, n in enumerate(lengths):
            end = start + n
            self._scores.add(q[:, :, start:end], k[:, :, start:end], scale=self.layout.scale, chunk=(layer, j))
            start = end

    def scores(self) -> torch.Tensor:
        if self.row_lengths is not None:
            self._check_chunks(len(self.row_lengths) * len(self.layers))
            width = max(self.row_lengths)
            per_layer = [
                torch.cat([nn.functional.pad(self._scores.mean((i, b)), (0, width - n)) for b, n in enumerate(self.row_lengths)])
                for i in self.layers
            ]
            scores = torch.stack(per_layer).mean(0)
        elif self.segments is None:
            if self._scores.count() != len(self.layers):
                raise RuntimeError(f"captured {self._scores.count()} of {len(self.layers)} vision layers")
            scores = self._scores.mean()
        else:
            self._check_chunks(sum(len(self.segments[i]) for i in self.layers))
            per_layer = [
                torch.cat([self._scores.mean((i, j)) for j in range(len(self.segments[i]))], dim=-1) for i in self.layers
            ]
            scores = torch.stack(per_layer).mean(0)
        if self.layout.local_heads != self.layout.total_heads:
            from vllm.distributed import tensor_model_parallel_all_reduce

            scores = tensor_model_parallel_all_reduce(scores) * (self.layout.local_heads / self.layout.total_heads)
        return scores

    def _check_chunks(self, expected: int) -> None:
        """Every (layer, segment or row) chunk captured exactly once."""
        if len(self._scores.chunks) != expected or any(self._scores.count(c) != 1 for c in self._scores.chunks):
            raise RuntimeError(f"captured {len(self._scores.chunks)} of {expected} attention segments of vision layers {self.layers}")
