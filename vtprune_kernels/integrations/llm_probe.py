"""PTP's instruction score: a probe pass of the first ``layer + 1`` LLM blocks on the full prompt.

At block ``layer`` the probe takes the queries of the instruction tokens (the last M tokens of the
probed sequence) and the keys of all tokens, both after the rotary embedding and any q/k norm,
exactly as the model's attention receives them, and reduces them with
``ops.attention_scores(causal=True, query_reduce="max", head_reduce="mean")``: for every key,
the max over instruction rows of the head-mean attention probability. Blocks after ``layer``
never run (the probe leaves the forward by raising a private exception).

How the q/k are reached: rotary embeddings make projection hooks model-specific, so the probe
registers ONE named attention function, ``"vtprune_probe"``, in transformers' ``AttentionInterface``,
once, at import. For the duration of a probe call, and only there, the probed block's attention
module gets a shallow copy of its config naming that function (``module.config`` is put back in
``finally``; probes of one module are serialised by a lock). Every other block, and the mask
construction, keep the model's own attention implementation and config. The function captures
only the call of the probing thread on the probed module; any other call that reaches it (another
thread running the same model during the probe) is delegated to the model's own attention
(the implementation its config named, or the model file's eager function), so no model that is
not being probed is affected. The probe pass is a scoring pass only: its output is not used.
"""
from __future__ import annotations

import copy
import threading
from typing import Collection, Dict, Optional, Tuple

import torch
from torch import nn

from .. import ops
from .lse_attention import own_attention_function

PROBE_ATTENTION = "vtprune_probe"

_ACTIVE: Dict[Tuple[int, int], "_Probe"] = {}  # (thread id, id(attention module)) -> probe
_OWN_CONFIG: Dict[int, object] = {}  # id(attention module) -> its own config, while it is probed
_MODULE_LOCKS: Dict[int, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


class _StopProbe(Exception):
    """Raised inside the probed block's attention to leave the language model's forward."""


class _Probe:
    def __init__(self, num_query_rows: int, backend: str):
        self.num_query_rows = num_query_rows
        self.backend = backend
        self.scores = None


def _own_attention(module):
    """The attention function the module uses without the probe."""
    return own_attention_function(module, _OWN_CONFIG[id(module)]._attn_implementation)


def _probe_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    probe = _ACTIVE.get((threading.get_ident(), id(module)))
    if probe is None:
        return _own_attention(module)(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    m = probe.num_query_rows
    probe.scores = ops.attention_scores(
        query[:, :, query.shape[2] - m :].detach(),
        key.detach(),
        scale=scaling,
        query_reduce="max",
        head_reduce="mean",
        causal=True,
        backend=probe.backend,
    )
    raise _StopProbe()


def _register_once():
    from transformers import AttentionInterface

    if PROBE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(PROBE_ATTENTION, _probe_attention)


_register_once()


def _module_lock(module) -> threading.Lock:
    with _REGISTRY_LOCK:
        return _MODULE_LOCKS.setdefault(id(module), threading.Lock())


def end_of_turn_ids(model) -> Tuple[int, ...]:
    """The token ids that close a chat turn: every ``eos_token_id`` of the model's generation config,
    config and text config (chat templates close the user's turn with the model's eos, e.g. ``<|im_end|>``)."""
    ids = set()
    sources = (getattr(model, "generation_config", None), model.config, getattr(model.config, "text_config", None))
    for source in sources:
        value = getattr(source, "eos_token_id", None)
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None:
                ids.add(int(token))
    return tuple(sorted(ids))


def instruction_span(
    row_ids: torch.Tensor, last_placeholder: int, mode: str, end_of_turn: Collection[int]
) -> Tuple[int, int]:
    """(first, stop): the instruction tokens of one prompt row are ``row_ids[first:stop]`` (host int64 [L]).

    mode "after_image": every token after the last image placeholder (first = last_placeholder + 1,
    stop = L). mode "text": the user's instruction: the token right after the placeholder run is the
    image end marker the processor writes after every image (InternVL's ``</img>``) and is skipped;
    the instruction stops before the first end-of-turn token after it (``end_of_turn``, the model's
    eos ids), or at the end of the row when there is none (a prompt without chat template).
    ``stop - first`` may be 0: the caller reports a prompt without instruction.
    """
    length = int(row_ids.shape[0])
    if mode == "after_image":
        return last_placeholder + 1, length
    if mode != "text":
        raise ValueError(f"instruction must be 'text' or 'after_image', got {mode!r}")
    first = min(last_placeholder + 2, length)
    stop: Optional[int] = None
    if end_of_turn:
        closing = torch.isin(row_ids[first:], torch.tensor(sorted(end_of_turn), dtype=row_ids.dtype)).nonzero()
        if closing.numel():
            stop = first + int(closing[0])
    return first, length if stop is None else stop


def decoder_layers(language_model: nn.Module) -> nn.ModuleList:
    layers = getattr(language_model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(layers[0], "self_attn"):
        raise ValueError(f"LLM probe: {type(language_model).__name__} has no decoder `layers[i].self_attn`")
    return layers


def instruction_scores(
    language_model: nn.Module,
    inputs_embeds: torch.Tensor,
    *,
    layer: int,
    num_instruction_tokens: int,
    backend: str = "auto",
) -> torch.Tensor:
    """float32 [S]: per key, max over the last ``num_instruction_tokens`` query rows of the
    head-mean causal attention probability at decoder block ``layer``.

    inputs_embeds: [1, S, D], one unpadded sequence (positions 0..S-1).
    """
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[0] != 1:
        raise ValueError(f"inputs_embeds must be [1, S, D] (one unpadded sequence), got {tuple(inputs_embeds.shape)}")
    seq = inputs_embeds.shape[1]
    if not 1 <= num_instruction_tokens <= seq:
        raise ValueError(f"num_instruction_tokens must be in [1, {seq}], got {num_instruction_tokens}")
    layers = decoder_layers(language_model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"llm probe layer {layer} does not exist in a {len(layers)}-block language model")
    attention = layers[layer].self_attn
    probe = _Probe(num_instruction_tokens, backend)
    key = (threading.get_ident(), id(attention))
    with _module_lock(attention):
        own = attention.config
        probing = copy.copy(own)
        probing._attn_implementation_internal = PROBE_ATTENTION
        _OWN_CONFIG[id(attention)] = own
        _ACTIVE[key] = probe
        attention.config = probing
        try:
            with torch.no_grad():  # a scoring pass: nothing of it is trained or reused
                language_model(inputs_embeds=inputs_embeds, use_cache=False)
        except _StopProbe:
            pass
        finally:
            attention.config = own
            del _ACTIVE[key]
            del _OWN_CONFIG[id(attention)]
    if probe.scores is None:
        raise RuntimeError(f"LLM probe: block {layer} was not reached")
    return probe.scores[0]
