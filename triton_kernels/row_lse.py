"""The normaliser pass of attention_scores: the log-sum-exp of every query row's logits.

lse[b, h, i] = ln sum_{j visible to i} exp(scale * q[b, h, i] . k[b, h // GROUP, j])  (float32 [B, Hq, M])

One program per (b, h, block of BLOCK_M rows); it streams the keys the block sees in BLOCK_N
tiles with an online max/sum in base 2 (flash-attention style). Deterministic: no atomics.
"""
import triton
import triton.language as tl

from .tiles import LN2, SIZE_ARGS, load_tile, logits_log2, visible


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
    q = load_tile(q_base, offs_m, M, stride_qm, offs_d, D, stride_qd)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    # the last row of the block sees keys < i0 + BLOCK_M + causal_shift; key 0 is seen by every row
    key_end = tl.minimum(N, i0 + BLOCK_M + causal_shift)
    for j0 in range(0, key_end, BLOCK_N):
        offs_n = j0 + tl.arange(0, BLOCK_N)
        k = load_tile(k_base, offs_n, N, stride_kn, offs_d, D, stride_kd)
        s = logits_log2(q, k, qk_scale_log2, UPCAST)
        s = tl.where(visible(offs_m, offs_n, causal_shift, N), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), axis=1)
        m_i = m_new

    lse = (m_i + tl.log2(l_i)) * LN2
    lse_base = lse_ptr + b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh
    tl.store(lse_base + offs_m * stride_lm, lse, mask=offs_m < M)
