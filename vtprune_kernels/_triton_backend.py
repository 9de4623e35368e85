"""The Triton path of attention_scores (docs/design.md 2.1) and its registration as the CUDA kernel of
``torch.ops.vtprune.attention_scores``.

Two launches on the current stream, no host sync:

1. ``row_lse`` (skipped when ``lse`` is given): float32 [B, Hq, M] row log-sum-exp.
2. ``column_scores``: float32 partial results [B, chunks, head slots, N], written straight into the
   output when there is one chunk and nothing to sum over heads; otherwise combined here over
   chunks (and heads, for a head mean computed per head) by one torch sum/amax, in a fixed order.

Extra memory: O(B * Hq * (M + N)). Several layers or tiles go in one launch by stacking them in B.
Kernels run compiled on CUDA tensors, or interpreted on CPU tensors when ``TRITON_INTERPRET=1``
was set before the kernels were defined (first import of vtprune_kernels).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import triton

from .triton_kernels import configs
from .triton_kernels.column_scores import column_scores_kernel
from .triton_kernels.row_lse import row_lse_kernel
from .triton_kernels.tiles import LOG2E, TAIL
from .validation import check_attention_scores_args

# TRITON_INTERPRET=1 makes @triton.jit produce interpreted functions instead of JIT kernels.
INTERPRETED = not isinstance(column_scores_kernel, triton.runtime.JITFunction)

# Programs the column pass aims for (query rows are split into chunks until it has them): a few
# waves on a 132-SM GPU. A constant, not the device's SM count, so results do not depend on the GPU.
TARGET_PROGRAMS = 1024

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


# Offsets inside a tile are int32 in the kernels (tiles.py): a row or head-dim stride times the
# widest tile extent (1024 lse rows scanned at once) must stay below 2^31. A tensor with a larger
# stride (a row step of over 2M elements, unseen in practice) is copied to a contiguous one first.
MAX_TILE_STRIDE = 2**31 // 1024

# CUDA grid limits: x up to 2^31 - 1 programs, y and z up to 65535
MAX_GRID = (2**31 - 1, 65535, 65535)


def _launch(kernel, grid, variant: configs.Variant, *args):
    for axis, (size, limit) in enumerate(zip(grid, MAX_GRID)):
        if size > limit:
            raise ValueError(
                f"attention_scores: {variant.kernel} would launch {size} programs on grid axis {axis} "
                f"(CUDA allows {limit}); split the batch (B) or the heads into several calls"
            )
    kernel[grid](*args, **variant.constexprs(upcast=INTERPRETED), **variant.launch_options())


def blocks_with_tail(n: int, block: int) -> int:
    """Programs over n rows/keys: n // block full blocks, then the rest in TAIL-sized tail blocks."""
    return n // block + triton.cdiv(n % block, TAIL.value)


