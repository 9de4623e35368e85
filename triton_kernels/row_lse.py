"""The normaliser pass of attention_scores: the log-sum-exp of every query row's logits.

lse[b, h, i] = ln sum_{j visible to i} exp(scale * q[b, h, i] . k[b, h // GROUP, j])  (float32 [B, Hq, M])

One program per (b, h, block of BLOCK_M rows); it streams the keys the block sees in BLOCK_N
tiles with an online max/sum in base 2 (flash-attention style). Deterministic: no atomics.

Non-finite logits follow torch's softmax (the reference): a row whose running max is still -inf
(every logit so far -inf) rescales by exp2(-inf - 0) = 0 instead of exp2(-inf - -inf) = NaN, so
-inf logits before a finite one leave the row finite; a row of only -inf logits gets lse = -inf
(hence p = NaN, as softmax gives); a +inf or NaN logit makes the row's lse NaN.
"""
import triton
import triton.language as tl

from .tiles import LN2, SIZE_ARGS, load_tile, logits_log2, row_pointer, visible


@triton.jit(do_not_specialize=SIZE_ARGS)
def row_lse_kernel(
    q_ptr, k_ptr, lse_ptr,
    M, N, D, HQ, GROUP, causal_shift, qk_scale_log2,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_lb, stride_lh, stride_lm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Grid (cdiv(M, BLOCK_M) * B * HQ,): program = (b * HQ + h) * cdiv(M, BLOCK_M) + row block.

    q [B, HQ, M, D], k [B, HQ // GROUP, N, D] (any strides); writes lse [B, HQ, M] (natural log).
    causal_shift: row i sees keys j <= i + causal_shift (N - M causal, N otherwise).
    """
    pid = tl.program_id(0)
    n_row_blocks = tl.cdiv(M, BLOCK_M)
    bh = pid // n_row_blocks
    b = bh // HQ
    h = bh % HQ
    i0 = (pid % n_row_blocks) * BLOCK_M

    offs_m = i0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = q_ptr + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = k_ptr + b.to(tl.int64) * stride_kb + (h // GROUP).to(tl.int64) * stride_kh
    q = load_tile(row_pointer(q_base, i0, stride_qm), i0, M, stride_qm, offs_d, D, stride_qd, BLOCK_M)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    # the last row of the block sees keys < i0 + BLOCK_M + causal_shift; key 0 is seen by every row
    key_end = tl.minimum(N, i0 + BLOCK_M + causal_shift)
    k_first = k_base  # row j0 of k: advanced by a pointer increment (no j0 * stride product)
    for j0 in range(0, key_end, BLOCK_N):
        offs_n = j0 + tl.arange(0, BLOCK_N)
        k = load_tile(k_first, j0, N, stride_kn, offs_d, D, stride_kd, BLOCK_N)
        k_first += BLOCK_N * stride_kn
        s = logits_log2(q, k, qk_scale_log2, UPCAST)
        # padding rows (i >= M, never stored) count as rows: they see every key, their sums stay > 0
        s = tl.where(visible(offs_m, offs_n, causal_shift, i0 + BLOCK_M, N), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # a max still at -inf would give exp2(-inf - -inf) = NaN: shift by 0 instead
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp2(m_i - m_shift) + tl.sum(tl.exp2(s - m_shift[:, None]), axis=1)
        m_i = m_new

    lse = (m_i + tl.log2(l_i)) * LN2
    lse_base = lse_ptr + b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh
    tl.store(row_pointer(lse_base, i0, stride_lm) + tl.arange(0, BLOCK_M) * stride_lm, lse, mask=offs_m < M)
