"""The model's own attention, plus the row log-sum-exp when the kernel it runs computes one anyway.

``attention_with_lse(module, query, key, value, attention_mask, implementation, **kwargs)`` returns
``(output, weights, lse)``. ``output, weights`` are what transformers' attention function named
``implementation`` returns for this call (output [B, M, H, Dv]; ``weights`` None except for eager):
the same kernel with the same arguments, so the tower's hidden states are bit for bit those of the
model without the capture. ``lse`` is float32 [B, H, M], the natural log of
sum_j exp(scaling * q_i . k_j) over the keys, or None when the kernel that runs gives none.

Where the LSE comes from (query [B, H, M, D], key/value [B, H, N, D]):

- ``"sdpa"``: ``torch._fused_sdp_choice`` (SDPA's own dispatcher, honouring ``sdpa_kernel``
  contexts) says which kernel SDPA would run; that kernel is called directly:
  on the CPU, ``aten._scaled_dot_product_flash_attention_for_cpu`` -> (output, logsumexp [B, H, M]);
  on CUDA, ``aten._scaled_dot_product_flash_attention`` -> logsumexp [B, H, M] (head dims that are a
  multiple of 8 only: SDPA pads other head dims before calling it), or
  ``aten._scaled_dot_product_efficient_attention`` with ``compute_log_sumexp=True`` -> logsumexp
  [B, H, ceil(M / 32) * 32] (rows padded to a multiple of 32; cut to M here). All natural log, float32.
- ``"flash_attention_2"`` with the ``flash_attn`` package: ``flash_attn_func(...,
  return_attn_probs=True)`` -> ``softmax_lse`` [B, H, M], as transformers would call it (the
  inputs transposed to [B, M, H, D], fp32 inputs cast to the layer's dtype as transformers does).

Fallback, ``lse=None`` (the scores then cost two passes over the keys): the model's own function
runs unchanged whenever no LSE-returning kernel applies: an attention mask, a position bias,
dropout, causal attention, grouped kv heads, SDPA choosing its math kernel (a dtype, shape or
``sdpa_kernel`` setting the fused kernels refuse) or cuDNN (its statistics-producing graph is not
guaranteed to give the same output), eager, flex attention and any other implementation.

Flash implementations cannot be handed back to transformers while the config names another
function (transformers looks the flash kernels up by the config's name), so for
``"flash_attention_2"`` every call is served here and a call it cannot serve exactly (a mask,
packed ``cu_seq_lens``) is an error; other flash implementations (FA3, FA4, hub kernels) are refused
by ``check_implementation``.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Callable, Optional, Tuple

import torch
from torch import nn

_FLASH = 1  # torch.nn.attention.SDPBackend.FLASH_ATTENTION
_EFFICIENT = 2  # SDPBackend.EFFICIENT_ATTENTION


def is_flash_implementation(implementation: Optional[str]) -> bool:
    """transformers' own test: a flash implementation has "flash" in its name."""
    return implementation is not None and "flash" in implementation


def check_implementation(implementation: Optional[str]) -> None:
    """Raise ValueError for an implementation the capture cannot run exactly (flash variants other
    than ``"flash_attention_2"`` with the ``flash_attn`` package installed)."""
    if not is_flash_implementation(implementation):
        return
    if implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is not None:
        return
    raise ValueError(
        f"the vision tower's attention implementation {implementation!r} cannot be captured: transformers "
        "resolves flash kernels by the config's name. Use 'sdpa', 'eager' or 'flash_attention_2' with the "
        "flash_attn package installed"
    )


def own_attention_function(module: nn.Module, implementation: Optional[str]) -> Callable:
    """transformers' attention function named ``implementation`` for ``module`` (the model file's
    ``eager_attention_forward`` for "eager" / None), as the module itself would look it up."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager)


def attention_with_lse(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    implementation: Optional[str],
    *,
    want_lse: bool = True,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(output [B, M, H, Dv], weights or None, lse float32 [B, H, M] or None): the attention the
    module runs under ``implementation`` (see the module doc for when ``lse`` is None).
    ``want_lse=False``: no LSE is asked for (the plain call, except that flash is served here)."""
    if implementation == "flash_attention_2":
        out, lse = _flash_attn(module, query, key, value, attention_mask, **kwargs)
        return out, None, lse
    if want_lse and implementation == "sdpa":
        out_lse = _sdpa_with_lse(module, query, key, value, attention_mask, **kwargs)
        if out_lse is not None:
            return out_lse[0], None, out_lse[1]
    out, weights = own_attention_function(module, implementation)(module, query, key, value, attention_mask, **kwargs)
    return out, weights, None


def _plain_call(module, query, key, attention_mask, dropout, is_causal, kwargs) -> bool:
    """The call is plain full attention: no mask, bias, softcap, dropout, causality or grouped kv heads."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    return (
        attention_mask is None
        and not (causal and query.shape[2] > 1)
        and not dropout
        and query.shape[1] == key.shape[1]
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("output_attentions", False)
        and not torch.jit.is_tracing()
    )


def _sdpa_with_lse(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """(output [B, M, H, Dv], lse [B, H, M]) from the kernel SDPA would run, or None (see the module doc)."""
    if not _plain_call(module, query, key, attention_mask, dropout, is_causal, kwargs):
        return None
    backend = torch._fused_sdp_choice(query, key, value, None, 0.0, False, scale=scaling)
    aten = torch.ops.aten
    if backend == _FLASH and query.device.type == "cpu":
        out, lse = aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, False, scale=scaling)
    elif backend == _FLASH and query.device.type == "cuda" and query.shape[-1] % 8 == 0 == value.shape[-1] % 8:
        out, lse = aten._scaled_dot_product_flash_attention(query, key, value, 0.0, False, False, scale=scaling)[:2]
    elif backend == _EFFICIENT and query.device.type == "cuda":
        out, lse = aten._scaled_dot_product_efficient_attention(query, key, value, None, True, 0.0, False, scale=scaling)[:2]
        lse = lse[..., : query.shape[2]]
    else:
        return None
    return out.transpose(1, 2).contiguous(), lse


def _flash_attn(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' flash_attention_2 call for plain full attention, with ``return_attn_probs=True``."""
    from flash_attn import flash_attn_func
    from transformers.integrations.flash_attention import get_target_dtype

    packed = [name for name in ("cu_seq_lens_q", "cu_seq_lens_k", "position_ids") if kwargs.get(name) is not None]
    if packed or not _plain_call(module, query, key, attention_mask, 0.0, is_causal, kwargs) or query.shape[-1] != value.shape[-1]:
        raise RuntimeError(
            "vtprune capture under flash_attention_2 serves plain full attention only (no mask, packed "
            f"sequences, grouped kv heads or causal attention); this call has {packed or 'one of them'}: "
            "use attn_implementation='sdpa' for the vision tower"
        )
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # [B, M, H, D], as flash_attn takes them
    target = get_target_dtype(q, module)
    if target and q.dtype == torch.float32:
        q, k, v = q.to(target), k.to(target), v.to(target)
    deterministic = os.getenv("FLASH_ATTENTION_DETERMINISTIC", "0") == "1"
    out, lse, _ = flash_attn_func(
        q, k, v, dropout_p=dropout, softmax_scale=scaling, causal=False, deterministic=deterministic, return_attn_probs=True
    )
    return out, lse[..., : query.shape[2]]

