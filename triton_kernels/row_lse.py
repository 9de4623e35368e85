"""The normaliser pass of attention_scores: the log-sum-exp of every query row's logits.

lse[b, h, i] = ln sum_{j visible to i} exp(scale * q[b, h, i] . k[b, h // GROUP, j])  (float32 [B, Hq, M])

One program per (b, h, block of rows); it streams the keys the block sees with an online max/sum
in base 2 (flash-attention style). Deterministic: no atomics.

Row blocks: M // BLOCK_M full blocks of BLOCK_M rows, then the last M % BLOCK_M rows in tail
blocks of TAIL (16) rows (a [CLS] row, M = 1, costs a 16-row tile, not a 128-row one).
Key tiles of a block, in order (tiles.py: masks only on boundary tiles):
1. whole BLOCK_N tiles that every row of the block sees: no mask. The row max is taken over the
   raw dot products and the exponent is one FFMA, exp2(s * c - m_i * c) with c = scale * log2(e);
   c >= 0 is ensured by negating the q tile (exactly) when the scale is negative.
2. the rest (the causal diagonal, the last N % BLOCK_N keys) in TAIL-key tiles, masked (logits
   scaled first, then -inf where invisible). One masked loop of small tiles rather than masked
   full tiles too: less code to compile, and at most BLOCK_M + BLOCK_N keys per block.
Per logit in the steady state: FMNMX (row max), FFMA, MUFU.EX2, FADD (row sum).

Non-finite logits follow torch's softmax (the reference): a row whose running max is still -inf
(every logit so far -inf) rescales by exp2(-inf - 0) = 0 instead of exp2(-inf - -inf) = NaN, so
-inf logits before a finite one leave the row finite; a row of only -inf logits gets lse = -inf
(hence p = NaN, as softmax gives); a +inf or NaN logit makes the row's lse NaN. A tile max of
-inf stays -inf when scaled (not -inf * 0 = NaN for scale 0).
"""
import triton
import triton.language as tl

from .tiles import LN2, SIZE_ARGS, TAIL, load_tile, logits, row_pointer, tile_split, visible


@triton.jit
def _online_step(m_i, l_i, q, k_base, j0, offs_m, row_end, N, D, causal_shift, c, stride_kn, stride_kd,
                 BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """(m_i, l_i) after keys j0 .. j0 + BLOCK_N - 1: m_i the running max of the scaled logits (base 2),
    l_i the running sum of exp2(logit - m_i). Rows up to row_end - 1 count as rows (visibility)."""
    offs_n = j0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k = load_tile(row_pointer(k_base, j0, stride_kn), j0, N, stride_kn, offs_d, D, stride_kd, BLOCK_N, MASKED)
    s = logits(q, k, UPCAST)
    if MASKED:
        x = tl.where(visible(offs_m, offs_n, causal_shift, row_end, N), s * c, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(x, axis=1))
    else:
        raw_max = tl.max(s, axis=1)
        m_new = tl.maximum(m_i, tl.where(raw_max == float("-inf"), raw_max, raw_max * c))
    # a max still at -inf would give exp2(-inf - -inf) = NaN: shift by 0 instead
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    if MASKED:
        p = tl.exp2(x - m_shift[:, None])
    else:
        p = tl.exp2(s * c - m_shift[:, None])  # one FFMA per logit
    l_i = l_i * tl.exp2(m_i - m_shift) + tl.sum(p, axis=1)
    return m_new, l_i


@triton.jit
def _row_block(q_base, k_base, lse_base, i0, M, N, D, causal_shift, qk_scale_log2,
               stride_qm, stride_qd, stride_kn, stride_kd, stride_lm,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr):  # fmt: skip
    """Writes lse of rows i0 .. min(i0 + BLOCK_M, M) - 1 of one head."""
    offs_m = i0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q = load_tile(row_pointer(q_base, i0, stride_qm), i0, M, stride_qm, offs_d, D, stride_qd, BLOCK_M, True)
    # the row max is taken over raw dot products: make the factor c non-negative (negation is exact)
    q = tl.where(qk_scale_log2 < 0, -q, q)
    c = tl.abs(qk_scale_log2)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    # padding rows (i >= M, never stored) count as rows: keys up to the block's last row's last key
    row_end = i0 + BLOCK_M
    key_end = tl.minimum(tl.maximum(row_end + causal_shift, 0), N)
    # keys 0 .. full_end - 1: whole tiles seen by the block's first row, hence by every row
    full_end = tile_split(0, tl.minimum(tl.maximum(i0 + causal_shift + 1, 0), N), BLOCK_N)
    for j0 in range(0, full_end, BLOCK_N):
        m_i, l_i = _online_step(m_i, l_i, q, k_base, j0, offs_m, row_end, N, D, causal_shift, c, stride_kn,
                                stride_kd, BLOCK_N, BLOCK_D, False, UPCAST)  # fmt: skip
    # the causal diagonal and the last keys: masked tail tiles
    for j0 in range(full_end, key_end, TAIL):
        m_i, l_i = _online_step(m_i, l_i, q, k_base, j0, offs_m, row_end, N, D, causal_shift, c, stride_kn,
                                stride_kd, TAIL, BLOCK_D, True, UPCAST)  # fmt: skip

    lse = (m_i + tl.log2(l_i)) * LN2
    tl.store(row_pointer(lse_base, i0, stride_lm) + tl.arange(0, BLOCK_M) * stride_lm, lse, mask=offs_m < M)


@triton.jit(do_not_specialize=SIZE_ARGS)
def row_lse_kernel(
    q_ptr, k_ptr, lse_ptr,
    M, N, D, HQ, GROUP, causal_shift, qk_scale_log2,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_lb, stride_lh, stride_lm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Grid (row_blocks(M) * B * HQ,): program = (b * HQ + h) * row_blocks + row block, where
    row_blocks = M // BLOCK_M + cdiv(M % BLOCK_M, TAIL) (full blocks first, then tail blocks).

    q [B, HQ, M, D], k [B, HQ // GROUP, N, D] (any strides); writes lse [B, HQ, M] (natural log).
    causal_shift: row i sees keys j <= i + causal_shift (N - M causal, N otherwise).
    qk_scale_log2 = scale * log2(e), any sign.
    """
    pid = tl.program_id(0)
    n_full = M // BLOCK_M
    n_row_blocks = n_full + tl.cdiv(M - n_full * BLOCK_M, TAIL)
    bh = pid // n_row_blocks
    block = pid % n_row_blocks
    b = bh // HQ
    h = bh % HQ
    q_base = q_ptr + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = k_ptr + b.to(tl.int64) * stride_kb + (h // GROUP).to(tl.int64) * stride_kh
    lse_base = lse_ptr + b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh
    if block < n_full:
        _row_block(q_base, k_base, lse_base, block * BLOCK_M, M, N, D, causal_shift, qk_scale_log2,
                   stride_qm, stride_qd, stride_kn, stride_kd, stride_lm, BLOCK_M, BLOCK_N, BLOCK_D, UPCAST)  # fmt: skip
    else:
        _row_block(q_base, k_base, lse_base, n_full * BLOCK_M + (block - n_full) * TAIL, M, N, D, causal_shift,
                   qk_scale_log2, stride_qm, stride_qd, stride_kn, stride_kd, stride_lm, TAIL, BLOCK_N, BLOCK_D,
                   UPCAST)  # fmt: skip
