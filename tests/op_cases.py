"""Input builders for the op tests and benchmarks (CPU or any device), all seeded.

Every builder takes a ``seed`` and returns the op's positional inputs, valid unless said
otherwise. Shapes follow docs/design.md section 2:

- ``attention_inputs`` -> q [B, Hq, M, D], k [B, Hk, N, D]; ``layout`` makes them non-contiguous.
- ``lse_from_logits`` / ``lse_from_flash`` -> lse float32 [B, Hq, M].
- ``region_inputs`` -> scores [B, N], region_ids [B, N] or [N], k [B, R].
- ``window_inputs`` -> scores [B, H, W], exclude [B, H, W].
- ``dedup_inputs`` -> x [B, N, C], candidates [B, N], order_scores [B, N], n_keep [B].
- ``exact_unit_vectors`` -> [n, C] rows with entries in {-0.5, 0, 0.5} and unit norm (exact cosines).
- ``flat_region_features`` -> [B, N, C] Gaussian rows, most of them copies of a few (flat image regions).
- ``budget_inputs`` -> weights [B, S], total [B], capacity [B, S]; ``BUDGET_HAND_CASES``: worked examples.

``run_op`` calls an op through one of its entry points (``ENTRY_POINTS``).
"""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
QUERY_REDUCES = ("sum", "mean", "max")
HEAD_REDUCES = ("mean", "max", "none")
LAYOUTS = ("contiguous", "transposed", "sliced")
ENTRY_POINTS = ("cpu", "auto", "torch.ops")  # ops.<name>(backend=...) or torch.ops.vtprune.<name>


