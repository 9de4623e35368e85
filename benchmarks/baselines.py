"""Plain-torch baselines of the selection benchmarks: what the published methods do (per-segment
``topk`` loops, VisPruner's per-round loop) and the strongest vectorised torch formulation of each
op we could write (``*_vectorised``, ``dedup_gram_once``), which the kernels must beat.

Shared by ``bench_selection.py`` (CPU shapes) and ``bench_selection_cuda.py`` (GPU shapes).
"""
import torch
import torch.nn.functional as F


def topk_per_segment(scores, region_ids, k):
    """bool [B, N]: one ``torch.topk`` per (row, region). region_ids [N], k [B, R]."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for b in range(scores.shape[0]):
        for r in range(k.shape[1]):
            members = (region_ids == r).nonzero().flatten()
            mask[b, members[scores[b, members].topk(int(k[b, r])).indices]] = True
    return mask


def ranked_residual(candidates, order_scores):
    """int64 [B, n]: each row's candidates by order_scores descending (rows must hold n each)."""
    counts = candidates.sum(1)
    n = int(counts[0])
    if not bool((counts == n).all()):
        raise ValueError("ranked_residual: every row must hold the same number of candidates")
    ranked = order_scores.float().masked_fill(~candidates, float("-inf")).argsort(dim=1, descending=True, stable=True)
    return ranked[:, :n]


def published_dedup_loop(x, residual, n_keep, step=8):
    """VisPruner's diverse-token loop, batched over rows as the published code runs it on tiles.

    x [B, N, C]; residual [B, n] ranked candidate indices; n_keep an int. Each round gathers the
    residual rows, normalises them, takes the A x B cosines with one GEMM, their max, sorts A by it
    and re-concatenates. Returns the kept indices [B, n_keep].
    """
    C = x.shape[-1]
    R = residual
    while (r := min(step, R.shape[1] - n_keep)) > 0:
        A, B = R[:, ::2], R[:, 1::2]
        xa = F.normalize(torch.gather(x, 1, A[..., None].expand(-1, -1, C)), dim=-1)
        xb = F.normalize(torch.gather(x, 1, B[..., None].expand(-1, -1, C)), dim=-1)
        best = (xa @ xb.transpose(1, 2)).amax(-1)
        A = torch.gather(A, 1, best.argsort(dim=1, descending=True, stable=True))
        R = torch.cat([A[:, r:], B], dim=1)
    return R


def topk_equal_blocks_vectorised(scores, k, S):
    """bool [B, R * S]: the k[b, r] best of every contiguous block of S scores, one batched
    ``topk(kmax)`` (largest budget), then a rank mask. k [B, R] on the scores' device."""
    B, R = k.shape
    kmax = int(k.max()) if k.numel() else 0
    best = scores.view(B, R, S).topk(kmax, dim=-1).indices
    hit = torch.arange(kmax, device=scores.device) < k[..., None]
    return torch.zeros(B, R, S, dtype=torch.bool, device=scores.device).scatter_(-1, best, hit).view(B, R * S)


