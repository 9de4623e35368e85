"""The column pass of attention_scores: attention each key receives, reduced over heads, then rows.

With the row normaliser lse (natural log), p[b,h,i,j] = exp(scale * q[b,h,i] . k[b,h',j] - lse[b,h,i])
for visible keys (j <= i + causal_shift) and 0 for the others (NaN if the row's lse is NaN, as in the
reference). A program owns a block of keys of one batch row and a chunk of query rows, which it walks
a tile of rows at a time, and writes one partial result per key; the launcher combines chunks (and
heads, for a head mean computed per head) in a fixed order. No atomics: results are deterministic.

Key blocks: N // BLOCK_N programs of BLOCK_N keys, then the last N % BLOCK_N keys in programs of
TAIL (16) keys (a 1025-token tower: 8 x 128 + 1 x 16 keys, not 9 x 128). Keys past N are never
stored, and nothing mixes keys, so the k tile is zero-padded and never masked in the math.
Row tiles of a program (tiles.py: masks only on boundary tiles):
1. whole BLOCK_M tiles of rows that see every key of the block: no mask; p = exp2(s * c - lse2) is
   one FFMA (c = scale * log2 e, lse2 = lse * log2 e per row) and one MUFU.EX2, then one FADD /
   FMNMX into the accumulator.
2. the rows on the causal diagonal (some key of the block invisible to them) and the last rows of
   the chunk (fewer than BLOCK_M) in TAIL-row tiles, masked, walked by one loop (less code to
   compile than masked full tiles too).

HEAD_OP (constexpr) says which heads a program reads:
- ONE_HEAD: head h = program_id(1); out[b, chunk, h, j] = ROW_OP_i p[b,h,i,j] * out_scale. The k tile
  is loaded once; an elementwise [BLOCK_M, BLOCK_N] accumulator is reduced over rows at the end.
- REDUCE_SUM / REDUCE_MAX: every head, combined per (i, j) before the row reduction (the head
  reduction comes first); out[b, chunk, 0, j] = ROW_OP_i HEAD_OP_h p[b,h,i,j] * out_scale. Each row
  tile's head-reduced tile is reduced over rows into the [BLOCK_N] result.
ROW_OP: REDUCE_SUM or REDUCE_MAX over the program's query rows. p >= 0, so 0 is the identity of
both and masked entries (padding rows, invisible keys) contribute 0. Maxima propagate NaN, like
the sums (and torch.amax).

Causal programs skip the row blocks that see none of their keys. Those rows still count where the
reference makes them count: an invisible key's p = exp(-inf - lse) is NaN when the row's lse is
NaN (a NaN query row) or -inf (a given lse), so the skipped rows' lse values are scanned (a
vector load per SCAN_ROWS rows, no dot) and any such row turns the program's columns into NaN.
"""
import triton
import triton.language as tl

from .tiles import LOG2E, SIZE_ARGS, TAIL, load_rows, load_tile, logits, row_pointer, tile_split, visible

REDUCE_SUM = tl.constexpr(0)
REDUCE_MAX = tl.constexpr(1)
ONE_HEAD = tl.constexpr(2)
SCAN_ROWS = tl.constexpr(1024)  # lse entries per load when scanning skipped rows