def run_op(name: str, *args, via: str = "torch.ops", **kwargs):
    """torch.ops.vtprune.<name>(*args, **kwargs) for via="torch.ops", else
    vtprune_kernels.ops.<name>(*args, backend=via, **kwargs)."""
    if via == "torch.ops":
        return getattr(torch.ops.vtprune, name)(*args, **kwargs)
    from vtprune_kernels import ops

    return getattr(ops, name)(*args, backend=via, **kwargs)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as t [B, H, S, D] in another memory layout.

    "transposed": a [B, S, H, D] buffer viewed through transpose(1, 2) (how attention layers
    produce q/k); "sliced": every other element of a buffer twice as wide in the last dim.
    """
    if layout == "contiguous":
        return t.contiguous()
    if layout == "transposed":
        out = t.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "sliced":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        out = wide[..., ::2]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return out


def attention_inputs(B, Hq, Hk, M, N, D, dtype=torch.float32, *, seed=0, layout="contiguous"):
    """q [B, Hq, M, D], k [B, Hk, N, D], standard normal."""
    g = generator(seed)
    q = torch.randn(B, Hq, M, D, generator=g).to(dtype)
    k = torch.randn(B, Hk, N, D, generator=g).to(dtype)
    return with_layout(q, layout), with_layout(k, layout)


def causal_visible(M: int, N: int) -> torch.Tensor:
    """bool [M, N]: row i (absolute position N-M+i) sees keys j <= N-M+i."""
    return torch.arange(N) <= (N - M + torch.arange(M))[:, None]


def lse_from_logits(q, k, *, scale=None, causal=False):
    """float32 [B, Hq, M]: natural-log row normaliser of scale * q.k, computed in float64."""
    Hq, M, D = q.shape[1], q.shape[2], q.shape[3]
    N = k.shape[2]
    scale = D**-0.5 if scale is None else scale
    kk = k.double().repeat_interleave(Hq // k.shape[1], dim=1)
    logits = scale * (q.double() @ kk.transpose(-1, -2))
    if causal:
        logits = logits.masked_fill(~causal_visible(M, N), float("-inf"))
    return logits.logsumexp(-1).float()


def lse_from_flash(q, k, *, scale=None, causal=False):
    """float32 [B, Hq, M] as returned by torch's CPU flash attention (the model's own LSE).

    torch's causal mask is top-left aligned, the op's is right-aligned: they agree when M == N.
    """
    assert not causal or q.shape[2] == k.shape[2], "flash's causal mask matches the op's only for M == N"
    kk = k.float().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q.float(), kk, kk, dropout_p=0.0, is_causal=causal, scale=scale
    )
    return out[1]


def region_inputs(B, N, R, dtype=torch.float32, *, seed=0, shared_ids=False, tie_levels=None, nan_fraction=0.0):
    """scores [B, N], region_ids ([N] if shared_ids else [B, N]) in [0, R), k [B, R] in [0, size].

    tie_levels: scores drawn from that many integer levels (many exact ties); nan_fraction: share of
    NaN scores.
    """
    g = generator(seed)
    if tie_levels:
        scores = torch.randint(0, tie_levels, (B, N), generator=g).to(dtype)
    else:
        scores = torch.randn(B, N, generator=g).to(dtype)
    if nan_fraction:
        scores[torch.rand(B, N, generator=g) < nan_fraction] = float("nan")
    ids = torch.randint(0, max(R, 1), (N,) if shared_ids else (B, N), generator=g)
    sizes = torch.zeros(B, R, dtype=torch.int64).scatter_add_(1, ids.expand(B, N), torch.ones(B, N, dtype=torch.int64))
    k = (torch.rand(B, R, generator=g) * (sizes + 1)).long().clamp(max=sizes)
    return scores, ids, k


def window_inputs(B, H, W, dtype=torch.float32, *, seed=0, tie_levels=None, exclude_fraction=0.5, nan_fraction=0.0):
    """scores [B, H, W], exclude bool [B, H, W]."""
    g = generator(seed)
    if tie_levels:
        scores = torch.randint(0, tie_levels, (B, H, W), generator=g).to(dtype)
    else:
        scores = torch.randn(B, H, W, generator=g).to(dtype)
    if nan_fraction:
        scores[torch.rand(B, H, W, generator=g) < nan_fraction] = float("nan")
    exclude = torch.rand(B, H, W, generator=g) < exclude_fraction
    return scores, exclude


def exact_unit_vectors(n: int, C: int, *, seed=0) -> torch.Tensor:
    """[n, C] (C >= 4): four entries of +-0.5 per row, the rest 0, so every norm is exactly 1 and
    every cosine is an exact multiple of 0.25 in any precision: many exact ties."""
    g = generator(seed)
    x = torch.zeros(n, C)
    for i in range(n):
        cols = torch.randperm(C, generator=g)[:4]
        x[i, cols] = 0.5 * (2 * torch.randint(0, 2, (4,), generator=g) - 1).float()
    return x


def flat_region_features(B, N, C, *, seed=0, regions=4, unique_fraction=0.25):
    """[B, N, C]: what flat image regions give a vision tower: most tokens are exact copies of one of
    `regions` Gaussian vectors (identical patch tokens), the rest unique Gaussian vectors; one token
    per image is a zero vector. Equal cosines everywhere, computed from vectors at different positions."""
    g = generator(seed)
    x = torch.randn(B, N, C, generator=g)
    templates = torch.randn(B, regions, C, generator=g)
    which = torch.randint(0, regions, (B, N), generator=g)
    copy = torch.rand(B, N, generator=g) >= unique_fraction
    x = torch.where(copy[..., None], templates.gather(1, which[..., None].expand(-1, -1, C)), x)
    x[:, N // 2] = 0.0
    return x


def dedup_inputs(B, N, C, dtype=torch.float32, *, seed=0, candidate_fraction=0.8, exact=False, tie_levels=None):
    """x [B, N, C], candidates [B, N], order_scores [B, N], n_keep [B] in [0, N].

    exact: features from exact_unit_vectors (exact cosine ties); tie_levels: order_scores from
    that many integer levels.
    """
    g = generator(seed)
    if exact:
        x = torch.stack([exact_unit_vectors(N, C, seed=seed * 1000 + b) for b in range(B)]).to(dtype)
    else:
        x = torch.randn(B, N, C, generator=g).to(dtype)
    candidates = torch.rand(B, N, generator=g) < candidate_fraction
    if tie_levels:
        order_scores = torch.randint(0, tie_levels, (B, N), generator=g).to(dtype)
    else:
        order_scores = torch.rand(B, N, generator=g).to(dtype)
    n_keep = torch.randint(0, N + 1, (B,), generator=g)
    return x, candidates, order_scores, n_keep


def budget_inputs(B, S, dtype=torch.float32, *, seed=0, zero_fraction=0.2, max_capacity=40):
    """weights [B, S] >= 0 (some zero), total [B] <= sum(capacity), capacity [B, S] in [0, max_capacity]."""
    g = generator(seed)
    weights = torch.rand(B, S, generator=g, dtype=torch.float64)
    weights[torch.rand(B, S, generator=g) < zero_fraction] = 0.0
    capacity = torch.randint(0, max_capacity + 1, (B, S), generator=g)
    total = (torch.rand(B, generator=g, dtype=torch.float64) * (capacity.sum(1) + 1)).long().clamp(max=capacity.sum(1))
    return weights.to(dtype), total, capacity


# allocate_budget worked by hand from docs/design.md 2.5: (weights, total, capacity, expected counts), one row.
BUDGET_HAND_CASES = [
    # equal thirds of 10: floor 3 each, the leftover unit to the lowest index
    ([1.0, 1.0, 1.0], 10, [10, 10, 10], [4, 3, 3]),
    # share 8 >= capacity 2: fixed at 2, the remaining 8 re-shared over equal weights
    ([8.0, 1.0, 1.0], 10, [2, 10, 10], [2, 4, 4]),
    # all weights zero: equal shares 1.5, the two leftover units to the lowest indices
    ([0.0, 0.0, 0.0, 0.0], 6, [5, 5, 5, 5], [2, 2, 1, 1]),
    # the weight sum need not be 1; fractional parts 0.5/0.25/0.25: one unit to region 0
    ([2.0, 1.0, 1.0], 5, [9, 9, 9], [3, 1, 1]),
    # a zero weight gets nothing while others have room; total 0 gives nothing
    ([0.0, 3.0], 4, [4, 4], [0, 4]),
    ([0.5, 0.5], 0, [3, 3], [0, 0]),
    # capacity binds in two rounds: 12 * 6/8 = 9 >= 3, then 9 * 1/2 = 4.5 >= 4, rest 5 to the last
    ([6.0, 1.0, 1.0], 12, [3, 4, 20], [3, 4, 5]),
    # total equal to the summed capacity fills every region (the zero weight last, by equal share)
    ([0.0, 1.0, 5.0], 9, [2, 3, 4], [2, 3, 4]),
]
