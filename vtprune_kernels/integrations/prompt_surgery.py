"""Rebuild a processor-style prompt so that each image has only its kept number of placeholders.

The model fills placeholders with image features in flat row-major order (``masked_scatter``), so
image i owns the placeholders [c_i, c_i + n_i) of that order, where n_i is its unpruned token count
and c_i the sum of the counts before it. ``locate_images`` finds them (``locate_placeholders`` for
entries of several kinds, e.g. Qwen-VL's images and videos); ``plan_prompt`` says which columns
survive and how the rows are re-padded (rows may shrink by different amounts), a ``PromptLayout``
that gathers any per-token tensor the same way (ids, labels, token types, M-RoPE positions);
``rebuild_prompt`` applies it to ids, mask and labels.

Padding: rows whose padding is at the start (left) stay left-padded, at the end (right) stay
right-padded. A batch without padding is left-padded if its rows end up with different lengths
(left padding is what decoder-only generation needs). ``labels`` lose the same positions and are
padded with -100.

Host-side bookkeeping: the integration calls these on the host copies of the prompt (one read per
call, see handle.py); on CUDA tensors their ``nonzero`` / ``bool()`` / ``tolist()`` would each
synchronise.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch


@dataclasses.dataclass(frozen=True)
class ImagePlaceholders:
    """The placeholders of one image: row ``row`` of input_ids, positions ``positions`` (int64 [n], increasing)."""

    row: int
    positions: torch.Tensor


def locate_images(input_ids: torch.Tensor, image_token_id: int, counts: Sequence[int]) -> List[ImagePlaceholders]:
    """Split the placeholders of input_ids [B, S] among images with ``counts`` tokens each (flat order)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    rows, cols = (input_ids == image_token_id).nonzero(as_tuple=True)
    total = int(sum(counts))
    if rows.numel() != total:
        raise ValueError(
            f"input_ids hold {rows.numel()} image placeholders (token {image_token_id}) but the images have "
            f"{total} unpruned tokens ({list(counts)} per image): the prompt must hold one placeholder per token"
        )
    images = []
    start = 0
    for i, n in enumerate(counts):
        r, c = rows[start : start + n], cols[start : start + n]
        if n and not bool((r == r[0]).all()):
            raise ValueError(f"the placeholders of image {i} span several rows of input_ids")
        images.append(ImagePlaceholders(row=int(r[0]) if n else 0, positions=c))
        start += n
    return images


def locate_placeholders(input_ids: torch.Tensor, token_ids: Sequence[int], counts: Sequence[int]) -> List[ImagePlaceholders]:
    """``locate_images`` for entries of several kinds (e.g. images and videos): entry i has
    ``counts[i]`` placeholders of token ``token_ids[i]``; entries of one kind fill that token's
    placeholders in flat order."""
    out: List[Optional[ImagePlaceholders]] = [None] * len(counts)
    for token in dict.fromkeys(token_ids):
        entries = [i for i, t in enumerate(token_ids) if t == token]
        for i, found in zip(entries, locate_images(input_ids, token, [counts[i] for i in entries])):
            out[i] = found
    return out


def placeholder_runs(input_ids: torch.Tensor, image_token_id: int) -> List[Tuple[int, int, int]]:
    """Maximal runs of consecutive placeholders in flat (row-major) order: (row, start, length)."""
    is_ph = (input_ids == image_token_id).to(torch.int8)
    edges = torch.nn.functional.pad(is_ph, (1, 1)).diff(dim=1)  # +1 where a run starts, -1 after it ends
    starts = (edges == 1).nonzero().tolist()
    ends = (edges == -1).nonzero().tolist()
    return [(row, begin, end - begin) for (row, begin), (_, end) in zip(starts, ends)]


