"""Independent oracles of the selection ops: the contract (docs/design.md 2.2-2.5) in plain Python on
lists, with exact arithmetic where the contract speaks of real numbers. Written apart from
``vtprune_kernels.reference`` (no torch ops, no shared helpers) so that a mistake there shows up.

- ``region_topk``: sort each region's members by (NaN last, score descending, index).
- ``window_argmax``: walk each window in raster order.
- ``cosine_dedup``: the rounds with cosines compared exactly (rationals: sign, then D^2 P' vs D'^2 P).
  The contract ties exactly the cosines that are equal by construction (identical vectors, or equal
  up to a power of two: cosine 1; a zero vector: cosine 0; the same pair of vectors at other
  positions); other cosines rank by their float64 values, which can merge real values closer than
  float64 resolves. Where the ranking would hinge on two maxima that are within 1e-9 of each other
  without being equal by construction, the oracle raises ``Ambiguous`` (the caller skips the case).
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


class Ambiguous(Exception):
    """The contract does not fix the ranking of this input (see the module docstring)."""


def _power_of_two_multiple(x, y) -> bool:
    """y == 2^e * x for some integer e (x, y finite, non-zero)."""
    if any((a == 0) != (b == 0) for a, b in zip(x, y)):
        return False
    ratios = {Fraction(b) / Fraction(a) for a, b in zip(x, y) if a != 0}
    if len(ratios) != 1:
        return False
    ratio = float(ratios.pop())
    return ratio > 0 and math.frexp(ratio)[0] == 0.5


class _ExactCosine:
    """cos(x, y) as the pair (dot, max(|x|^2, eps2) * max(|y|^2, eps2)) of rationals: value dot / sqrt(p).
    NaN when a vector holds a NaN or inf (F.normalize semantics); eps2 = 1e-24 as a float64. `source`
    names what fixes its floating-point value: "one", "zero", or the pair of vectors itself."""

    EPS2 = Fraction(1e-24)

    def __init__(self, x, y):
        self.nan = not all(math.isfinite(v) for v in x + y)
        if self.nan:
            return
        xf, yf = [Fraction(v) for v in x], [Fraction(v) for v in y]
        self.dot = sum(a * b for a, b in zip(xf, yf))
        self.p = max(sum(a * a for a in xf), self.EPS2) * max(sum(b * b for b in yf), self.EPS2)
        if not any(x) or not any(y):
            self.source = "zero"
        elif _power_of_two_multiple(x, y) and self.dot * self.dot == self.p:  # (not for vectors below eps)
            self.source = "one"
        else:
            self.source = tuple(sorted((tuple(x), tuple(y))))

    def compare(self, other) -> int:
        """-1, 0, 1 as self < other, ==, > (both not NaN). Raises Ambiguous for values closer than
        1e-9 (relative) that are not equal by construction."""
        s, t = (self.dot > 0) - (self.dot < 0), (other.dot > 0) - (other.dot < 0)
        if s != t:
            order = -1 if s < t else 1
        elif s == 0:
            order = 0
        else:
            lhs, rhs = self.dot * self.dot * other.p, other.dot * other.dot * self.p  # |self| vs |other|, squared
            order = (lhs > rhs) - (lhs < rhs)
            order = order if s > 0 else -order
            close = abs(lhs - rhs) <= Fraction(1, 10**9) * max(lhs, rhs)
            if close and not (order == 0 and self.source == other.source):
                raise Ambiguous()
        if order == 0 and self.source != other.source and not (s == 0 and "zero" in (self.source, other.source)):
            raise Ambiguous()
        return order


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
                else:  # the largest; equal ones must be equal by construction (one float64 value)
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
