"""attention_scores, Triton kernels: the interior / boundary / tail tile split (triton_kernels/tiles.py).

Both passes run whole tiles without masks where every row exists and sees every key, masked
16-row / 16-key tail tiles for the causal diagonal and the ends of the sequence, and tail
programs for the last rows (row pass) and keys (column pass). These cases put each boundary in a
different tile: the model sizes 577 (CLIP-L/14-336) and 1025 (InternViT), 33 (two tail tiles and
one more row), a single row ([CLS]) and a single key, causal masks whose diagonal crosses tiles,
GQA, strided inputs, and non-finite lse values in interior, diagonal and tail rows.

Without a GPU the kernels run under Triton's interpreter (conftest sets TRITON_INTERPRET=1), so
shapes keep one or two heads; 16-bit inputs take the large tiles (64 x 128) the model sizes hit.
"""
import pytest
import torch

import vtprune_kernels  # noqa: F401  (registers torch.ops.vtprune)
from attention_checks import assert_scores_close
from op_cases import attention_inputs, lse_from_logits
import triton_support
from triton_support import to_device
from vtprune_kernels import _triton_backend, reference
from vtprune_kernels.triton_kernels import configs
from vtprune_kernels.triton_kernels.tiles import TAIL

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and not _triton_backend.INTERPRETED,
    reason="no GPU and the Triton kernels are compiled (TRITON_INTERPRET was not set before import)",
)

# one mode per kernel path: one program per head (sum / max over rows), every head (sum / max)
MODES = [("mean", "none"), ("max", "mean"), ("sum", "max")]


def triton_scores(q, k, **kwargs):
    return triton_support.triton_scores(q, k, DEVICE, **kwargs)


def check(q, k, modes=MODES, **kwargs):
    for query_reduce, head_reduce in modes:
        kw = dict(query_reduce=query_reduce, head_reduce=head_reduce, **kwargs)
        assert_scores_close(triton_scores(q, k, **kw), reference.attention_scores(q, k, **kw))


def test_block_counts_with_tails():
    # a 1025-token tower: 16 blocks of 64 rows + one 16-row tail block; 8 x 128 keys + one 16-key block
    assert _triton_backend.blocks_with_tail(1025, 64) == 17
    assert _triton_backend.blocks_with_tail(1025, 128) == 9
    assert _triton_backend.blocks_with_tail(577, 128) == 4 + 5  # 65 keys left: 5 tail blocks of 16
    assert _triton_backend.blocks_with_tail(1, 64) == 1
    assert _triton_backend.blocks_with_tail(64, 64) == 1
    assert _triton_backend.blocks_with_tail(0, 64) == 0
    assert TAIL.value == 16
    # the shapes below hit full and tail blocks in both passes with the 16-bit configurations
    row = configs.row_lse_variant(64, "float16").config
    column = configs.column_scores_variant(64, "float16", configs.column_mode("mean", "none")).config
    for n in (577, 1025):
        assert n % row.block_m and n % column.block_n and n > max(row.block_m, column.block_n)


@pytest.mark.parametrize(
    "M, N, H, modes",
    [
        (1025, 1025, 1, [("mean", "mean")]),  # (interpreter time: one head, one mode per path at model sizes)
        (577, 577, 1, [("mean", "none"), ("max", "max")]),
        (1, 1025, 2, MODES),
        (1025, 33, 1, [("sum", "none"), ("max", "max")]),
        (33, 33, 2, MODES),
        (33, 1, 2, MODES),
        (1, 1, 2, MODES),
    ],
)
def test_model_and_odd_sizes(M, N, H, modes):
    q, k = attention_inputs(1, H, H, M, N, 64, torch.float16, seed=M + N)
    check(q, k, modes=modes)


@pytest.mark.parametrize("M, N", [(33, 577), (70, 1025), (150, 150), (33, 33)])
def test_causal_diagonal_crossing_tiles(M, N):
    # rows sit N - M keys to the right: the diagonal crosses full tiles, tail tiles and tail programs
    q, k = attention_inputs(1, 2, 1, M, N, 32, torch.bfloat16, seed=M)
    check(q, k, causal=True, modes=[("mean", "none"), ("max", "max")])


def test_gqa_with_tails():
    q, k = attention_inputs(2, 6, 2, 33, 145, 64, torch.float16, seed=31)
    check(q, k, modes=[("mean", "mean"), ("max", "mean"), ("sum", "max")])
    check(q, k, modes=[("max", "mean")], causal=True)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_strided_inputs_at_odd_sizes(layout):
    q, k = attention_inputs(1, 2, 2, 577, 577, 48, torch.bfloat16, seed=32, layout=layout)
    assert not q.is_contiguous() and not k.is_contiguous()
    check(q, k, modes=[("mean", "mean"), ("max", "max")])


