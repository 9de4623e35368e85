"""Capture the queries, keys and row log-sum-exp of chosen attention modules, inside their attention.

One attention function, ``"vtprune_capture"``, is registered in transformers' ``AttentionInterface``
once, at import, with a mask function of the same name in ``AttentionMaskInterface`` (transformers
builds attention masks by implementation name: a switched config gets the mask of its own
implementation, so padded towers and probed language models keep their masks); registering
selects it for nothing. ``AttentionCapture(modules, sink)`` selects it
only for the configs those attention modules read (for a vision tower: the model's vision
sub-config), only while the context is active, and puts the config's own implementation back
exactly on exit (the raw ``_attn_implementation_internal`` value, None included). Concurrent
captures of modules sharing a config count references: the last one out restores it.

Every call that reaches the function runs the model's own attention
(``lse_attention.attention_with_lse``: the same kernel with the same arguments, so outputs are
bit for bit those without the capture). A call of a captured module made in the thread that
entered the capture also hands an ``AttentionCall`` (q, k, lse, scale, layer, chunk) to ``sink``;
every other call (other layers sharing the config, other threads running the same model, other
models sharing the config object) only runs the model's attention. Two models in one process are
therefore independent, and a capture sees only its own thread's calls.

``chunk`` counts the calls of one layer since the capture began: 0 for towers that attend once per
layer. Packed towers that call their attention once per ``cu_seqlens`` chunk (Qwen2.5-VL /
Qwen3-VL vision blocks under any non-flash implementation, which this function is) give chunk
0, 1, ... in ``cu_seqlens`` order within one layer's forward; with several tower forwards inside
one capture the count continues (call i of a layer with c chunks is chunk i, forward i // c).

Capturing another tower: any attention module whose forward looks its function up with
``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, ...)`` and calls it as
``fn(self, q, k, v, mask, scaling=..., ...)`` with q/k/v [B, H, S, D] works unchanged (CLIP,
SigLIP, InternViT, DINOv2, Qwen-VL vision blocks): pass ``{layer: module}`` and a
sink. Packed towers: a full-attention block's chunk c is the c-th ``cu_seqlens`` segment (an
image, or a frame of a video); its keys are in the packed order the block sees (Qwen2.5-VL:
window-permuted, back to raster order with ``argsort(window_index)`` restricted to that segment).
Windowed blocks give one chunk per window. Sinks typically forward to
``ScoreAccumulator.add(call.query, call.key, scale=call.scale, lse=call.lse, chunk=call.chunk)``.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from .lse_attention import attention_with_lse, check_implementation

CAPTURE_ATTENTION = "vtprune_capture"


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """One call of a captured attention module.

    layer: the key the module was given under in ``AttentionCapture(modules, ...)``.
    chunk: the index of this call among that layer's calls since the capture began.
    query: [B, H, M, D], key: [B, Hk, N, D], exactly as the attention received them (after any
        q/k norm and rotary embedding), detached.
    lse: float32 [B, H, M], natural log of sum_j exp(scale * q_i . k_j) over the N keys, from the
        model's own attention kernel, detached; None when that kernel gives none.
    scale: the softmax scale the model passed (None: the kernel's default, D**-0.5).
    """

    layer: int
    chunk: int
    query: torch.Tensor
    key: torch.Tensor
    lse: Optional[torch.Tensor]
    scale: Optional[float]


@dataclasses.dataclass
class _Switch:
    """A config switched to the capture function: its own raw implementation and how many captures use it."""

    config: object
    own: Optional[str]
    users: int


_LOCK = threading.Lock()
_SWITCHED: Dict[int, _Switch] = {}  # id(config) -> switch
_ROUTES: Dict[Tuple[int, int], Tuple["AttentionCapture", int]] = {}  # (thread id, id(module)) -> (capture, layer)


def _own_implementation(module: nn.Module) -> Optional[str]:
    switch = _SWITCHED.get(id(module.config))
    # no switch: the config has already been restored (restoring happens before the switch is dropped)
    return module.config._attn_implementation if switch is None else switch.own


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    route = _ROUTES.get((threading.get_ident(), id(module)))
    implementation = _own_implementation(module)
    out, weights, lse = attention_with_lse(
        module, query, key, value, attention_mask, implementation, want_lse=route is not None, **kwargs
    )
    if route is not None:
        capture, layer = route
        capture._deliver(layer, query, key, lse, kwargs.get("scaling"))
    return out, weights


def _capture_mask(*args, config=None, **kwargs):
    """The attention mask transformers' ``masking_utils`` builds for a config switched to the capture: the
    one the config's own implementation gets (masks are built by implementation name, and an
    unregistered name would get none: a padded tower, or a probed language model, would lose its mask)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    switch = _SWITCHED.get(id(config)) if config is not None else None
    own = switch.own if switch is not None else None
    if own not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping or own == CAPTURE_ATTENTION:
        return None  # what masking_utils gives an implementation without a mask function
    return ALL_MASK_ATTENTION_FUNCTIONS[own](*args, config=config, **kwargs)


def _register_once():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if CAPTURE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(CAPTURE_ATTENTION, _capture_attention)
    if CAPTURE_ATTENTION not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(CAPTURE_ATTENTION, _capture_mask)


_register_once()


class AttentionCapture:
    """Context manager: while active, the calls of ``modules`` in the entering thread go to ``sink``.

    modules: layer key -> attention module (one whose forward calls
        ``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, ...)``).
    sink: called with an ``AttentionCall`` after each captured call (in the model's forward).
    Raises ValueError on entry for implementations that cannot be captured exactly
    (``lse_attention.check_implementation``), RuntimeError if a module is already captured in this thread.
    """

    def __init__(self, modules: Mapping[int, nn.Module], sink: Callable[[AttentionCall], None]):
        self.modules = dict(modules)
        self.sink = sink
        self._calls: Dict[int, int] = {}
        self._owner: Optional[int] = None
        self._configs: Dict[int, object] = {}

    def __enter__(self):
        owner = threading.get_ident()
        with _LOCK:
            configs = {id(m.config): m.config for m in self.modules.values()}
            for config in configs.values():
                if id(config) not in _SWITCHED:
                    check_implementation(config._attn_implementation)
            busy = [layer for layer, m in self.modules.items() if (owner, id(m)) in _ROUTES]
            if busy:
                raise RuntimeError(f"attention of layers {busy} is already being captured in this thread")
            for key, config in configs.items():
                switch = _SWITCHED.get(key)
                if switch is None:
                    _SWITCHED[key] = _Switch(config, config._attn_implementation_internal, 1)
                    config._attn_implementation_internal = CAPTURE_ATTENTION
                else:
                    switch.users += 1
            for layer, m in self.modules.items():
                _ROUTES[(owner, id(m))] = (self, layer)
        self._owner, self._configs, self._calls = owner, configs, {}
        return self

    def __exit__(self, *exc):
        with _LOCK:
            for m in self.modules.values():
                _ROUTES.pop((self._owner, id(m)), None)
            for key in self._configs:
                switch = _SWITCHED[key]
                switch.users -= 1
                if switch.users == 0:
                    switch.config._attn_implementation_internal = switch.own  # restore before dropping the switch
                    del _SWITCHED[key]
        self._configs = {}
        return False

    def _deliver(self, layer: int, query, key, lse, scale):
        chunk = self._calls.get(layer, 0)
        self._calls[layer] = chunk + 1
        self.sink(AttentionCall(layer, chunk, query.detach(), key.detach(), None if lse is None else lse.detach(), scale))
