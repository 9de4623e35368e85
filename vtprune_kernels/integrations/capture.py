"""Attention scores of vision layers, captured inside the tower's own attention (no attention maps).

``VisionScoreCapture`` = ``attention_capture.AttentionCapture`` on the tower's attention modules
of the scored layers + a ``score_accumulator.ScoreAccumulator``. While it is active the model's
vision sub-config selects the ``"vtprune_capture"`` attention function, which runs the attention
the model would have run (same kernel, same output) and also obtains the row log-sum-exp where
that kernel computes it (SDPA's flash kernel on the CPU, SDPA's flash / memory-efficient kernels
on CUDA, flash_attn's ``softmax_lse``). Each scored layer's (q, k, lse) goes at once to
``ops.attention_scores(..., lse=lse)``, which then makes ONE pass over the keys (no normaliser
pass), and is dropped: only a float32 [B, S] running sum outlives the layer. Where no kernel gives
the LSE (eager attention, a mask, SDPA's math kernel, ...) the op gets ``lse=None`` and computes
the normaliser itself (two passes); the scores are the same either way.

q/k are those the attention receives: after any q/k norm (InternViT) and, for towers that apply
a rotary embedding inside the attention module, after it. The vision config's attention
implementation is restored exactly on exit; calls from other threads, and of other layers, only
run the model's attention.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .attention_capture import AttentionCall, AttentionCapture
from .score_accumulator import ScoreAccumulator
from .vision_runner import VisionTower


class VisionScoreCapture:
    """Context manager: while active, layers ``layers`` of ``tower`` add their scores to the capture.

    query_rows: ``"cls"`` -> head-mean attention of the [CLS] query row (row ``tower.cls_row``) over all S keys;
        ``"all"`` -> head-mean attention received by each key, averaged over all S query rows.
    reuse_lse: use the tower's log-sum-exp when its kernel gives one (one pass); False always
        recomputes the normaliser (two passes; for comparisons).
    Result (``scores()``): float32 [B, S] averaged over the layers (S = tokens including [CLS]).
    Packed towers whose layers call their attention once per ``cu_seqlens`` segment (Qwen2.5-VL /
    Qwen3-VL full-attention blocks): ``chunk_scores()``, one float32 [1, S_c] per segment; the
    captured layers must then all split the sequence the same way.
    segments: for towers that attend ONCE over several images packed into one sequence with a
        block-diagonal mask (Pixtral), the images' token counts: each call's q/k are cut into these
        segments and each segment is scored alone (its queries over its keys: exactly the masked
        attention), segment i going to chunk i of ``chunk_scores()``.
    row_lengths: for towers that attend over batches of images padded at the END with a key mask
        (Gemma 4), the number of real tokens of every row the tower will see, over all its calls in
        call order (a tower run in several batches: vLLM): the r-th row's first ``row_lengths[r]``
        queries and keys are scored alone (exactly the masked attention of its real tokens), going to
        chunk r.
    ``layers_with_lse``: how many captured attention calls reused the tower's log-sum-exp.
    Captures only calls made in the thread that entered the context.
    """

    def __init__(
        self,
        tower: VisionTower,
        layers: Sequence[int],
        query_rows: str,
        *,
        backend: str = "auto",
        reuse_lse: bool = True,
        segments: Optional[Sequence[int]] = None,
        row_lengths: Optional[Sequence[int]] = None,
    ):
        if query_rows == "cls" and not tower.has_cls:
            raise ValueError("query_rows='cls' needs a tower with a [CLS] token")
        bad = [i for i in layers if not 0 <= i < tower.num_layers]
        if bad:
            raise ValueError(f"vision layers {bad} do not exist in a {tower.num_layers}-layer tower")
        self.tower = tower
        self.layers = tuple(sorted(set(int(i) for i in layers)))
        self.segments = None if segments is None else [int(n) for n in segments]
        self.row_lengths = None if row_lengths is None else [int(n) for n in row_lengths]
        self._rows_seen = {}  # layer -> rows scored so far (row_lengths)
        self.accumulator = ScoreAccumulator(query_rows, reuse_lse=reuse_lse, backend=backend, cls_row=tower.cls_row)
        self._capture = AttentionCapture({i: tower.attention_module(i) for i in self.layers}, self._add)

    def __enter__(self):
        self._capture.__enter__()
        return self

    def __exit__(self, *exc):
        return self._capture.__exit__(*exc)

    def _add(self, call: AttentionCall):
        if self.row_lengths is not None:
            first = self._rows_seen.get(call.layer, 0)
            rows = call.query.shape[0]
            if first + rows > len(self.row_lengths):
                raise RuntimeError(f"layer {call.layer} attended over more rows than row_lengths holds ({len(self.row_lengths)})")
            for b in range(rows):  # a masked attention gives no lse: the op computes it
                n = self.row_lengths[first + b]
                self.accumulator.add(call.query[b : b + 1, :, :n], call.key[b : b + 1, :, :n], scale=call.scale, chunk=first + b)
            self._rows_seen[call.layer] = first + rows
            return
        if self.segments is None:
            self.accumulator.add(call.query, call.key, scale=call.scale, lse=call.lse, chunk=call.chunk)
            return
        lengths = (call.query.shape[2], call.key.shape[2])
        if lengths != (sum(self.segments),) * 2:
            raise RuntimeError(
                f"layer {call.layer} attended over {lengths} (query, key) tokens, the segments hold {sum(self.segments)}"
            )
        start = 0
        for i, n in enumerate(self.segments):
            # masked keys of other segments add exactly 0 to a row's log-sum-exp: the slice is the segment's own
            lse = None if call.lse is None else call.lse[:, :, start : start + n]
            q, k = call.query[:, :, start : start + n], call.key[:, :, start : start + n]
            self.accumulator.add(q, k, scale=call.scale, lse=lse, chunk=i)
            start += n

    @property
    def layers_with_lse(self) -> int:
        return self.accumulator.adds_with_lse

    def chunk_scores(self) -> List[torch.Tensor]:
        """Per chunk c (the c-th attention call of every captured layer), float32 [B, S_c]
        averaged over the layers."""
        chunks = self.accumulator.chunks
        short = [c for c in chunks if self.accumulator.count(c) != len(self.layers)]
        if not chunks or short:
            raise RuntimeError(
                f"captured {self.accumulator.count(short[0] if short else 0)} of {len(self.layers)} layers"
                + (f" in chunk {short[0]}" if short else "")
                + ": the tower stopped before a needed layer, or its layers split the sequence differently"
            )
        return [self.accumulator.mean(c) for c in chunks]

    def scores(self) -> torch.Tensor:
        """float32 [B, S]: the scores averaged over the captured layers (one attention call per layer)."""
        chunks = self.chunk_scores()
        if len(chunks) != 1:
            raise RuntimeError(f"the captured layers attended in {len(chunks)} chunks: use chunk_scores()")
        return chunks[0]