@pytest.mark.parametrize("scale", [-0.7, 0.0])
def test_negative_and_zero_scale(scale):
    # the row pass takes its running max over raw dot products: a negative scale negates q exactly;
    # scale 0 gives every visible key the same probability
    q, k = attention_inputs(1, 2, 1, 70, 200, 16, torch.float16, seed=33)
    check(q, k, modes=[("sum", "none"), ("max", "max")], scale=scale)
    check(q, k, modes=[("sum", "none")], scale=scale, causal=True)
    if scale == 0.0:
        expected = torch.full((1, 2, 200), 70 / 200)
        torch.testing.assert_close(triton_scores(q, k, scale=0.0, query_reduce="sum", head_reduce="none"), expected)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN warnings under the interpreter
@pytest.mark.parametrize("causal", [False, True])
def test_given_lse_non_finite_in_interior_and_tail_rows(causal):
    # 16-bit column pass: 64-row interior tiles, then 16-row tail tiles from row 64 on (M = 70)
    q, k = attention_inputs(1, 3, 1, 70, 145, 16, torch.float16, seed=34)
    lse = lse_from_logits(q, k, causal=causal)
    lse[0, 0, 10] = float("nan")  # interior tile
    lse[0, 1, 66] = float("-inf")  # tail tile
    lse[0, 2, 5] = float("inf")  # interior, adds nothing
    lse[0, 2, 69] = float("inf")  # tail, adds nothing
    for query_reduce, head_reduce in [("sum", "none"), ("max", "max"), ("mean", "mean")]:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal, lse=lse)
        expected = reference.attention_scores(q, k, **kwargs)
        actual = triton_scores(q, k, **kwargs)
        assert torch.equal(actual.isnan(), expected.isnan()), kwargs
        assert torch.equal(actual.isinf(), expected.isinf()), kwargs
        finite = expected.isfinite()
        if head_reduce == "none":  # head 2's +inf rows add nothing: its columns stay finite
            assert finite[:, 2].all()
        if finite.any():
            assert_scores_close(actual[finite], expected[finite])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_infinite_keys_in_interior_and_tail_tiles():
    # a -inf logit (k = -inf against q > 0) in a full key tile and in the tail tile: p = 0 there,
    # the rows stay finite; a +inf logit makes its rows NaN, as torch's softmax does
    q, k = attention_inputs(1, 2, 1, 70, 145, 16, torch.float16, seed=35)
    q[..., 0] = q[..., 0].abs() + 0.5
    k[0, 0, 3, 0] = float("-inf")
    k[0, 0, 140, 0] = float("-inf")
    check(q, k, modes=[("sum", "none"), ("max", "max")])
    k[0, 0, 100, 0] = float("inf")
    expected = reference.attention_scores(q, k, query_reduce="sum", head_reduce="none")
    assert expected.isnan().all()
    assert triton_scores(q, k, query_reduce="sum", head_reduce="none").isnan().all()


def test_row_lse_tail_blocks_match_logsumexp():
    for M, N, causal in [(1025, 145, False), (33, 577, True), (1, 1025, False)]:
        q, k = attention_inputs(1, 2, 1, M, N, 64, torch.bfloat16, seed=M + N)
        lse = _triton_backend.row_lse(to_device(q, DEVICE), to_device(k, DEVICE), 0.125, causal).cpu()
        torch.testing.assert_close(lse, lse_from_logits(q, k, scale=0.125, causal=causal), rtol=1e-5, atol=1e-5)


def _nan_padded(t, pad):
    """t [B, H, S, D] (or [B, H, S]) as a view into a buffer with ``pad`` NaN rows after each head's S
    rows: an unmasked read past the last row returns NaN, which reaches the result."""
    shape = list(t.shape)
    shape[2] += pad
    buffer = torch.full(shape, float("nan"), dtype=t.dtype)
    buffer[:, :, : t.shape[2]] = t
    return buffer[:, :, : t.shape[2]]


@pytest.mark.parametrize("M, N, causal", [(577, 145, False), (70, 1025, True), (33, 33, False), (1, 200, False)])
def test_unmasked_tiles_read_nothing_past_the_tensors(M, N, causal):
    # the interpreter does not flag out-of-bounds loads: NaN after every head's rows makes them show
    q, k = attention_inputs(1, 2, 1, M, N, 64, torch.float16, seed=36)
    qp, kp = _nan_padded(q, 192), _nan_padded(k, 192)
    assert qp.isnan().sum() == 0 and kp.shape == k.shape
    modes = [("mean", "none"), ("max", "max")]
    for query_reduce, head_reduce in modes:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
        expected = reference.attention_scores(q, k, **kwargs)
        assert_scores_close(triton_scores(qp, kp, **kwargs), expected)
        lse = _nan_padded(lse_from_logits(q, k, causal=causal), 192)
        assert_scores_close(triton_scores(qp, kp, lse=lse, **kwargs), expected)
