"""Tile helpers shared by the attention-scoring kernels (``row_lse`` and ``column_scores``).

A tile is a block of rows of one head's [rows, D] matrix (q or k), padded to [BLOCK, BLOCK_D]
with zeros outside the matrix, so padded head dims add nothing to q . k.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x * LOG2E)
LN2 = tl.constexpr(0.6931471805599453)  # ln(2): ln(x) = log2(x) * LN2

# Size arguments the JIT must not specialize on (value 1 or divisibility by 16): one compiled kernel
# serves every sequence length and head count, as check-kernels compiles it. Strides and the head
# dim stay specialized (unit / 16-divisible strides vectorize the loads).
SIZE_ARGS = ("M", "N", "HQ", "GROUP", "causal_shift")


@triton.jit
def load_tile(base, offs_rows, n_rows, stride_row, offs_d, head_dim, stride_d):
    """[len(offs_rows), BLOCK_D] tile of a [n_rows, head_dim] matrix at ``base``; 0 outside it."""
    ptrs = base + offs_rows[:, None] * stride_row + offs_d[None, :] * stride_d
    inside = (offs_rows[:, None] < n_rows) & (offs_d[None, :] < head_dim)
    return tl.load(ptrs, mask=inside, other=0.0)


@triton.jit
def logits_log2(q, k, qk_scale_log2, UPCAST: tl.constexpr):
    """float32 [BLOCK_M, BLOCK_N] = (scale * log2 e) * q @ k^T for tiles q [BLOCK_M, BLOCK_D], k [BLOCK_N, BLOCK_D].

    fp16/bf16 tiles multiply on tensor cores with float32 accumulation; float32 tiles multiply in
    full float32 ("ieee", not TF32). UPCAST (set by the launcher only under TRITON_INTERPRET, whose
    bf16 dot is wrong) turns every tile into float32 first.
    """
    if UPCAST:
        q = q.to(tl.float32)
        k = k.to(tl.float32)
    if q.dtype == tl.float32:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    return s * qk_scale_log2


@triton.jit
def visible(offs_m, offs_n, causal_shift, N):
    """bool [BLOCK_M, BLOCK_N]: row i sees key j iff j < N and j <= i + causal_shift
    (causal_shift = N - M for the right-aligned causal mask, N otherwise). One compare per entry."""
    last_key = tl.minimum(offs_m + causal_shift, N - 1)
    return offs_n[None, :] <= last_key[:, None]