@triton.jit
def _combine(acc, p, OP: tl.constexpr):
    """Elementwise acc + p (OP == REDUCE_SUM) or max(acc, p) (OP == REDUCE_MAX, NaN wins)."""
    if OP == REDUCE_SUM:
        return acc + p
    else:
        return tl.maximum(acc, p, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _reduce_rows(tile, OP: tl.constexpr):
    """[BLOCK_N]: sum (OP == REDUCE_SUM) or max (NaN wins) of a [BLOCK_M, BLOCK_N] tile over its rows."""
    total = tl.sum(tile, axis=0)
    if OP == REDUCE_SUM:
        return total
    else:
        # tl.max lets a number win over NaN; the sum is NaN exactly when the column holds one (p >= 0)
        return tl.where(total == total, tl.max(tile, axis=0), total)


@triton.jit
def _probabilities(q_base, lse_base, i0, offs_n, k, M, N, D, causal_shift, c, stride_qm, stride_qd, stride_lm,
                   BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """float32 [BLOCK_M, BLOCK_N] p of one head: q rows i0 .. i0 + BLOCK_M - 1 against the k tile
    [BLOCK_N, BLOCK_D]. MASKED=False: every row exists and sees every key (the caller's split)."""
    offs_d = tl.arange(0, BLOCK_D)
    q = load_tile(row_pointer(q_base, i0, stride_qm), i0, M, stride_qm, offs_d, D, stride_qd, BLOCK_M, MASKED)
    # padding rows get lse = +inf and see no key, hence p = exp2(-inf - inf) = 0
    lse2 = load_rows(row_pointer(lse_base, i0, stride_lm), i0, M, stride_lm, float("inf"), BLOCK_M, MASKED) * LOG2E
    s = logits(q, k, UPCAST)
    if MASKED:
        # invisible keys: logit -inf, so p = 0, or NaN in a row whose lse is NaN or -inf (as in the reference)
        offs_m = i0 + tl.arange(0, BLOCK_M)
        x = tl.where(visible(offs_m, offs_n, causal_shift, M, N), s * c, float("-inf"))
        return tl.exp2(x - lse2[:, None])
    else:
        return tl.exp2(s * c - lse2[:, None])  # one FFMA per logit


@triton.jit
def _all_heads(q_batch, k_batch, lse_batch, i0, j0, offs_n, M, N, D, HQ, GROUP, causal_shift, c,
               stride_qh, stride_qm, stride_qd, stride_kh, stride_kn, stride_kd, stride_lh, stride_lm,
               HEAD_OP: tl.constexpr, ROW_OP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """[BLOCK_N]: ROW_OP over rows i0 .. i0 + BLOCK_M - 1 of HEAD_OP over every head of p.

    One loop over the query heads, each loading its q, lse and k tiles (with GQA the GROUP heads
    of a kv head reload the same k tile, from L1/L2): a single loop body keeps the exp loop free of
    an outer loop's work, and the pointer steps are additions (no head * stride products)."""
    offs_d = tl.arange(0, BLOCK_D)
    over_heads = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    q_head = q_batch
    lse_head = lse_batch
    k_first = row_pointer(k_batch, j0, stride_kn)
    for h in range(0, HQ):
        k = load_tile(k_first, j0, N, stride_kn, offs_d, D, stride_kd, BLOCK_N, True)
        p = _probabilities(q_head, lse_head, i0, offs_n, k, M, N, D, causal_shift, c, stride_qm, stride_qd,
                           stride_lm, BLOCK_M, BLOCK_D, MASKED, UPCAST)  # fmt: skip
        over_heads = _combine(over_heads, p, HEAD_OP)
        q_head += stride_qh
        lse_head += stride_lh
        k_first += tl.where((h + 1) % GROUP == 0, stride_kh, 0)
    return _reduce_rows(over_heads, ROW_OP)


@triton.jit
def _scan_lse(bad, lse_head, row_lo, row_hi, stride_lm):
    """``bad`` (int32 [SCAN_ROWS]) or-ed with 1 where a row in [row_lo, row_hi) of one head has lse NaN
    or -inf, i.e. p = exp(-inf - lse) = NaN for the keys that row cannot see."""
    for r0 in range(row_lo, row_hi, SCAN_ROWS):
        lse = load_rows(row_pointer(lse_head, r0, stride_lm), r0, row_hi, stride_lm, 0.0, SCAN_ROWS, True)
        bad = bad | ((lse != lse) | (lse == float("-inf"))).to(tl.int32)
    return bad


@triton.jit
def _key_block(q_batch, k_batch, lse_batch, out, j0, chunk_start, chunk_end, M, N, D, HQ, GROUP, causal_shift, c,
               out_scale, head_slot, stride_qh, stride_qm, stride_qd, stride_kh, stride_kn, stride_kd,
               stride_lh, stride_lm, stride_on,
               HEAD_OP: tl.constexpr, ROW_OP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """Writes out[j] (j = j0 .. j0 + BLOCK_N - 1, j < N) for the rows [chunk_start, chunk_end) of one chunk."""
    offs_n = j0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    # rows before j0 - causal_shift see none of these keys: start at the block holding the first that does
    first_row = tl.maximum(j0 - causal_shift, 0) // BLOCK_M * BLOCK_M
    row_start = tl.maximum(chunk_start, first_row)
    row_end = tl.minimum(M, chunk_end)
    skipped_end = tl.minimum(row_start, row_end)  # rows [chunk_start, skipped_end) are not walked
    # rows from first_full on see every key of the block (its last key < N): whole BLOCK_M tiles
    # [diag_end, full_end) unmasked; the diagonal rows [row_start, diag_end) and the last rows
    # [full_end, row_end) in masked TAIL tiles, walked by one loop (t < n_diag: diagonal)
    first_full = tl.maximum(tl.minimum(j0 + BLOCK_N, N) - 1 - causal_shift, 0)
    diag_end = tl.minimum(tl.maximum(tl.cdiv(first_full, TAIL) * TAIL, row_start), row_end)
    full_end = tile_split(diag_end, row_end, BLOCK_M)
    n_diag = tl.cdiv(diag_end - row_start, TAIL)  # the last one may pass M (diag_end = M): masked
    n_masked = n_diag + tl.cdiv(row_end - full_end, TAIL)

    if HEAD_OP == ONE_HEAD:
        h = head_slot
        k = load_tile(row_pointer(k_batch + (h // GROUP).to(tl.int64) * stride_kh, j0, stride_kn), j0, N, stride_kn,
                      offs_d, D, stride_kd, BLOCK_N, True)  # fmt: skip
        q_head = q_batch + h.to(tl.int64) * stride_qh
        lse_head = lse_batch + h.to(tl.int64) * stride_lh
        bad = _scan_lse(tl.zeros([SCAN_ROWS], dtype=tl.int32), lse_head, chunk_start, skipped_end, stride_lm)
        # elementwise accumulator over the whole row tiles, reduced over rows once at the end
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for i0 in range(diag_end, full_end, BLOCK_M):
            p = _probabilities(q_head, lse_head, i0, offs_n, k, M, N, D, causal_shift, c, stride_qm, stride_qd,
                               stride_lm, BLOCK_M, BLOCK_D, False, UPCAST)  # fmt: skip
            acc = _combine(acc, p, ROW_OP)
        column = _reduce_rows(acc, ROW_OP)
        for t in range(0, n_masked):
            i0 = tl.where(t < n_diag, row_start + t * TAIL, full_end + (t - n_diag) * TAIL)
            p = _probabilities(q_head, lse_head, i0, offs_n, k, M, N, D, causal_shift, c, stride_qm, stride_qd,
                               stride_lm, TAIL, BLOCK_D, True, UPCAST)  # fmt: skip
            column = _combine(column, _reduce_rows(p, ROW_OP), ROW_OP)
    else:
        bad = tl.zeros([SCAN_ROWS], dtype=tl.int32)
        lse_head = lse_batch
        for _h in range(0, HQ):
            bad = _scan_lse(bad, lse_head, chunk_start, skipped_end, stride_lm)
            lse_head += stride_lh
        # the head reduction fills a [rows, BLOCK_N] tile per row tile; its row reduction (once per
        # HQ tiles of work) goes straight into the [BLOCK_N] column
        column = tl.zeros([BLOCK_N], dtype=tl.float32)
        for i0 in range(diag_end, full_end, BLOCK_M):
            column = _combine(column, _all_heads(
                q_batch, k_batch, lse_batch, i0, j0, offs_n, M, N, D, HQ, GROUP, causal_shift, c, stride_qh,
                stride_qm, stride_qd, stride_kh, stride_kn, stride_kd, stride_lh, stride_lm,
                HEAD_OP, ROW_OP, BLOCK_M, BLOCK_N, BLOCK_D, False, UPCAST), ROW_OP)  # fmt: skip
        for t in range(0, n_masked):
            i0 = tl.where(t < n_diag, row_start + t * TAIL, full_end + (t - n_diag) * TAIL)
            column = _combine(column, _all_heads(
                q_batch, k_batch, lse_batch, i0, j0, offs_n, M, N, D, HQ, GROUP, causal_shift, c, stride_qh,
                stride_qm, stride_qd, stride_kh, stride_kn, stride_kd, stride_lh, stride_lm,
                HEAD_OP, ROW_OP, TAIL, BLOCK_N, BLOCK_D, True, UPCAST), ROW_OP)  # fmt: skip
    # skipped rows with a NaN or -inf lse make every key of this block NaN (their invisible keys)
    column = tl.where(tl.max(bad, axis=0) > 0, float("nan"), column)
    tl.store(out + offs_n * stride_on, column * out_scale, mask=offs_n < N)


@triton.jit(do_not_specialize=SIZE_ARGS + ("rows_per_chunk", "n_chunks"))
def column_scores_kernel(
    q_ptr, k_ptr, lse_ptr, out_ptr,
    M, N, D, HQ, GROUP, causal_shift, rows_per_chunk, n_chunks, qk_scale_log2, out_scale,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_lb, stride_lh, stride_lm,
    stride_ob, stride_oc, stride_oh, stride_on,
    HEAD_OP: tl.constexpr, ROW_OP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Grid (B * n_chunks * key_blocks(N), HQ if HEAD_OP == ONE_HEAD else 1), where
    key_blocks = N // BLOCK_N + cdiv(N % BLOCK_N, TAIL) (full blocks first, then tail blocks).

    q [B, HQ, M, D], k [B, HQ // GROUP, N, D] (any strides), lse float32 [B, HQ, M] (natural log).
    Program 0-axis = (b * n_chunks + chunk) * key_blocks + key block: neighbouring programs
    share their q rows (L2 reuse). Chunk c covers rows [c * rows_per_chunk, (c + 1) * rows_per_chunk),
    rows_per_chunk a multiple of BLOCK_M. Writes out[b, chunk, head slot, j] (float32, given strides).
    """
    pid = tl.program_id(0)
    n_full = N // BLOCK_N
    n_key_blocks = n_full + tl.cdiv(N - n_full * BLOCK_N, TAIL)
    key_block = pid % n_key_blocks
    chunk = (pid // n_key_blocks) % n_chunks
    b = pid // (n_key_blocks * n_chunks)
    head_slot = tl.program_id(1)

    q_batch = q_ptr + b.to(tl.int64) * stride_qb
    k_batch = k_ptr + b.to(tl.int64) * stride_kb
    lse_batch = lse_ptr + b.to(tl.int64) * stride_lb
    out = out_ptr + b.to(tl.int64) * stride_ob + chunk.to(tl.int64) * stride_oc + head_slot.to(tl.int64) * stride_oh
    chunk_start = chunk * rows_per_chunk
    chunk_end = chunk_start + rows_per_chunk
    if key_block < n_full:
        _key_block(q_batch, k_batch, lse_batch, out, key_block * BLOCK_N, chunk_start, chunk_end, M, N, D, HQ, GROUP,
                   causal_shift, qk_scale_log2, out_scale, head_slot, stride_qh, stride_qm, stride_qd, stride_kh,
                   stride_kn, stride_kd, stride_lh, stride_lm, stride_on,
                   HEAD_OP, ROW_OP, BLOCK_M, BLOCK_N, BLOCK_D, UPCAST)  # fmt: skip
    else:
        _key_block(q_batch, k_batch, lse_batch, out, n_full * BLOCK_N + (key_block - n_full) * TAIL, chunk_start,
                   chunk_end, M, N, D, HQ, GROUP, causal_shift, qk_scale_log2, out_scale, head_slot, stride_qh,
                   stride_qm, stride_qd, stride_kh, stride_kn, stride_kd, stride_lh, stride_lm, stride_on,
                   HEAD_OP, ROW_OP, BLOCK_M, TAIL, BLOCK_D, UPCAST)  # fmt: skip
