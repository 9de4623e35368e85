"""What the published methods do with plain torch: the baselines of the selection benchmarks.

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


def window_unfold_argmax(scores, exclude, window):
    """bool [B, H, W]: excluded cells -> -inf, windows unfolded, argmax (first maximum), scattered
    back; windows with every cell excluded mark nothing. H, W must be multiples of the window."""
    B, H, W = scores.shape
    wh, ww = window
    windows = scores.float().masked_fill(exclude, float("-inf")).view(B, H // wh, wh, W // ww, ww)
    windows = windows.permute(0, 1, 3, 2, 4).reshape(B, H // wh, W // ww, wh * ww)
    any_allowed = (~exclude).view(B, H // wh, wh, W // ww, ww).any(4).any(2)
    hit = F.one_hot(windows.argmax(-1), wh * ww).bool() & any_allowed[..., None]
    return hit.view(B, H // wh, W // ww, wh, ww).permute(0, 1, 3, 2, 4).reshape(B, H, W)


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