def _tile_addressable(t: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """t, or a contiguous copy when a stride of its last ``dims`` dims (those walked inside a tile:
    rows and head dim of q/k, rows of lse) is too large for int32 tile offsets."""
    if max(abs(s) for s in t.stride()[-dims:]) < MAX_TILE_STRIDE:
        return t
    return t.contiguous()


def row_lse(q: torch.Tensor, k: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """float32 [B, Hq, M]: ln sum_j exp(scale * q . k) over the keys each row sees. q [B,Hq,M,D], k [B,Hk,N,D]."""
    q, k = _tile_addressable(q), _tile_addressable(k)
    B, Hq, M, D = q.shape
    Hk, N = k.shape[1], k.shape[2]
    lse = torch.empty(B, Hq, M, dtype=torch.float32, device=q.device)
    variant = configs.row_lse_variant(D, _DTYPE_NAMES[q.dtype])
    grid = (blocks_with_tail(M, variant.config.block_m) * B * Hq,)
    _launch(
        row_lse_kernel, grid, variant,
        q, k, lse,
        M, N, D, Hq, Hq // Hk, N - M if causal else N, scale * LOG2E.value,
        *q.stride(), *k.stride(), *lse.stride(),
    )  # fmt: skip
    return lse


def _row_chunks(B: int, M: int, N: int, slots: int, config: configs.LaunchConfig):
    """(rows_per_chunk, n_chunks): split the query rows until the column pass has TARGET_PROGRAMS."""
    row_blocks = triton.cdiv(M, config.block_m)
    programs = B * slots * triton.cdiv(N, config.block_n)
    wanted = max(1, min(row_blocks, triton.cdiv(TARGET_PROGRAMS, max(programs, 1))))
    rows_per_chunk = triton.cdiv(row_blocks, wanted) * config.block_m
    return rows_per_chunk, triton.cdiv(M, rows_per_chunk)


def attention_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: Optional[float] = None,
    query_reduce: str = "mean",
    head_reduce: str = "mean",
    causal: bool = False,
    lse: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """float32 [B, N] (or [B, Hq, N] with head_reduce="none") = QR_i HR_h p[b,h,i,j], Triton kernels.

    q [B, Hq, M, D], k [B, Hk, N, D] (fp32/fp16/bf16, any strides, Hq % Hk == 0, D <= 256);
    lse optional float32 [B, Hq, M] (natural log). Same semantics as reference.attention_scores.
    """
    check_attention_scores_args(q, k, scale, query_reduce, head_reduce, causal, lse)
    if q.device.type != "cuda" and not INTERPRETED:
        raise ValueError(
            f"q is on {q.device}: the Triton kernels need CUDA tensors "
            "(or TRITON_INTERPRET=1 set before importing vtprune_kernels, to interpret them on the CPU)"
        )
    B, Hq, M, D = q.shape
    N = k.shape[2]
    scale = D**-0.5 if scale is None else float(scale)
    out_shape = (B, Hq, N) if head_reduce == "none" else (B, N)
    if B == 0:
        return torch.zeros(out_shape, dtype=torch.float32, device=q.device)
    q, k = _tile_addressable(q), _tile_addressable(k)
    lse = None if lse is None else _tile_addressable(lse, dims=1)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        if lse is None:
            lse = row_lse(q, k, scale, causal)
        return _column_scores(q, k, lse, scale, query_reduce, head_reduce, causal, out_shape)


def _column_scores(q, k, lse, scale, query_reduce, head_reduce, causal, out_shape):
    B, Hq, M, D = q.shape
    Hk, N = k.shape[1], k.shape[2]
    mode = configs.column_mode(query_reduce, head_reduce)
    variant = configs.column_scores_variant(D, _DTYPE_NAMES[q.dtype], mode)
    slots = Hq if mode.head_op == configs.ONE_HEAD else 1
    rows_per_chunk, n_chunks = _row_chunks(B, M, N, slots, variant.config)
    out_scale = (1.0 / M if query_reduce == "mean" else 1.0) * (1.0 / Hq if head_reduce == "mean" else 1.0)

    direct = n_chunks == 1 and not mode.sum_heads_after
    if direct:  # the kernel writes the result itself
        out = torch.empty(out_shape, dtype=torch.float32, device=q.device)
        out_strides = (out.stride(0), 0, out.stride(1) if head_reduce == "none" else 0, out.stride(-1))
    else:
        out = torch.empty(B, n_chunks, slots, N, dtype=torch.float32, device=q.device)
        out_strides = out.stride()
    grid = (B * n_chunks * blocks_with_tail(N, variant.config.block_n), slots)
    _launch(
        column_scores_kernel, grid, variant,
        q, k, lse, out,
        M, N, D, Hq, Hq // Hk, N - M if causal else N, rows_per_chunk, n_chunks, scale * LOG2E.value, out_scale,
        *q.stride(), *k.stride(), *lse.stride(), *out_strides,
    )  # fmt: skip
    if direct:
        return out
    if mode.sum_heads_after:
        return out.sum(dim=(1, 2))
    combined = out.sum(1) if mode.row_op == configs.REDUCE_SUM else out.amax(1)
    return combined if head_reduce == "none" else combined[:, 0]


@torch.library.register_kernel("vtprune::attention_scores", "cuda")
def _attention_scores_cuda(q, k, *, scale=None, query_reduce="mean", head_reduce="mean", causal=False, lse=None):
    return attention_scores(
        q, k, scale=scale, query_reduce=query_reduce, head_reduce=head_reduce, causal=causal, lse=lse
    )
