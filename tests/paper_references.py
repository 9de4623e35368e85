"""From-the-paper reference implementations of the pruning methods, in plain torch and Python.

Independent re-statements of the published algorithms (VisPruner, HIVTP, PTP): they do NOT call
``vtprune_kernels.ops`` or ``vtprune_kernels.reference``, loop per image, and follow the
contract's tie rule (higher wins, equal -> lower index, NaN ranks below every number) wherever
the published code sorts. They are slow and only meant for tests.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch


def rank_best_first(values: Sequence[float]) -> List[int]:
    """Indices of ``values`` best first under the tie rule."""
    def key(i):
        nan = math.isnan(values[i])
        return (nan, 0.0 if nan else -values[i], i)

    return sorted(range(len(values)), key=key)


# ---------------------------------------------------------------------------------------------
# VisPruner: the published per-round loop (gather the residual, normalise, GEMM, max, sort, drop)
# ---------------------------------------------------------------------------------------------
def vispruner(cls_attn: torch.Tensor, features: torch.Tensor, keep: int, important_ratio=0.5, step=8):
    """bool [B, N]. cls_attn [B, N] ([CLS] attention), features [B, N, C]."""
    B, N = cls_attn.shape
    mask = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        total = min(keep, N)
        n_important = int(total * important_ratio)
        n_diverse = total - n_important
        order = rank_best_first(cls_attn[b].double().tolist())  # argsort(descending)
        important, residual = order[:n_important], order[n_important:]
        x = features[b].double()
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # cosine: normalise, then GEMM
        while True:
            r = min(step, len(residual) - n_diverse)
            if r <= 0:
                break
            even, odd = residual[0::2], residual[1::2]
            if odd:
                best_match = (x[even] @ x[odd].T).max(dim=1).values.tolist()
            else:
                best_match = [-math.inf] * len(even)
            even = [even[i] for i in rank_best_first(best_match)]  # most similar first
            residual = even[min(r, len(even)) :] + odd
        mask[b, important] = True
        mask[b, residual] = True
    return mask


# ---------------------------------------------------------------------------------------------
# HIVTP: explicit region slicing with a top-k per region, then a loop over windows
# ---------------------------------------------------------------------------------------------
def hivtp(received: torch.Tensor, grid: Tuple[int, int], region_grid=2, region_ratio=0.25, window=(2, 2)):
    """bool [B, h*w]. received [B, h*w] attention received per patch."""
    h, w = grid
    wh, ww = window
    row_bounds = [i * h // region_grid for i in range(region_grid + 1)]
    col_bounds = [j * w // region_grid for j in range(region_grid + 1)]
    out = torch.zeros(received.shape[0], h, w, dtype=torch.bool)
    for b in range(received.shape[0]):
        s = received[b].double().reshape(h, w)
        kept = torch.zeros(h, w, dtype=torch.bool)
        for i in range(region_grid):
            for j in range(region_grid):
                y0, y1, x0, x1 = row_bounds[i], row_bounds[i + 1], col_bounds[j], col_bounds[j + 1]
                block = s[y0:y1, x0:x1]
                k = int(region_ratio * block.numel())
                for idx in rank_best_first(block.flatten().tolist())[:k]:
                    kept[y0 + idx // (x1 - x0), x0 + idx % (x1 - x0)] = True
        local = torch.zeros(h, w, dtype=torch.bool)
        for y0 in range(0, h, wh):
            for x0 in range(0, w, ww):
                best, best_value = None, None
                for y in range(y0, min(y0 + wh, h)):
                    for x in range(x0, min(x0 + ww, w)):  # raster order: the first best stays
                        if kept[y, x]:
                            continue
                        v = float(s[y, x])
                        if best is None or (not math.isnan(v) and (math.isnan(best_value) or v > best_value)):
                            best, best_value = (y, x), v
                if best is not None:
                    local[best] = True
        out[b] = kept | local
    return out.reshape(received.shape[0], h * w)


# ---------------------------------------------------------------------------------------------
# PTP: the formulas of the paper, one image
# ---------------------------------------------------------------------------------------------
def water_fill(weights: Sequence[float], total: int, capacity: Sequence[int]) -> List[int]:
    """Integer shares of ``total`` in proportion to ``weights``, capped by ``capacity``: shares
    reaching their cap are fixed there and the rest re-shared; then floors plus the leftover to
    the largest fractional parts (ties -> lower index)."""
    n = len(weights)
    fixed = [False] * n
    remaining = float(total)
    while True:
        free = [i for i in range(n) if not fixed[i]]
        weight_sum = sum(weights[i] for i in free)
        share = {i: remaining * weights[i] / weight_sum if weight_sum > 0 else remaining / len(free) for i in free}
        capped = [i for i in free if share[i] >= capacity[i]]
        if not capped:
            break
        for i in capped:
            fixed[i] = True
            remaining -= capacity[i]
    counts = [capacity[i] if fixed[i] else math.floor(share[i]) for i in range(n)]
    leftover = total - sum(counts)
    by_fraction = sorted(free, key=lambda i: (-(share[i] - counts[i]), i))
    for i in by_fraction[:leftover]:
        counts[i] += 1
    return counts


def _min_max(x: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min) over the non-NaN values; a constant map gives zeros; NaN stays."""
    values = x[~x.isnan()]
    if values.numel() == 0:
        return x.clone()
    lo, hi = values.min(), values.max()
    if not bool(hi > lo):
        return torch.where(x.isnan(), x, torch.zeros_like(x))
    return (x - lo) / (hi - lo)


def ptp(cls_regions: torch.Tensor, b_scores: torch.Tensor, c_scores: torch.Tensor, prune_ratio=0.5, alpha=0.5):
    """bool [S, T]. cls_regions [S, C] (thumbnail last), b_scores and c_scores [S, T]."""
    S, T = b_scores.shape
    total = math.floor((1 - prune_ratio) * S * T + 0.5)
    cls = cls_regions.double()
    thumbnail = cls[-1]
    a = [float(cls[i] @ thumbnail / (cls[i].norm() * thumbnail.norm()).clamp_min(1e-8)) for i in range(S - 1)] + [1.0]
    lo, hi = min(a), max(a)
    a = [(v - lo) / (hi - lo) if hi > lo else 0.0 for v in a]
    e = [math.exp(v) for v in a]
    softmax = [v / sum(e) for v in e]
    budgets = water_fill(softmax, total, [T] * S)
    score = alpha * _min_max(c_scores.float()) + (1 - alpha) * _min_max(b_scores.float())
    mask = torch.zeros(S, T, dtype=torch.bool)
    for i in range(S):
        mask[i, rank_best_first(score[i].tolist())[: budgets[i]]] = True
    return mask
