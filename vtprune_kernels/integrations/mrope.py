"""M-RoPE positions of a pruned prompt: every kept token keeps the 3-D position it had unpruned.

Qwen2-VL-style language models (Qwen2.5-VL, Qwen3-VL) rotate queries and keys by a 3-D position
(temporal, height, width) per token. The model derives these from the UNPRUNED placeholder layout
(``get_rope_index`` with the image/video grids): a visual token's position is its cell in the
image's merged grid, text after an image continues from ``max(grid position) + 1``. Dropping
visual tokens must not move anyone: the pruned prompt takes the unpruned positions of its surviving
columns (as vLLM's EVS does), so every kept visual token and every text token sees exactly the
rotation it would have seen unpruned. Generation continues from the unpruned maximum: the next
token's position is ``max + 1`` however many tokens were dropped (``rope_deltas``).

Model-agnostic: these functions take position tensors and keep masks, not a model. The
transformers integration feeds them ``get_rope_index``; a serving engine can feed them its own
per-request positions.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..methods._device import from_host


def kept_position_columns(positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """[3, K]: the columns of one sequence's positions [3, S] whose ``keep`` (bool [S]) is True, in order."""
    if positions.dim() != 2 or keep.dim() != 1 or positions.shape[1] != keep.shape[0]:
        raise ValueError(f"positions must be [3, S] and keep [S], got {tuple(positions.shape)} and {tuple(keep.shape)}")
    return positions[:, keep.to(positions.device)]


def mrope_position_deltas(positions: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """[B, 1] (int64; float for float positions): per row, (largest position over its real tokens) + 1 - (its
    number of real tokens).

    positions: [3, B, S] of the (pruned) prompt; attention_mask: [B, S] (None: every token is real).
    This is what transformers' Qwen-VL models keep as ``rope_deltas``: a decoding step at cache
    length L (real tokens so far) gets position L + delta, i.e. the first new token sits at
    max + 1 of the prompt whatever the prompt's length.
    """
    if positions.dim() != 3:
        raise ValueError(f"positions must be [3, B, S], got {tuple(positions.shape)}")
    B, S = positions.shape[1:]
    real = torch.ones(B, S, dtype=torch.bool, device=positions.device) if attention_mask is None else attention_mask.bool()
    if tuple(real.shape) != (B, S):
        raise ValueError(f"attention_mask must be [{B}, {S}], got {tuple(real.shape)}")
    floating = positions.dtype.is_floating_point  # Qwen3-Omni's get_rope_index gives float positions
    lowest = torch.finfo(positions.dtype).min if floating else torch.iinfo(positions.dtype).min
    largest = positions.masked_fill(~real.to(positions.device)[None], lowest).amax(dim=(0, 2))
    return (largest + 1 - real.sum(1).to(positions.device)).to(positions.dtype if floating else torch.int64)[:, None]


def set_kept_positions(inner, out: dict, layout, positions: torch.Tensor, types: Optional[torch.Tensor]) -> None:
    """Give a pruned call ``out`` the unpruned positions of its surviving columns and the matching rope deltas.

    inner: the model's inner module (its ``rope_deltas`` is set, so that decoding steps without position_ids
    continue at the unpruned max + 1); layout: the call's ``prompt_surgery.PromptLayout``; positions: host
    int64 [3, B, S] of the UNPRUNED prompt (the model's own ``get_rope_index``); types: host
    ``mm_token_type_ids`` [B, S] of the unpruned prompt (gathered into ``out`` when the call passes them)."""
    kept = layout.gather(positions, 0)
    device = out["input_ids"].device
    new_mask = layout.attention_mask() if layout.masked else None
    out["position_ids"] = from_host(kept, device)
    if out.get("mm_token_type_ids") is not None and types is not None:
        out["mm_token_type_ids"] = from_host(layout.gather(types.to(out["mm_token_type_ids"].dtype), 0), device)
    inner.rope_deltas = from_host(mrope_position_deltas(kept, new_mask), device)
