"""The column pass of attention_scores: attention each key receives, reduced over heads, then rows.

With the row normaliser lse (natural log), p[b,h,i,j] = exp(scale * q[b,h,i] . k[b,h',j] - lse[b,h,i])
for visible keys (j <= i + causal_shift) and 0 for the others (NaN if the row's lse is NaN, as in the
reference). A program owns BLOCK_N keys of one batch row and a chunk of query rows, which it walks
BLOCK_M rows at a time, and writes one partial [BLOCK_N] result; the launcher combines chunks (and
heads, for a head mean computed per head) in a fixed order. No atomics: results are deterministic.

HEAD_OP (constexpr) says which heads a program reads:
- ONE_HEAD: head h = program_id(1); out[b, chunk, h, j] = ROW_OP_i p[b,h,i,j] * out_scale. The k tile
  is loaded once; an elementwise [BLOCK_M, BLOCK_N] accumulator is reduced over rows at the end.
- REDUCE_SUM / REDUCE_MAX: every head, combined per (i, j) before the row reduction (the head
  reduction comes first); out[b, chunk, 0, j] = ROW_OP_i HEAD_OP_h p[b,h,i,j] * out_scale. Heads are
  walked kv head by kv head, so one k tile load serves the GROUP query heads that read it (GQA);
  each row block's head-reduced tile is reduced over rows into the [BLOCK_N] result.
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

from .tiles import LOG2E, SIZE_ARGS, load_rows, load_tile, logits_log2, row_pointer, visible

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
def _probabilities(q_base, lse_base, i0, offs_n, offs_d, k, M, N, D, causal_shift, qk_scale_log2,
                   stride_qm, stride_qd, stride_lm, BLOCK_M: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """float32 [BLOCK_M, BLOCK_N] p of one head: q rows i0 .. i0 + BLOCK_M - 1 against the k tile [BLOCK_N, BLOCK_D]."""
    offs_m = i0 + tl.arange(0, BLOCK_M)
    q = load_tile(row_pointer(q_base, i0, stride_qm), i0, M, stride_qm, offs_d, D, stride_qd, BLOCK_M)
    # padding rows get lse = +inf and see no key, hence p = exp2(-inf - inf) = 0
    lse2 = load_rows(row_pointer(lse_base, i0, stride_lm), i0, M, stride_lm, float("inf"), BLOCK_M) * LOG2E
    # invisible keys: logit -inf, so p = 0, or NaN in a row whose lse is NaN or -inf (as in the reference)
    s = tl.where(visible(offs_m, offs_n, causal_shift, M, N), logits_log2(q, k, qk_scale_log2, UPCAST), float("-inf"))
    return tl.exp2(s - lse2[:, None])


@triton.jit
def _scan_lse(bad, lse_head, row_lo, row_hi, stride_lm):
    """``bad`` (int32 [SCAN_ROWS]) or-ed with 1 where a row in [row_lo, row_hi) of one head has lse NaN
    or -inf, i.e. p = exp(-inf - lse) = NaN for the keys that row cannot see."""
    for r0 in range(row_lo, row_hi, SCAN_ROWS):
        lse = load_rows(row_pointer(lse_head, r0, stride_lm), r0, row_hi, stride_lm, 0.0, SCAN_ROWS)
        bad = bad | ((lse != lse) | (lse == float("-inf"))).to(tl.int32)
    return bad


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
    """Grid (B * n_chunks * cdiv(N, BLOCK_N), HQ if HEAD_OP == ONE_HEAD else 1).

    q [B, HQ, M, D], k [B, HQ // GROUP, N, D] (any strides), lse float32 [B, HQ, M] (natural log).
    Program 0-axis = (b * n_chunks + chunk) * cdiv(N, BLOCK_N) + key block: neighbouring programs
    share their q rows (L2 reuse). Chunk c covers rows [c * rows_per_chunk, (c + 1) * rows_per_chunk),
    rows_per_chunk a multiple of BLOCK_M. Writes out[b, chunk, head slot, j] (float32, given strides).
    """
    pid = tl.program_id(0)
    n_key_blocks = tl.cdiv(N, BLOCK_N)
    j0 = (pid % n_key_blocks) * BLOCK_N
    chunk = (pid // n_key_blocks) % n_chunks
    b = pid // (n_key_blocks * n_chunks)
    head_slot = tl.program_id(1)

    offs_n = j0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_batch = q_ptr + b.to(tl.int64) * stride_qb
    k_batch = k_ptr + b.to(tl.int64) * stride_kb
    lse_batch = lse_ptr + b.to(tl.int64) * stride_lb

    # rows before j0 - causal_shift see none of these keys: start at the block holding the first that does
    first_row = tl.maximum(j0 - causal_shift, 0) // BLOCK_M * BLOCK_M
    chunk_start = chunk * rows_per_chunk
    row_start = tl.maximum(chunk_start, first_row)
    row_end = tl.minimum(M, chunk_start + rows_per_chunk)
    skipped_end = tl.minimum(row_start, row_end)  # rows [chunk_start, skipped_end) are not walked

    if HEAD_OP == ONE_HEAD:
        h = head_slot
        k = load_tile(row_pointer(k_batch + (h // GROUP).to(tl.int64) * stride_kh, j0, stride_kn), j0, N, stride_kn,
                      offs_d, D, stride_kd, BLOCK_N)  # fmt: skip
        q_head = q_batch + h.to(tl.int64) * stride_qh
        lse_head = lse_batch + h.to(tl.int64) * stride_lh
        bad = _scan_lse(tl.zeros([SCAN_ROWS], dtype=tl.int32), lse_head, chunk_start, skipped_end, stride_lm)
        poisoned = tl.max(bad, axis=0) > 0
        # elementwise accumulator, reduced over rows once at the end
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for i0 in range(row_start, row_end, BLOCK_M):
            p = _probabilities(q_head, lse_head, i0, offs_n, offs_d, k, M, N, D, causal_shift, qk_scale_log2,
                               stride_qm, stride_qd, stride_lm, BLOCK_M, UPCAST)  # fmt: skip
            acc = _combine(acc, p, ROW_OP)
        column = _reduce_rows(acc, ROW_OP)
    else:
        # the head reduction fills a [BLOCK_M, BLOCK_N] tile per row block; its row reduction
        # (once per HQ tiles of work) goes straight into the [BLOCK_N] column
        bad = tl.zeros([SCAN_ROWS], dtype=tl.int32)
        lse_head = lse_batch
        for _h in range(0, HQ):
            bad = _scan_lse(bad, lse_head, chunk_start, skipped_end, stride_lm)
            lse_head += stride_lh
        poisoned = tl.max(bad, axis=0) > 0
        column = tl.zeros([BLOCK_N], dtype=tl.float32)
        for i0 in range(row_start, row_end, BLOCK_M):
            over_heads = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            # head pointers advance by their strides (no head * stride products to overflow)
            k_head = k_batch
            q_head = q_batch
            lse_head = lse_batch
            for _kv_head in range(0, HQ // GROUP):
                k = load_tile(row_pointer(k_head, j0, stride_kn), j0, N, stride_kn, offs_d, D, stride_kd, BLOCK_N)
                for _g in range(0, GROUP):
                    p = _probabilities(q_head, lse_head, i0, offs_n, offs_d, k, M, N, D, causal_shift,
                                       qk_scale_log2, stride_qm, stride_qd, stride_lm, BLOCK_M, UPCAST)  # fmt: skip
                    over_heads = _combine(over_heads, p, HEAD_OP)
                    q_head += stride_qh
                    lse_head += stride_lh
                k_head += stride_kh
            column = _combine(column, _reduce_rows(over_heads, ROW_OP), ROW_OP)
    # skipped rows with a NaN or -inf lse make every key of this block NaN (their invisible keys)
    column = tl.where(poisoned, float("nan"), column)

    out = out_ptr + b.to(tl.int64) * stride_ob + chunk.to(tl.int64) * stride_oc + head_slot.to(tl.int64) * stride_oh
    tl.store(out + offs_n * stride_on, column * out_scale, mask=offs_n < N)
