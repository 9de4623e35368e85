"""Typed entry points of the vtprune ops (docs/design.md section 2).

Each function checks its arguments, then runs one backend:

- ``"auto"``: the PyTorch dispatcher (``torch.ops.vtprune.<name>``), which picks the kernel of the
  tensors' device: C++ on the CPU, Triton (attention_scores) or CUDA C++ (the others) on CUDA.
- ``"cpu"``: the C++ CPU kernel (CPU tensors only).
- ``"reference"``: the plain PyTorch oracle in ``vtprune_kernels.reference``.
- ``"triton"``: the Triton kernel of attention_scores, called directly (CUDA tensors, or CPU
  tensors when ``TRITON_INTERPRET=1`` is set before ``vtprune_kernels`` is imported: the kernels
  are decorated at import).
- ``"cuda"``: the CUDA C++ kernel of a selection op (CUDA tensors, extension built with CUDA).

``validate=True`` also checks values (budgets, region ids, weights). That reads the data: free
on the CPU, one host sync on CUDA; pass ``validate=False`` in hot paths whose values are valid by
construction. The ops themselves never sync.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from . import _library, reference, validation

_ATTENTION_BACKENDS = ("auto", "cpu", "reference", "triton")
_SELECTION_BACKENDS = ("auto", "cpu", "reference", "cuda")


def _check_backend(op: str, backend: str, allowed: Sequence[str], device: torch.device):
    if backend not in allowed:
        raise ValueError(f"{op}: backend must be one of {tuple(allowed)}, got {backend!r}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"{op}: backend='cpu' needs CPU tensors, got tensors on {device}")
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{op}: backend='cuda' needs CUDA tensors, got tensors on {device}")
        if not _library.HAS_CUDA_KERNELS:
            raise RuntimeError(f"{op}: backend='cuda' needs vtprune_kernels built against a CUDA torch")
    if backend == "triton" and not _library.HAS_TRITON:
        raise RuntimeError(f"{op}: backend='triton' needs the triton package")


def attention_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: Optional[float] = None,
    query_reduce: str = "mean",
    head_reduce: str = "mean",
    causal: bool = False,
    lse: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention received by every key, without materialising the attention matrix.

    q [B, Hq, M, D], k [B, Hk, N, D] (fp32/fp16/bf16, Hq % Hk == 0, D <= 256, any strides);
    lse optional float32 [B, Hq, M], the natural-log row normaliser the model's attention already
    computed. p[b,h,i,j] = softmax over the keys row i sees (causal: right-aligned, j <= N-M+i).
    Returns float32 [B, N] = query_reduce_i head_reduce_h p  ([B, Hq, N] with head_reduce="none").
    query_reduce: "sum" | "mean" | "max"; head_reduce: "mean" | "max" | "none"; scale defaults to D**-0.5.
    """
    validation.check_attention_scores_args(q, k, scale, query_reduce, head_reduce, causal, lse)
    _check_backend("attention_scores", backend, _ATTENTION_BACKENDS, q.device)
    kwargs = dict(scale=scale, query_reduce=query_reduce, head_reduce=head_reduce, causal=causal, lse=lse)
    if backend == "reference":
        return reference.attention_scores(q, k, **kwargs)
    if backend == "triton":
        from . import _triton_backend

        return _triton_backend.attention_scores(q, k, **kwargs)
    return torch.ops.vtprune.attention_scores(q, k, **kwargs)


def region_topk_mask(
    scores: torch.Tensor,
    region_ids: torch.Tensor,
    k: torch.Tensor,
    *,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """bool [B, N] marking the k[b, r] best-scoring tokens of every region r of every row b.

    scores float [B, N]; region_ids int64 [B, N] or [N] with values in [0, R); k int64 [B, R]
    (a device tensor). Ties -> lower index; NaN ranks below every number. k[b, r] larger than the
    region or negative is an error.
    """
    validation.check_region_topk_mask_args(scores, region_ids, k)
    _check_backend("region_topk_mask", backend, _SELECTION_BACKENDS, scores.device)
    if validate:
        validation.check_region_topk_mask_values(scores, region_ids, k)
    if backend == "reference":
        return reference.region_topk_mask(scores, region_ids, k)
    return torch.ops.vtprune.region_topk_mask(scores, region_ids, k)


def window_argmax_mask(
    scores: torch.Tensor,
    exclude: torch.Tensor,
    window: Union[int, Sequence[int]],
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """bool [B, H, W] marking the best non-excluded cell of every non-overlapping window.

    scores float [B, H, W]; exclude bool [B, H, W]; window (wh, ww) or an int for square windows.
    Edge windows may be partial; ties -> first cell in raster order inside the window; a window
    whose cells are all excluded marks nothing.
    """
    window = (int(window), int(window)) if isinstance(window, int) else tuple(int(w) for w in window)
    validation.check_window_argmax_mask_args(scores, exclude, window)
    _check_backend("window_argmax_mask", backend, _SELECTION_BACKENDS, scores.device)
    if backend == "reference":
        return reference.window_argmax_mask(scores, exclude, window)
    return torch.ops.vtprune.window_argmax_mask(scores, exclude, list(window))


def cosine_dedup_mask(
    x: torch.Tensor,
    candidates: torch.Tensor,
    order_scores: torch.Tensor,
    n_keep: torch.Tensor,
    step: int = 8,
    *,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """bool [B, N] marking VisPruner's n_keep[b] diverse tokens among the candidates.

    x [B, N, C] features; candidates bool [B, N]; order_scores float [B, N]; n_keep int64 [B].
    Rounds of at most ``step`` drops on the candidates ranked by order_scores, each dropping the
    even-position tokens most similar (cosine) to an odd-position one (see reference.py).
    Memory on CUDA: the float64 cosine Gram matrix of each image with its rows sorted (12 bytes per
    entry kept, ~48 inside the sort); images run in chunks of <= 2**23 entries, so the extra memory
    is ~400 MiB or one image (N=3000: 0.43 GB; N=9000: 3.9 GB). The CPU kernel holds one image's
    float64 Gram matrix (8 bytes per entry).
    """
    validation.check_cosine_dedup_mask_args(x, candidates, order_scores, n_keep, step)
    _check_backend("cosine_dedup_mask", backend, _SELECTION_BACKENDS, x.device)
    if validate:
        validation.check_cosine_dedup_mask_values(x, candidates, order_scores, n_keep, step)
    if backend == "reference":
        return reference.cosine_dedup_mask(x, candidates, order_scores, n_keep, step)
    return torch.ops.vtprune.cosine_dedup_mask(x, candidates, order_scores, n_keep, step)


def allocate_budget(
    weights: torch.Tensor,
    total: torch.Tensor,
    capacity: torch.Tensor,
    *,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """int64 [B, S] token counts per region, summing exactly to total[b], each <= capacity.

    weights float [B, S] (non-negative, any sum); total int64 [B]; capacity int64 [B, S].
    Water-filling in float64, then one rounding by largest fractional part (ties -> lower index).
    """
    validation.check_allocate_budget_args(weights, total, capacity)
    _check_backend("allocate_budget", backend, _SELECTION_BACKENDS, weights.device)
    if validate:
        validation.check_allocate_budget_values(weights, total, capacity)
    if backend == "reference":
        return reference.allocate_budget(weights, total, capacity)
    return torch.ops.vtprune.allocate_budget(weights, total, capacity)