def window_argmax_vectorised(scores, exclude, window):
    """bool [B, H, W]: the best non-excluded cell per window (H, W multiples of the window): excluded
    cells -> -inf in a [B, H/wh, W/ww, wh*ww] view, max + argmax, one scatter back."""
    B, H, W = scores.shape
    wh, ww = window
    cells = scores.float().masked_fill(exclude, float("-inf")).view(B, H // wh, wh, W // ww, ww).transpose(2, 3)
    best, where = cells.reshape(B, H // wh, W // ww, wh * ww).max(-1)
    hit = torch.zeros(B, H // wh, W // ww, wh * ww, dtype=torch.bool, device=scores.device)
    hit.scatter_(-1, where[..., None], (best > float("-inf"))[..., None])
    return hit.view(B, H // wh, W // ww, wh, ww).transpose(2, 3).reshape(B, H, W)


def dedup_gram_once(x, residual, n_keep, step=8, dtype=torch.float32):
    """VisPruner's rounds with the cosine Gram matrix of the ranked candidates computed once in
    ``dtype`` (one bmm), then vectorised rounds: A's rows gathered by ``index_select`` from the
    flattened Gram matrix, B as an additive -inf column mask, ``amax``, a stable argsort. Same
    inputs and output as ``published_dedup_loop``."""
    Bn, n = residual.shape
    C = x.shape[-1]
    unit = F.normalize(torch.gather(x, 1, residual[..., None].expand(-1, -1, C)).to(dtype), dim=-1)
    gram = torch.bmm(unit, unit.transpose(1, 2)).view(Bn * n, n)
    offsets = (torch.arange(Bn, device=x.device) * n)[:, None]
    R = torch.arange(n, device=x.device).expand(Bn, n)
    outside = torch.full((Bn, n), float("-inf"), dtype=dtype, device=x.device)
    while (r := min(step, R.shape[1] - n_keep)) > 0:
        A, B = R[:, ::2], R[:, 1::2]
        if B.shape[1]:
            rows = gram.index_select(0, (A + offsets).flatten()).view(Bn, -1, n)
            best = rows.add_(outside.scatter(1, B, 0.0)[:, None, :]).amax(-1)
            A = A.gather(1, best.argsort(dim=1, descending=True, stable=True))
        R = torch.cat([A[:, r:], B], dim=1)
    return residual.gather(1, R)


def budget_water_filling_vectorised(weights, total, capacity):
    """int64 [B, S]: allocate_budget's water-filling for every row at once in float64 (re-share
    until no unfixed share reaches its capacity), floors, then the leftover units to the largest
    fractional parts (stable sort: ties -> lower index)."""
    w = weights.double()
    cap = capacity.double()
    fixed = torch.zeros_like(w, dtype=torch.bool)
    while True:
        free_w = w.masked_fill(fixed, 0.0)
        rem = total.double() - cap.masked_fill(~fixed, 0.0).sum(1)
        wsum = free_w.sum(1, keepdim=True)
        n_free = (~fixed).sum(1, keepdim=True).clamp(min=1)
        share = torch.where(wsum > 0, rem[:, None] * free_w / wsum.clamp(min=1e-300), rem[:, None] / n_free)
        full = ~fixed & (share >= cap)
        if not bool(full.any()):
            break
        fixed |= full
    counts = torch.where(fixed, cap, share.floor())
    fraction = torch.where(fixed, -1.0, share - counts)
    left = (total.double() - counts.sum(1)).long()
    order = fraction.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(w.shape[1], device=w.device).expand_as(order))
    return counts.long() + (rank < left[:, None]).long()


def blocked_attention_scores(q, k, *, rows=128, heads=16):
    """float32 [B, N]: received attention (head mean, query mean), the strongest plain-torch
    formulation of the op on the CPU. Blocks of `rows` query rows x `heads` heads: one
    preallocated ``bmm(out=)`` of the pre-scaled queries, in-place max-subtract and exp, then
    normalise and sum over the rows as one ``baddbmm`` of (1 / rowsum)^T P into the accumulator.
    Never holds more than one [heads, rows, N] block. q [B, H, M, D], k [B, H, N, D] float32."""
    B, H, M, D = q.shape
    N = k.shape[2]
    qs = (q * D**-0.5).reshape(B * H, M, D)
    kt = k.reshape(B * H, N, D).transpose(1, 2)
    acc = torch.zeros(B * H, 1, N)
    block = torch.empty(heads, rows, N)
    for h0 in range(0, B * H, heads):
        hh = min(heads, B * H - h0)
        for r0 in range(0, M, rows):
            p = block[:hh, : min(rows, M - r0)]
            torch.bmm(qs[h0 : h0 + hh, r0 : r0 + p.shape[1]], kt[h0 : h0 + hh], out=p)
            p.sub_(p.amax(-1, keepdim=True)).exp_()
            acc[h0 : h0 + hh].baddbmm_(p.sum(-1).reciprocal_().unsqueeze(1), p)
    return acc.view(B, H, N).mean(1) / M
