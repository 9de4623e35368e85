"""Received-attention scores from vision attention modules that rotate q/k inside (Qwen-VL towers).

Qwen-VL's vision attention projects q, k, v with one fused ``qkv`` layer and applies its 2-D rotary
embedding inside ``forward``, so no submodule ever outputs the q/k the attention uses: projection
hooks cannot see them. What does see them is the attention function: the module looks it up by
name in transformers' ``AttentionInterface`` (``config._attn_implementation``) and calls it with
q/k/v [1, H, L, D] after the rotary embedding, once per attention segment ("chunk": a frame in the
full-attention blocks, a window in Qwen2.5-VL's windowed blocks; one varlen call with
``cu_seq_lens_q`` under flash attention).

``ChunkScoreCapture(modules)`` registers ONE named function, ``"vtprune_chunk_scores"``, once, and
for the duration of the context only, gives each listed attention module a shallow copy of its
config naming that function (put back on exit; a module is captured by one context at a time).
The function returns exactly what the model's own attention implementation returns (it calls it),
and, when the call comes from the capturing thread, appends for every chunk the attention each of
its keys receives, averaged over the chunk's rows and the heads (``ops.attention_scores``,
``query_reduce="mean"``, ``head_reduce="mean"``). A chunk's keys are exactly its rows, so the
per-chunk scores concatenated in call order give one float32 score per token of the sequence, in
the order the layer saw it. Any other call that reaches the function (another thread running the
same model during the capture) only gets the model's own attention.

Interim: the package's general capture (an attention function for the vision config that also
reuses the model's log-sum-exp) is being built separately; this one computes the normaliser itself
(``lse=None``) and is meant to fold into it.
"""
from __future__ import annotations

import copy
import sys
import threading
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from .. import ops

CHUNK_SCORES_ATTENTION = "vtprune_chunk_scores"

_ACTIVE: Dict[Tuple[int, int], Tuple[List[torch.Tensor], str]] = {}  # (thread, id(module)) -> (chunk scores, backend)
_OWN_CONFIG: Dict[int, object] = {}  # id(attention module) -> its own config while captured
_LOCK = threading.Lock()


def _own_attention(module):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    own = _OWN_CONFIG[id(module)]._attn_implementation
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    return ALL_ATTENTION_FUNCTIONS.get_interface(own, eager)


def _chunk_scores_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    out = _own_attention(module)(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    active = _ACTIVE.get((threading.get_ident(), id(module)))
    if active is not None:
        chunks, backend = active
        bounds = kwargs.get("cu_seq_lens_q")
        if bounds is None:
            pieces = [(query, key)]
        else:
            lengths = (bounds[1:] - bounds[:-1]).tolist()
            pieces = zip(query.split(lengths, dim=2), key.split(lengths, dim=2))
        for q, k in pieces:
            s = ops.attention_scores(q.detach(), k.detach(), scale=scaling, query_reduce="mean", head_reduce="mean", backend=backend)
            chunks.append(s.reshape(-1))
    return out


def _register_once():
    from transformers import AttentionInterface

    if CHUNK_SCORES_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(CHUNK_SCORES_ATTENTION, _chunk_scores_attention)


_register_once()


class ChunkScoreCapture:
    """Context manager: while active, ``modules`` (attention modules calling the attention
    interface) record per-token received attention; ``scores()`` gives one float32 [S] per module
    (in the order given), the sequence order the module saw."""

    def __init__(self, modules: Sequence[nn.Module], *, backend: str = "auto"):
        self.modules = list(modules)
        self.backend = backend
        self._chunks: List[List[torch.Tensor]] = [[] for _ in self.modules]
        self._entered: List[nn.Module] = []

    def __enter__(self):
        tid = threading.get_ident()
        try:
            for module, chunks in zip(self.modules, self._chunks):
                with _LOCK:
                    if id(module) in _OWN_CONFIG:
                        raise RuntimeError(f"{type(module).__name__} is already being captured (one capture per module at a time)")
                    own = module.config
                    capturing = copy.copy(own)
                    capturing._attn_implementation_internal = CHUNK_SCORES_ATTENTION
                    _OWN_CONFIG[id(module)] = own
                    _ACTIVE[(tid, id(module))] = (chunks, self.backend)
                    module.config = capturing
                    self._entered.append(module)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        tid = threading.get_ident()
        with _LOCK:
            for module in self._entered:
                module.config = _OWN_CONFIG.pop(id(module))
                _ACTIVE.pop((tid, id(module)), None)
            self._entered.clear()
        return False

    def scores(self) -> List[torch.Tensor]:
        """Per module, float32 [S]: the received attention of every token it attended over."""
        missing = [i for i, chunks in enumerate(self._chunks) if not chunks]
        if missing:
            raise RuntimeError(f"captured no attention call of {len(missing)} scored module(s): the tower did not reach them")
        return [torch.cat(chunks) for chunks in self._chunks]
