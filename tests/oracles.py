"""Independent oracles of the selection ops: the contract (DESIGN.md 2.2-2.5) in plain Python on
lists, with exact arithmetic where the contract speaks of real numbers. Written apart from
``vtprune_kernels.reference`` (no torch ops, no shared helpers) so that a mistake there shows up.

- ``region_topk``: sort each region's members by (NaN last, score descending, index).
- ``window_argmax``: walk each window in raster order.
- ``cosine_dedup``: the rounds with cosines compared exactly (rationals: sign, then D^2 P' vs D'^2 P),
  so that mathematically equal cosines tie whatever their floating-point values.
- ``allocate_budget``: water-filling in rationals.
Inputs are small (these are slow); every function takes and returns nested Python lists.
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction


def _score_key(value: float, index: int):
    """Sort key of the tie rule: higher first, NaN after every number, then the lower index."""
    if math.isnan(value):
        return (1, 0.0, index)
    return (0, -value, index)


def region_topk(scores, region_ids, k):
    """scores [B][N] floats, region_ids [N] or [B][N] ints, k [B][R] -> mask [B][N] bools."""
    out = []
    for b, row in enumerate(scores):
        ids = region_ids[b] if isinstance(region_ids[0], list) else region_ids
        mask = [False] * len(row)
        for r, keep in enumerate(k[b]):
            members = sorted((j for j in range(len(row)) if ids[j] == r), key=lambda j: _score_key(row[j], j))
            for j in members[:keep]:
                mask[j] = True
        out.append(mask)
    return out


def window_argmax(scores, exclude, window):
    """scores, exclude [B][H][W]; window (wh, ww) -> mask [B][H][W]: the first best allowed cell."""
    wh, ww = window
    out = []
    for grid, banned in zip(scores, exclude):
        H, W = len(grid), len(grid[0]) if grid else 0
        mask = [[False] * W for _ in range(H)]
        for i0 in range(0, H, wh):
            for j0 in range(0, W, ww):
                best = None
                for i in range(i0, min(H, i0 + wh)):
                    for j in range(j0, min(W, j0 + ww)):
                        if banned[i][j]:
                            continue
                        if best is None or _score_key(grid[i][j], 0)[:2] < _score_key(grid[best[0]][best[1]], 0)[:2]:
                            best = (i, j)
                if best is not None:
                    mask[best[0]][best[1]] = True
        out.append(mask)
    return out


class _ExactCosine:
    """cos(x, y) as the pair (dot, max(|x|^2, eps2) * max(|y|^2, eps2)) of rationals: value dot / sqrt(p).
    NaN when a vector holds a NaN or inf (F.normalize semantics); eps2 = 1e-24 as a float64."""

    EPS2 = Fraction(1e-24)

    def __init__(self, x, y):
        self.nan = not all(math.isfinite(v) for v in x + y)
        if self.nan:
            return
        xf, yf = [Fraction(v) for v in x], [Fraction(v) for v in y]
        self.dot = sum(a * b for a, b in zip(xf, yf))
        self.p = max(sum(a * a for a in xf), self.EPS2) * max(sum(b * b for b in yf), self.EPS2)

    def compare(self, other) -> int:
        """-1, 0, 1 as self < other, ==, > (both not NaN)."""
        s, t = (self.dot > 0) - (self.dot < 0), (other.dot > 0) - (other.dot < 0)
        if s != t:
            return -1 if s < t else 1
        if s == 0:
            return 0
        lhs, rhs = self.dot * self.dot * other.p, other.dot * other.dot * self.p  # |self| vs |other|, squared
        c = (lhs > rhs) - (lhs < rhs)
        return c if s > 0 else -c


def cosine_dedup(x, candidates, order_scores, n_keep, step):
    """x [B][N][C], candidates [B][N] bools, order_scores [B][N], n_keep [B] -> mask [B][N]."""
    out = []
    for b in range(len(x)):
        N = len(candidates[b])
        R = sorted((j for j in range(N) if candidates[b][j]), key=lambda j: _score_key(order_scores[b][j], j))
        while (r := min(step, len(R) - n_keep[b])) > 0:
            A, B = R[0::2], R[1::2]
            # m(a): the largest exact cosine over B (None: -inf for an empty B; "nan" if any is NaN)
            maxima = []
            for a in A:
                cosines = [_ExactCosine(x[b][a], x[b][j]) for j in B]
                if not cosines:
                    maxima.append(None)
                elif any(c.nan for c in cosines):
                    maxima.append("nan")
                else:
                    maxima.append(functools.reduce(lambda u, v: u if u.compare(v) >= 0 else v, cosines))

            def ranks_before(i, j):  # (m descending, NaN last; stable: position in A)
                mi, mj = maxima[i], maxima[j]
                if mi == "nan" or mj == "nan":
                    order = (mi == "nan") - (mj == "nan")
                elif mi is None or mj is None:
                    order = (mi is None) - (mj is None)
                else:
                    order = -mi.compare(mj)
                return order if order != 0 else i - j

            ranked = sorted(range(len(A)), key=functools.cmp_to_key(ranks_before))
            R = [A[i] for i in ranked[min(r, len(A)) :]] + B
        out.append([j in set(R) for j in range(N)])
    return out


def allocate_budget(weights, total, capacity):
    """weights [B][S] floats, total [B], capacity [B][S] ints -> counts [B][S] (rational water-filling)."""
    out = []
    for w_row, t, caps in zip(weights, total, capacity):
        S = len(caps)
        w = [Fraction(v) for v in w_row]
        counts = [None] * S  # a fixed region's count; None while free
        rem = Fraction(t)
        while True:
            free = [i for i in range(S) if counts[i] is None]
            if not free:
                break
            wsum = sum(w[i] for i in free)
            shares = {i: rem * w[i] / wsum if wsum else rem / len(free) for i in free}
            reached = [i for i in free if shares[i] >= caps[i]]
            if not reached:
                break
            for i in reached:
                counts[i] = caps[i]
            rem -= sum(caps[i] for i in reached)
        free = [i for i in range(S) if counts[i] is None]
        for i in free:
            counts[i] = math.floor(shares[i])
        leftover = t - sum(counts)
        by_fraction = sorted(free, key=lambda i: (counts[i] - shares[i], i))  # largest fraction first
        for i in by_fraction[:leftover]:
            counts[i] += 1
        out.append(counts)
    return out