def _padding_side(attention_mask: torch.Tensor) -> Optional[str]:
    """'left', 'right' or None (no padding); a clear error for masks that are not one contiguous block per row."""
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    seq = mask.shape[1]
    idx = torch.arange(seq, device=mask.device)
    left = mask == (idx[None, :] >= (seq - lengths)[:, None])
    right = mask == (idx[None, :] < lengths[:, None])
    is_left, is_right = bool(left.all()), bool(right.all())
    if bool((lengths == seq).all()):
        return None
    if is_left:
        return "left"
    if is_right:
        return "right"
    raise ValueError("attention_mask must be one contiguous block of ones per row (left or right padding)")


@dataclasses.dataclass(frozen=True)
class PromptLayout:
    """Where every column of the rebuilt prompt comes from.

    sources: per row, int64 [n_b] columns of the original prompt that survive, in order.
    width: columns of the rebuilt prompt; side: "left" or "right" (where the padding goes);
    masked: whether the rebuilt prompt needs an attention mask (False only when there was none
    and every row keeps the same length).
    """

    sources: List[torch.Tensor]
    width: int
    side: str
    masked: bool

    def gather(self, t: torch.Tensor, pad_value) -> torch.Tensor:
        """[..., B, width]: the surviving columns of t [..., B, S] (per row, in order), re-padded with
        ``pad_value``. Works for the prompt's per-token tensors (ids, labels, token types) and for
        position tensors with leading dims (M-RoPE's [3, B, S])."""
        out = t.new_full((*t.shape[:-1], self.width), pad_value)
        for b, cols in enumerate(self.sources):
            n = cols.numel()
            target = slice(self.width - n, self.width) if self.side == "left" else slice(0, n)
            out[..., b, target] = t[..., b, cols.to(t.device)]
        return out

    def attention_mask(self, dtype=torch.long) -> torch.Tensor:
        """[B, width]: ones on the surviving columns, zeros on the padding."""
        mask = torch.zeros(len(self.sources), self.width, dtype=dtype)
        for b, cols in enumerate(self.sources):
            n = cols.numel()
            mask[b, slice(self.width - n, self.width) if self.side == "left" else slice(0, n)] = 1
        return mask


def plan_prompt(
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    images: Sequence[ImagePlaceholders],
    keep: Sequence[torch.Tensor],
) -> PromptLayout:
    """The layout of the prompt after dropping the placeholders whose ``keep[i]`` (bool [n_i]) is False
    (host tensors). Padding side preserved; an unpadded batch whose rows end up with different
    lengths is left-padded."""
    B, S = input_ids.shape
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    survive = torch.ones(B, S, dtype=torch.bool) if attention_mask is None else attention_mask.bool().clone()
    side = None if attention_mask is None else _padding_side(attention_mask)
    for img, k in zip(images, keep):
        if k.shape != img.positions.shape:
            raise ValueError(f"keep mask of {k.numel()} entries for an image with {img.positions.numel()} placeholders")
        survive[img.row, img.positions] = k.to(survive.device)
    sources = [row.nonzero().flatten() for row in survive]
    lengths = [c.numel() for c in sources]
    masked = attention_mask is not None or len(set(lengths)) > 1
    return PromptLayout(sources=sources, width=max(lengths), side=side or "left", masked=masked)


def rebuild_prompt(
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    labels: Optional[torch.Tensor],
    images: Sequence[ImagePlaceholders],
    keep: Sequence[torch.Tensor],
    *,
    pad_token_id: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Drop the placeholders whose ``keep[i]`` (bool [n_i]) is False; re-pad.

    Returns (input_ids, attention_mask, labels) [B, S']. attention_mask is None only when it was
    None and every row keeps the same length.
    """
    if labels is not None and labels.shape != input_ids.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
    layout = plan_prompt(input_ids, attention_mask, images, keep)
    new_ids = layout.gather(input_ids, pad_token_id)
    new_labels = None if labels is None else layout.gather(labels, -100)
    new_mask = None
    if layout.masked:
        new_mask = layout.attention_mask(attention_mask.dtype if attention_mask is not None else torch.long)
    return new_ids, new_mask, new_labels
