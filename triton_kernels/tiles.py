"""Tile helpers shared by the attention-scoring kernels (``row_lse`` and ``column_scores``).

A tile is a block of rows of one head's [rows, D] matrix (q or k), padded to [BLOCK, BLOCK_D]
with zeros outside the matrix, so padded head dims add nothing to q . k.

Interior and boundary tiles. Both passes are bound by the exp unit (16 ``ex2`` per SM per clock
on sm_80/sm_90, against 128 issued instructions: 8 per ``ex2``, ``check-kernels``' instr/ex2
column), so the per-logit work of a tile in the steady state is kept to the ``ex2`` itself, one
FFMA before it (the softmax scale and the row's shift folded together) and one combine after it
(plus a max in the row pass). The row and key masks (rows past M, keys past N, the causal mask)
are applied only to boundary tiles: the loops of both kernels are split into the tiles that need
no mask (``MASKED=False``: no compare, no select, unpredicated loads) and those that do. Each
kernel also has a small tail tile (``TAIL_M``/``TAIL_N`` = 16 rows/keys) for the last rows/keys of
a sequence that is not a multiple of the block size: a 1025-token tower spends 1040 rows of work
per 1025, not 1152.

Offsets: the start row of a tile goes in int64 (``row0 * stride_row`` exceeds 2^31 elements for
a long sequence in a sequence-major buffer, k viewed from [N, B*H*D] with N * B*H*D > 2^31, and an
int32 product would wrap silently); offsets inside a tile stay int32 (int64 ones double the address
registers: the float32 row_lse spills), which holds while BLOCK * stride < 2^31. The launcher
copies the rare tensor whose row or dim stride breaks that (``MAX_TILE_STRIDE``).
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x * LOG2E)
LN2 = tl.constexpr(0.6931471805599453)  # ln(2): ln(x) = log2(x) * LN2
TAIL = tl.constexpr(16)  # rows / keys of a tail tile: the smallest tl.dot extent

# Size arguments the JIT must not specialize on (value 1 or divisibility by 16): one compiled kernel
# serves every sequence length and head count, as check-kernels compiles it. Strides and the head
# dim stay specialized (unit / 16-divisible strides vectorize the loads).
SIZE_ARGS = ("M", "N", "HQ", "GROUP", "causal_shift")


@triton.jit
def row_pointer(base, row, stride_row):
    """Pointer to row ``row`` of a matrix at ``base``: the product in int64 (it may exceed 2^31)."""
    return base + tl.cast(row, tl.int64) * stride_row


@triton.jit
def load_tile(first, row0, n_rows, stride_row, offs_d, head_dim, stride_d, BLOCK: tl.constexpr, MASKED: tl.constexpr):
    """[BLOCK, BLOCK_D] tile: rows row0 .. row0 + BLOCK - 1 of a [n_rows, head_dim] matrix, ``first``
    pointing at row row0; 0 outside the matrix. MASKED=False: the caller guarantees every row
    exists (only the head-dim padding is masked, a loop-invariant predicate)."""
    offs = tl.arange(0, BLOCK)
    ptrs = first + offs[:, None] * stride_row + offs_d[None, :] * stride_d
    if MASKED:
        inside = (row0 + offs[:, None] < n_rows) & (offs_d[None, :] < head_dim)
    else:
        inside = offs_d[None, :] < head_dim
    return tl.load(ptrs, mask=inside, other=0.0)


@triton.jit
def load_rows(first, row0, n_rows, stride_row, other, BLOCK: tl.constexpr, MASKED: tl.constexpr):
    """[BLOCK] entries row0 .. row0 + BLOCK - 1 of a [n_rows] vector, ``first`` pointing at entry row0;
    ``other`` outside the vector (MASKED=False: the caller guarantees every entry exists)."""
    offs = tl.arange(0, BLOCK)
    if MASKED:
        return tl.load(first + offs * stride_row, mask=row0 + offs < n_rows, other=other)
    else:
        return tl.load(first + offs * stride_row)


@triton.jit
def logits(q, k, UPCAST: tl.constexpr):
    """float32 [BLOCK_M, BLOCK_N] = q @ k^T (unscaled: the scale is folded into the FFMA before exp2)
    for tiles q [BLOCK_M, BLOCK_D], k [BLOCK_N, BLOCK_D].

    fp16/bf16 tiles multiply on tensor cores with float32 accumulation. float32 tiles multiply in
    full float32 ("ieee": an FMA dot, operands in registers), not TF32: TF32 rounds q and k to 10
    mantissa bits, a relative logit error of ~1e-3 * |q||k| (e.g. 0.05 on a logit of 50), far
    outside the documented float32 tolerance; that exactness is what makes float32 the slow dtype
    (CUDA-core FMAs, small tiles to stay spill-free). UPCAST (set by the launcher only under
    TRITON_INTERPRET, whose bf16 dot is wrong) turns every tile into float32 first.
    """
    if UPCAST:
        q = q.to(tl.float32)
        k = k.to(tl.float32)
    if q.dtype == tl.float32:
        return tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        return tl.dot(q, tl.trans(k), out_dtype=tl.float32)


@triton.jit
def visible(offs_m, offs_n, causal_shift, M, N):
    """bool [BLOCK_M, BLOCK_N]: row i sees key j iff i < M, j < N and j <= i + causal_shift
    (causal_shift = N - M for the right-aligned causal mask, N otherwise). Padding rows (i >= M) see
    no key, so whatever their zero-padded q row gives (NaN against an infinite key) never reaches
    a real result. One compare per entry (boundary tiles only)."""
    last_key = tl.where(offs_m < M, tl.minimum(offs_m + causal_shift, N - 1), -1)
    return offs_n[None, :] <= last_key[:, None]


@triton.jit
def tile_split(start, end, BLOCK: tl.constexpr):
    """End of the whole BLOCK-sized tiles from ``start`` within [start, end): start + floor((end -
    start) / BLOCK) * BLOCK (``start`` when the range is empty). Non-negative operands only: the
    interpreter's and the compiler's integer division differ on negative ones."""
    return start + tl.maximum(end - start, 0) // BLOCK * BLOCK
