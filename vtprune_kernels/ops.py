"""Typed entry points of the vtprune ops (docs/design.md section 2).

Each function runs one backend:

- ``"auto"``: the PyTorch dispatcher (``torch.ops.vtprune.<name>``), which picks the kernel of the
  tensors' device: C++ on the CPU, Triton (attention_scores) or CUDA C++ (the others) on CUDA.
- ``"cpu"``: the C++ CPU kernel (CPU tensors only).
- ``"reference"``: the plain PyTorch oracle in ``vtprune_kernels.reference``.
- ``"triton"``: the Triton kernel of attention_scores, called directly (CUDA tensors, or CPU
  tensors when ``TRITON_INTERPRET=1`` is set before ``vtprune_kernels`` is imported: the kernels
  are decorated at import).
- ``"cuda"``: the CUDA C++ kernel of a selection op (CUDA tensors, extension built with CUDA).

Argument checks. The C++ kernels (CPU and CUDA) check shapes, dtypes and devices themselves
(csrc/op_checks.h), and so do the fake kernels under torch.compile; the CPU kernels also check the
values (budgets, region ids, weights), which is free there. So the selection wrappers call the op
directly, which keeps their overhead to about a microsecond. ``validate=True`` adds the value
checks where the kernel cannot do them for free: on CUDA they read the data in Python (one host
sync; pass ``validate=False`` in hot paths whose values are valid by construction), and while
torch.compile traces they are skipped (data cannot be read there). The reference backend runs every
check in Python. The ops themselves never sync.
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


def _use_kernel(op: str, backend: str, anchor, check_args, args) -> bool:
    """Whether a selection op runs its C++/CUDA kernel (True) or the reference (False), after
    checking the backend. The arguments are checked in Python first only when the kernel does not
    check them: for the reference, and before an error about the backend."""
    if backend == "auto":
        return True
    if backend == "cpu" and isinstance(anchor, torch.Tensor) and anchor.is_cpu:
        return True
    check_args(*args)
    _check_backend(op, backend, _SELECTION_BACKENDS, anchor.device)
    return backend != "reference"


def _python_value_checks(validate: bool, anchor) -> bool:
    """Whether the wrapper must check values itself: asked to, off the CPU (whose kernels check
    them in C++), and not while torch.compile traces the call."""
    return (
        validate
        and isinstance(anchor, torch.Tensor)
        and not anchor.is_cpu
        and not torch.compiler.is_compiling()
    )


def _run_validated(name: str, args: tuple, backend: str, validate: bool):
    """A selection op whose values can be checked (validate=...): its kernel, or the reference."""
    check_args = getattr(validation, f"check_{name}_args")
    anchor = args[0]
    kernel = _use_kernel(name, backend, anchor, check_args, args)
    if (validate and not kernel) or _python_value_checks(validate, anchor):
        check_args(*args)
        getattr(validation, f"check_{name}_values")(*args)
    if not kernel:
        return getattr(reference, name)(*args)
    return getattr(torch.ops.vtprune, name)(*args)


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
    return _run_validated("region_topk_mask", (scores, region_ids, k), backend, validate)


def window_argmax_mask(
    scores: torch.Tensor,
    exclude: torch.Tensor,
    window: Union[int, Sequence[int]],
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """bool [B, H, W] marking the best non-excluded cell of every non-overlapping window.

    scores float [B, H, W]; exclude bool [B, H, W]; window (wh, ww) or an int for square windows,
    positive integers (a window larger than the grid is one partial window). Edge windows may be
    partial; ties -> first cell in raster order inside the window; a window whose cells are all
    excluded marks nothing.
    """
    args = (scores, exclude, list(validation.window_size(window)))
    if _use_kernel("window_argmax_mask", backend, scores, validation.check_window_argmax_mask_args, args):
        return torch.ops.vtprune.window_argmax_mask(*args)
    return reference.window_argmax_mask(*args)


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

    x [B, N, C] features; candidates bool [B, N]; order_scores float [B, N]; n_keep int64 [B];
    step a positive int. Rounds of at most ``step`` drops on the candidates ranked by order_scores,
    each dropping the even-position tokens most similar (cosine) to an odd-position one (see
    reference.py). Cosines are float64 values of one formula whatever the backend
    (``reference.cosine_gram``): identical feature vectors get bitwise-identical cosines, and a
    vector's cosine with an identical one is exactly 1, so duplicates tie exactly and rank by position.
    Memory on CUDA: the float64 cosine Gram matrix of each image with its rows sorted (12 bytes per
    entry kept, ~48 inside the sort); images run in chunks of <= 2**23 entries, so the extra memory
    is ~400 MiB or one image (N=3000: 0.43 GB; N=9000: 3.9 GB). The CPU kernel holds one image's
    float32 Gram matrix (4 bytes per entry) and the float64 cosines it verifies.
    """
    step = validation.integer("step", step, 1)
    return _run_validated("cosine_dedup_mask", (x, candidates, order_scores, n_keep, step), backend, validate)


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
    Water-filling in exact rational arithmetic, then one rounding by largest fractional part (equal
    fractional parts are equal: ties -> lower index).
    """
    return _run_validated("allocate_budget", (weights, total, capacity), backend, validate)
