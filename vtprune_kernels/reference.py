"""Plain PyTorch references of the vtprune ops: the semantics in the fewest lines.

These are the oracles every backend is tested against (docs/design.md section 2). They favour
clarity over speed: attention is materialised, selections loop in Python, arithmetic runs
in float64. They do not validate arguments; ``vtprune_kernels.ops`` does that first.

Tie rule everywhere: a higher score wins; equal scores -> the lower index wins; NaN ranks
below every number (among NaNs, the lower index wins).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch


def descending_order(values: torch.Tensor) -> torch.Tensor:
    """Permutation [n] ranking a 1-D tensor best first under the tie rule."""
    nan_last = values.isnan()
    by_value = torch.sort(values.masked_fill(nan_last, float("-inf")), descending=True, stable=True).indices
    return by_value[torch.sort(nan_last[by_value].to(torch.uint8), stable=True).indices]


def attention_scores(q, k, *, scale=None, query_reduce="mean", head_reduce="mean", causal=False, lse=None):
    """Attention each key receives, reduced over heads, then over query rows.

    q [B, Hq, M, D], k [B, Hk, N, D] (Hq % Hk == 0), lse float32 [B, Hq, M] or None.
    p[b,h,i,j] = softmax_j(scale * q[b,h,i] . k[b,h // (Hq/Hk),j]) over the keys row i sees
    (all N, or j <= N-M+i when causal); with lse, p = exp(scale*q.k - lse).
    Returns float32 score[b,j] = QR_i HR_h p[b,h,i,j]  ([B, Hq, N] = QR_i p with head_reduce="none").
    """
    B, Hq, M, D = q.shape
    N = k.shape[2]
    scale = D**-0.5 if scale is None else scale
    kk = k.double().repeat_interleave(Hq // k.shape[1], dim=1)
    logits = scale * (q.double() @ kk.transpose(-1, -2))  # [B, Hq, M, N]
    if causal:
        visible = torch.arange(N) <= (N - M + torch.arange(M))[:, None]
        logits = logits.masked_fill(~visible.to(logits.device), float("-inf"))
    p = logits.softmax(-1) if lse is None else torch.exp(logits - lse.double()[..., None])
    if head_reduce == "mean":
        p = p.mean(1)
    elif head_reduce == "max":
        p = p.amax(1)
    if query_reduce == "sum":
        out = p.sum(-2)
    elif query_reduce == "mean":
        out = p.sum(-2) / M
    else:
        out = p.amax(-2)
    return out.float()


def region_topk_mask(scores, region_ids, k):
    """bool [B, N]: the k[b, r] best tokens of every region r of every row b.

    scores float [B, N]; region_ids int64 [B, N] or [N] in [0, R); k int64 [B, R].
    """
    B, N = scores.shape
    ids = region_ids.expand(B, N)
    mask = torch.zeros(B, N, dtype=torch.bool, device=scores.device)
    for b in range(B):
        for r in range(k.shape[1]):
            members = (ids[b] == r).nonzero().flatten()
            best = members[descending_order(scores[b, members].double())[: int(k[b, r])]]
            mask[b, best] = True
    return mask


def window_argmax_mask(scores, exclude, window):
    """bool [B, H, W]: the best non-excluded cell of every (wh, ww) window.

    Windows tile the grid from the top-left; edge windows may be partial. Ties -> first cell in
    raster order inside the window. A window with every cell excluded marks nothing.
    """
    B, H, W = scores.shape
    wh, ww = window
    mask = torch.zeros(B, H, W, dtype=torch.bool, device=scores.device)
    for b in range(B):
        for i0 in range(0, H, wh):
            for j0 in range(0, W, ww):
                cells = scores[b, i0 : i0 + wh, j0 : j0 + ww].double()
                allowed = ~exclude[b, i0 : i0 + wh, j0 : j0 + ww]
                if not allowed.any():
                    continue
                flat = cells.flatten().masked_fill(~allowed.flatten(), float("nan"))
                # an excluded cell can never win: rank allowed cells first, then by the tie rule
                order = [int(i) for i in descending_order(flat) if allowed.flatten()[i]]
                best = order[0]
                mask[b, i0 + best // cells.shape[1], j0 + best % cells.shape[1]] = True
    return mask


def sequential_sum(values):
    """float64 sums over the last dim, accumulated in index order from 0.0 (the order of the
    kernels; torch's CPU cumsum adds sequentially)."""
    if values.shape[-1] == 0:
        return values.new_zeros(values.shape[:-1])
    return values.cumsum(-1)[..., -1]


def cosine_gram(x, rows_per_chunk=64):
    """float64 [n, n]: the cosines of the rows of x [n, C] (csrc/common/cosine.h).

    cos(x, y) = dot(x, y) / sqrt(max(dot(x, x), 1e-24) * max(dot(y, y), 1e-24)), every dot summed in
    float64 in index order (products of widened float32/16 values are exact). F.normalize's cosine,
    computed so that it depends only on the two vectors: identical vectors get bitwise-identical
    cosines and a vector's cosine with an identical one is exactly 1 (0 for a zero vector).
    """
    xd = x.double()
    norm2 = sequential_sum(xd * xd).clamp(min=1e-24)
    chunks = range(0, len(xd), rows_per_chunk)
    dots = torch.cat([sequential_sum(xd[i : i + rows_per_chunk, None, :] * xd[None, :, :]) for i in chunks]) if len(xd) else xd.new_zeros(0, 0)
    # numpy's sqrt is the IEEE one (correctly rounded), as in the kernels; torch's float64 sqrt on
    # the CPU is a vectorised approximation that can differ in the last bit
    products = (norm2[:, None] * norm2[None, :]).cpu().numpy()
    return dots / torch.from_numpy(np.sqrt(products)).to(dots.device)


def cosine_dedup_mask(x, candidates, order_scores, n_keep, step=8):
    """bool [B, N]: VisPruner's diverse tokens among the candidates, round by round.

    x [B, N, C]; candidates bool [B, N]; order_scores float [B, N]; n_keep int64 [B].
    R = candidates by order_scores descending (tie rule). While r = min(step, |R| - n_keep) > 0:
    A = R[0::2], B = R[1::2]; m(a) = max_b cos(x_a, x_b) (-inf when B is empty, NaN when any is);
    order A by m descending (stable, NaN last); drop the first min(r, |A|) of A; R = rest of A + B.
    n_keep = 0 therefore keeps nothing; n_keep >= |candidates| keeps every candidate.
    Cosines: ``cosine_gram`` (equal for identical vectors, so duplicates rank by position).
    """
    B, N, _ = x.shape
    mask = torch.zeros(B, N, dtype=torch.bool, device=x.device)
    for b in range(B):
        cand = candidates[b].nonzero().flatten()
        R = cand[descending_order(order_scores[b, cand].double())]
        n = int(n_keep[b])
        if min(step, len(R) - n) > 0:
            cos = torch.full((N, N), float("nan"), dtype=torch.float64, device=x.device)
            cos[cand[:, None], cand[None, :]] = cosine_gram(x[b, cand])
        while (r := min(step, len(R) - n)) > 0:
            A, Bset = R[0::2], R[1::2]
            if len(Bset) > 0:
                m = cos[A[:, None], Bset[None, :]].amax(1)
            else:
                m = torch.full((len(A),), float("-inf"), dtype=torch.float64, device=x.device)
            A = A[descending_order(m)]
            R = torch.cat([A[min(r, len(A)) :], Bset])
        mask[b, R] = True
    return mask


def allocate_budget(weights, total, capacity):
    """int64 [B, S]: total[b] tokens shared over S regions in proportion to weights, capped.

    Water-filling in exact rational arithmetic (every float weight is a rational): share =
    rem * w_i / sum(w) over the unfixed regions (equal shares when their weights sum to 0); every
    region whose share reaches its capacity is fixed at it and rem is re-shared. Then floor the
    unfixed shares and give the leftover units, one each, to the largest fractional parts (equal
    fractional parts are equal: ties -> lower index).
    """
    B, S = weights.shape
    out = torch.zeros(B, S, dtype=torch.int64)
    for b in range(B):
        w = [Fraction(v) for v in weights[b].double().tolist()]
        cap = capacity[b].tolist()
        fixed = [False] * S
        rem = Fraction(int(total[b]))
        while True:
            free = [i for i in range(S) if not fixed[i]]
            if not free:
                break
            wsum = sum(w[i] for i in free)
            share = {i: (rem * w[i] / wsum if wsum > 0 else rem / len(free)) for i in free}
            full = [i for i in free if share[i] >= cap[i]]
            if not full:
                break
            for i in full:
                fixed[i] = True
                rem -= cap[i]
        counts = [cap[i] if fixed[i] else math.floor(share[i]) for i in range(S)]
        leftover = int(total[b]) - sum(counts)
        by_fraction = sorted((i for i in range(S) if not fixed[i]), key=lambda i: (-(share[i] - counts[i]), i))
        for i in by_fraction[:leftover]:
            counts[i] += 1
        out[b] = torch.tensor(counts)
    return out.to(weights.device)
