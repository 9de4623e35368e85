"""Argument checks of the vtprune ops, in Python (the C++ kernels repeat them in csrc/op_checks.h).

``check_*_args`` look at shapes, dtypes and devices only: no data is read, nothing syncs.
``check_*_values`` read the data (budgets, region ids, NaN weights): free on the CPU, one host
sync on CUDA, which is why ``vtprune_kernels.ops`` lets hot paths skip them (``validate=False``).
Every error names the argument and what was expected.
"""
from __future__ import annotations

import operator

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
QUERY_REDUCES = ("sum", "mean", "max")
HEAD_REDUCES = ("mean", "max", "none")
MAX_HEAD_DIM = 256
INT64_MAX = 2**63 - 1


def _fail(message: str):
    raise ValueError(message)


def check_tensor(name, t, ndim, dtypes):
    """``t`` is a tensor of ``ndim`` dimensions with a dtype in ``dtypes`` (errors name ``name``)."""
    if not isinstance(t, torch.Tensor):
        _fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        _fail(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        _fail(f"{name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")


def _same_device(ref_name, ref, **others):
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            _fail(f"{name} is on {t.device} but {ref_name} is on {ref.device}: all tensors must share one device")


def _shape(name, t, expected):
    if tuple(t.shape) != tuple(expected):
        _fail(f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def check_attention_scores_args(q, k, scale, query_reduce, head_reduce, causal, lse):
    check_tensor("q", q, 4, FLOAT_DTYPES)
    check_tensor("k", k, 4, FLOAT_DTYPES)
    if k.dtype != q.dtype:
        _fail(f"k must have the dtype of q ({q.dtype}), got {k.dtype}")
    _same_device("q", q, k=k, lse=lse)
    B, Hq, M, D = q.shape
    if k.shape[0] != B or k.shape[3] != D:
        _fail(f"k must have shape [B={B}, Hk, N, D={D}] to match q {tuple(q.shape)}, got {tuple(k.shape)}")
    Hk, N = k.shape[1], k.shape[2]
    if Hq == 0:
        _fail("q must have at least one head (Hq >= 1)")
    if Hk == 0 or Hq % Hk != 0:
        _fail(f"k has {Hk} heads; the {Hq} query heads of q must be a multiple of it (GQA)")
    if D == 0 or D > MAX_HEAD_DIM:
        _fail(f"q head dim D={D} must be in [1, {MAX_HEAD_DIM}]")
    if M == 0:
        _fail("q must have at least one query row (M >= 1)")
    if N == 0:
        _fail("k must have at least one key (N >= 1)")
    if causal and M > N:
        _fail(f"causal=True needs M <= N (q has {M} rows, k has {N} keys)")
    if query_reduce not in QUERY_REDUCES:
        _fail(f"query_reduce must be one of {QUERY_REDUCES}, got {query_reduce!r}")
    if head_reduce not in HEAD_REDUCES:
        _fail(f"head_reduce must be one of {HEAD_REDUCES}, got {head_reduce!r}")
    if scale is not None and not isinstance(scale, (int, float)):
        _fail(f"scale must be a float or None, got {type(scale).__name__}")
    if lse is not None:
        check_tensor("lse", lse, 3, (torch.float32,))
        _shape("lse", lse, (B, Hq, M))


def check_region_topk_mask_args(scores, region_ids, k):
    check_tensor("scores", scores, 2, FLOAT_DTYPES)
    if not isinstance(region_ids, torch.Tensor) or region_ids.dim() not in (1, 2):
        _fail(f"region_ids must be an int64 tensor [B, N] or [N], got {getattr(region_ids, 'shape', region_ids)}")
    check_tensor("region_ids", region_ids, region_ids.dim(), (torch.int64,))
    check_tensor("k", k, 2, (torch.int64,))
    _same_device("scores", scores, region_ids=region_ids, k=k)
    B, N = scores.shape
    if tuple(region_ids.shape) not in ((B, N), (N,)):
        _fail(f"region_ids must have shape ({B}, {N}) or ({N},), got {tuple(region_ids.shape)}")
    if k.shape[0] != B:
        _fail(f"k must have shape [B={B}, R], got {tuple(k.shape)}")


def check_region_topk_mask_values(scores, region_ids, k):
    R = k.shape[1]
    ids = region_ids.expand(scores.shape)
    if ids.numel() and bool(((ids < 0) | (ids >= R)).any()):
        _fail(f"region_ids values must lie in [0, R={R}) where R = k.shape[1]")
    if bool((k < 0).any()):
        _fail("k must be non-negative")
    sizes = torch.zeros_like(k).scatter_add_(1, ids, torch.ones_like(ids)) if R else k
    if bool((k > sizes).any()):
        b, r = (k > sizes).nonzero()[0].tolist()
        _fail(f"k[{b}, {r}] = {int(k[b, r])} is larger than region {r} of row {b} ({int(sizes[b, r])} tokens)")


def integer(name, value, minimum):
    """``value`` as a Python int in [minimum, 2**63 - 1] (an int64 of the op schema). Anything that
    is not an integer (float, bool, None, str) is rejected: nothing is silently truncated."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        _fail(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    v = operator.index(value)
    if not minimum <= v <= INT64_MAX:
        _fail(f"{name} must be an integer in [{minimum}, 2**63 - 1], got {v}")
    return v


def window_size(window):
    """(wh, ww) from ``window``: one positive int (square windows) or a pair of them."""
    if isinstance(window, (list, tuple)):
        if len(window) != 2:
            _fail(f"window must be an int or a pair of ints (wh, ww), got {tuple(window)}")
        return integer("window", window[0], 1), integer("window", window[1], 1)
    if isinstance(window, bool) or not hasattr(type(window), "__index__"):
        _fail(f"window must be an int or a pair of ints (wh, ww), got {window!r} ({type(window).__name__})")
    size = integer("window", window, 1)
    return size, size


def check_window_argmax_mask_args(scores, exclude, window):
    check_tensor("scores", scores, 3, FLOAT_DTYPES)
    check_tensor("exclude", exclude, 3, (torch.bool,))
    _same_device("scores", scores, exclude=exclude)
    _shape("exclude", exclude, scores.shape)
    if not isinstance(window, (list, tuple)) or len(window) != 2:
        _fail(f"window must be two positive sizes (wh, ww), got {window!r}")
    window_size(window)


def check_cosine_dedup_mask_args(x, candidates, order_scores, n_keep, step):
    check_tensor("x", x, 3, FLOAT_DTYPES)
    check_tensor("candidates", candidates, 2, (torch.bool,))
    check_tensor("order_scores", order_scores, 2, FLOAT_DTYPES)
    check_tensor("n_keep", n_keep, 1, (torch.int64,))
    _same_device("x", x, candidates=candidates, order_scores=order_scores, n_keep=n_keep)
    B, N, _ = x.shape
    _shape("candidates", candidates, (B, N))
    _shape("order_scores", order_scores, (B, N))
    _shape("n_keep", n_keep, (B,))
    integer("step", step, 1)


def check_cosine_dedup_mask_values(x, candidates, order_scores, n_keep, step):
    if bool((n_keep < 0).any()):
        _fail("n_keep must be non-negative")


def check_allocate_budget_args(weights, total, capacity):
    check_tensor("weights", weights, 2, FLOAT_DTYPES + (torch.float64,))
    check_tensor("total", total, 1, (torch.int64,))
    check_tensor("capacity", capacity, 2, (torch.int64,))
    _same_device("weights", weights, total=total, capacity=capacity)
    B, S = weights.shape
    _shape("total", total, (B,))
    _shape("capacity", capacity, (B, S))
    if S == 0:
        _fail("weights must have at least one region (S >= 1)")


def check_allocate_budget_values(weights, total, capacity):
    if bool((~torch.isfinite(weights) | (weights < 0)).any()):
        _fail("weights must be finite and non-negative (found a negative value, inf or NaN)")
    if bool((capacity < 0).any()):
        _fail("capacity must be non-negative")
    if bool((total < 0).any()):
        _fail("total must be non-negative")
    over = total > saturated_row_sum(capacity)
    if bool(over.any()):
        b = int(over.nonzero()[0])
        _fail(f"total[{b}] = {int(total[b])} exceeds the summed capacity {sum(capacity[b].tolist())}")


def saturated_row_sum(values):
    """int64 [B]: the row sums of non-negative int64 values [B, S], clamped to 2**63 - 1 instead of
    overflowing (capacities near 2**62 are valid; their int64 sum is not). Exact below the clamp:
    the values are summed as 32-bit halves, whose sums cannot overflow for S < 2**31."""
    low = (values & 0xFFFFFFFF).sum(1)  # < 2**63
    high = (values >> 32).sum(1) + (low >> 32)  # < 2**62
    fits = high < 2**31  # then high * 2**32 + low < 2**63
    exact = (high.clamp(max=2**31 - 1) << 32) + (low & 0xFFFFFFFF)
    return torch.where(fits, exact, torch.full_like(exact, INT64_MAX))
