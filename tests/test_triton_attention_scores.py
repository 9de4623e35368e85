"""attention_scores, Triton kernels, against the float64 reference on tiny shapes.

Without a GPU the kernels run under Triton's interpreter on CPU tensors (conftest sets
TRITON_INTERPRET=1); with a GPU the same cases run the compiled kernels on CUDA tensors.
Block sizes are those that ship (64-128 rows/keys for 16-bit inputs, 16-64 for float32), so the
shapes with M = 70 and N = 130 cross block, chunk and key-block boundaries.
"""
import os
import subprocess
import sys

import pytest
import torch

import vtprune_kernels  # noqa: F401  (registers torch.ops.vtprune)
from attention_checks import (
    REDUCES,
    assert_scores_close,
    check_nan_propagates_like_the_reference,
    check_probabilities_sum_to_one,
)
from op_cases import attention_inputs, lse_from_logits
import triton_support
from triton_support import to_device
from vtprune_kernels import _library, _triton_backend, ops, reference
from vtprune_kernels.triton_kernels import configs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and not _triton_backend.INTERPRETED,
    reason="no GPU and the Triton kernels are compiled (TRITON_INTERPRET was not set before import)",
)


def triton_scores(q, k, **kwargs):
    return triton_support.triton_scores(q, k, DEVICE, **kwargs)


def check_all_reductions(q, k, reduces=REDUCES, **kwargs):
    for query_reduce, head_reduce in reduces:
        kw = dict(query_reduce=query_reduce, head_reduce=head_reduce, **kwargs)
        assert_scores_close(triton_scores(q, k, **kw), reference.attention_scores(q, k, **kw))


# (B, Hq, Hk, M, N, D): odd sizes, GQA, [CLS] row (M=1), one key, head dims padded to their bucket
# (1, 16, 40 -> 64; 129 -> 256), several row blocks / chunks / key blocks (M=70, N=130).
SHAPES = [
    (2, 4, 2, 17, 33, 40),
    (1, 3, 3, 1, 33, 64),
    (1, 2, 1, 1, 1, 1),
    (1, 2, 2, 70, 130, 16),
    (1, 2, 1, 5, 9, 129),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True])
def test_all_reductions_match_reference(shape, causal):
    q, k = attention_inputs(*shape, seed=sum(shape))
    check_all_reductions(q, k, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_inputs(dtype, causal):
    # 16-bit inputs are exact in float32 products, so the reference on the same tensors is the oracle
    q, k = attention_inputs(1, 2, 1, 70, 130, 24, dtype, seed=1)
    check_all_reductions(q, k, causal=causal)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_non_contiguous_inputs(layout):
    q, k = attention_inputs(2, 4, 2, 9, 31, 16, torch.float16, seed=2, layout=layout)
    assert not q.is_contiguous() and not k.is_contiguous()
    assert to_device(q, DEVICE).stride() == q.stride()
    check_all_reductions(q, k)


@pytest.mark.parametrize("causal", [False, True])
def test_lse_given_replaces_the_normaliser(causal):
    q, k = attention_inputs(2, 4, 2, 17, 40, 16, seed=3)
    lse = lse_from_logits(q, k, scale=0.3, causal=causal)
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(scale=0.3, query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
        actual = triton_scores(q, k, lse=lse, **kwargs)
        assert_scores_close(actual, reference.attention_scores(q, k, lse=lse, **kwargs))
        assert_scores_close(actual, reference.attention_scores(q, k, **kwargs))  # consistent lse: the softmax
    # an lse that is not the true normaliser is used as given: p = exp(logit - lse)
    shifted = lse + 0.5
    expected = reference.attention_scores(q, k, lse=shifted, scale=0.3, causal=causal)
    assert_scores_close(triton_scores(q, k, lse=shifted, scale=0.3, causal=causal), expected)


def test_row_lse_pass_matches_logsumexp():
    q, k = attention_inputs(2, 4, 2, 70, 130, 40, torch.bfloat16, seed=4)
    for causal in (False, True):
        lse = _triton_backend.row_lse(to_device(q, DEVICE), to_device(k, DEVICE), 40**-0.5, causal).cpu()
        torch.testing.assert_close(lse, lse_from_logits(q, k, causal=causal), rtol=1e-5, atol=1e-5)


def test_lse_non_contiguous():
    q, k = attention_inputs(1, 4, 4, 6, 11, 8, seed=5)
    lse = lse_from_logits(q, k).transpose(1, 2).contiguous().transpose(1, 2)
    assert not lse.is_contiguous()
    check_all_reductions(q, k, reduces=[("mean", "mean"), ("max", "max")], lse=lse)


def test_explicit_and_default_scale():
    q, k = attention_inputs(1, 2, 2, 4, 10, 25, seed=6)
    assert_scores_close(triton_scores(q, k), reference.attention_scores(q, k, scale=0.2))  # 25 ** -0.5
    assert_scores_close(triton_scores(q, k, scale=-1.5), reference.attention_scores(q, k, scale=-1.5))


def test_probabilities_sum_to_one_per_row():
    check_probabilities_sum_to_one(_triton_backend.attention_scores, N=77, device=DEVICE)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN warnings under the interpreter
def test_nan_propagates_like_the_reference():
    check_nan_propagates_like_the_reference(_triton_backend.attention_scores, device=DEVICE)


def test_large_logits_stay_finite():
    q, k = attention_inputs(1, 2, 2, 5, 50, 8, seed=10)
    q = q * 30  # logits of +-100 overflow exp without the row max
    check_all_reductions(q, k, reduces=[("mean", "mean"), ("max", "max")])


def test_repeated_calls_are_bitwise_equal():
    q, k = attention_inputs(1, 4, 2, 70, 130, 16, torch.float16, seed=11)
    for query_reduce, head_reduce in [("mean", "mean"), ("max", "mean"), ("sum", "max")]:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=True)
        assert torch.equal(triton_scores(q, k, **kwargs), triton_scores(q, k, **kwargs))


def test_entry_points_agree():
    q, k = (to_device(t, DEVICE) for t in attention_inputs(1, 2, 1, 5, 19, 8, torch.float16, seed=12))
    direct = _triton_backend.attention_scores(q, k, query_reduce="max", causal=True)
    assert torch.equal(ops.attention_scores(q, k, query_reduce="max", causal=True, backend="triton"), direct)
    if DEVICE == "cuda":  # on CUDA tensors the dispatcher's kernel is this Triton launcher
        assert torch.equal(torch.ops.vtprune.attention_scores(q, k, query_reduce="max", causal=True), direct)


def test_registered_as_the_cuda_kernel():
    assert _library.HAS_TRITON
    assert torch._C._dispatch_has_kernel_for_dispatch_key("vtprune::attention_scores", "CUDA")


def test_empty_batch():
    q, k = torch.zeros(0, 2, 3, 8), torch.zeros(0, 1, 5, 8)
    assert triton_scores(q, k).shape == (0, 5)
    assert triton_scores(q, k, head_reduce="none").shape == (0, 2, 5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(q=torch.zeros(1, 2, 3)), "q must have 4 dimensions"),
        (dict(k=torch.zeros(1, 3, 5, 8)), "multiple of it"),
        (dict(q=torch.zeros(1, 2, 3, 8, dtype=torch.float64)), "q must have dtype"),
        (dict(lse=torch.zeros(1, 2, 4)), "lse must have shape"),
        (dict(query_reduce="median"), "query_reduce"),
        (dict(q=torch.zeros(1, 2, 3, 300), k=torch.zeros(1, 1, 5, 300)), "head dim"),
    ],
)
def test_bad_input_names_the_argument(bad, message):
    args = dict(q=torch.zeros(1, 2, 3, 8), k=torch.zeros(1, 1, 5, 8))
    args.update(bad)
    q, k = args.pop("q"), args.pop("k")
    with pytest.raises(ValueError, match=message):
        _triton_backend.attention_scores(q, k, **args)


def test_no_heads_is_an_error():
    with pytest.raises(ValueError, match="at least one head"):
        _triton_backend.attention_scores(torch.zeros(1, 0, 3, 8), torch.zeros(1, 1, 5, 8), head_reduce="max")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_every_launchable_variant_is_compiled_by_check_kernels(dtype):
    shipped = {v.name for v in configs.all_variants()}
    for head_dim in (1, 16, 63, 64, 65, 128, 200, 256):
        assert configs.row_lse_variant(head_dim, dtype).name in shipped
        for query_reduce, head_reduce in REDUCES:
            mode = configs.column_mode(query_reduce, head_reduce)
            assert configs.column_scores_variant(head_dim, dtype, mode).name in shipped


def test_row_chunks_cover_the_rows_and_fill_the_gpu():
    config = configs.LaunchConfig(64, 128, 8, 2)
    cases = [(1, 577, 577, 16), (1, 1025, 1025, 1), (52, 1025, 1025, 16), (1, 1, 9000, 1), (1, 40, 4000, 32)]
    for B, M, N, slots in cases:
        rows_per_chunk, n_chunks = _triton_backend._row_chunks(B, M, N, slots, config)
        assert rows_per_chunk % 64 == 0 and (n_chunks - 1) * rows_per_chunk < M <= n_chunks * rows_per_chunk
        programs = B * slots * n_chunks * -(-N // 128)
        assert programs >= min(_triton_backend.TARGET_PROGRAMS, B * slots * -(-N // 128) * -(-M // 64))


# --- non-finite values across skipped row blocks, key tails and padding rows -------------------------
# Blocks: float32 column pass 16 rows x 64 keys, 16-bit 64 x 64/128; so with M = N = 130 causal, the
# key blocks from 64 on skip whole row blocks that see none of their keys.


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN warnings under the interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_nan_query_row_poisons_the_keys_it_cannot_see(dtype):
    # the reference's softmax of a row holding NaN is NaN for every key, visible or not: under the
    # causal mask row 0 sees key 0 only, yet every column must come out NaN (key blocks >= 64 skip row 0)
    q, k = attention_inputs(1, 2, 1, 130, 130, 16, dtype, seed=20)
    q[0, 1, 0, 3] = float("nan")
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=True)
        expected = reference.attention_scores(q, k, **kwargs)
        actual = triton_scores(q, k, **kwargs)
        assert expected[..., -1].isnan().any()  # the last key too (head 1 with head_reduce="none")
        assert torch.equal(actual.isnan(), expected.isnan()), kwargs
        assert_scores_close(actual, expected)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("causal", [False, True])
def test_given_lse_with_infinite_and_nan_rows(causal):
    # p = exp(logit - lse): a row with lse = -inf gives +inf on visible keys and NaN (-inf - -inf) on
    # invisible ones, lse = +inf gives 0, lse = NaN gives NaN everywhere, exactly as the reference
    q, k = attention_inputs(1, 3, 1, 70, 130, 16, seed=21)
    lse = lse_from_logits(q, k, causal=causal)
    lse[0, 0, 2] = float("-inf")  # rows 2 and 5 are skipped by the later causal key blocks
    lse[0, 1, 40] = float("inf")  # head 1 stays finite: compared by value with head_reduce="none"
    lse[0, 2, 5] = float("nan")
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal, lse=lse)
        expected = reference.attention_scores(q, k, **kwargs)
        actual = triton_scores(q, k, **kwargs)
        assert torch.equal(actual.isnan(), expected.isnan()), kwargs
        assert torch.equal(actual.isinf(), expected.isinf()), kwargs
        finite = expected.isfinite()  # (an infinite entry would make the absolute tolerance infinite)
        if finite.any():
            assert_scores_close(actual[finite], expected[finite])
    # only +inf rows: they add nothing, and nothing turns NaN
    lse_inf = lse_from_logits(q, k, causal=causal)
    lse_inf[0, :, :3] = float("inf")
    kwargs = dict(causal=causal, lse=lse_inf)
    actual = triton_scores(q, k, **kwargs)
    assert not actual.isnan().any()
    assert_scores_close(actual, reference.attention_scores(q, k, **kwargs))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("causal", [False, True])
def test_minus_inf_logits_before_finite_ones(causal):
    # keys 0..39 give logit -inf to every row (q[..., 0] > 0, k[..., 0] = -inf): softmax ignores them.
    # The online lse must not compute exp(-inf - -inf) = NaN over those first key blocks, and the
    # zero-padded q rows of the last row block (0 * -inf = NaN) must not leak into any column.
    q, k = attention_inputs(1, 2, 2, 21, 70, 16, seed=22)
    q[..., 0] = q[..., 0].abs() + 0.5
    k[:, :, :40, 0] = float("-inf")
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=causal)
        expected = reference.attention_scores(q, k, **kwargs)
        assert not expected.isnan().any()
        assert_scores_close(triton_scores(q, k, **kwargs), expected)
        # the column pass alone (the padding rows), with the true lse given
        assert_scores_close(triton_scores(q, k, lse=lse_from_logits(q, k, causal=causal), **kwargs), expected)
    lse = _triton_backend.row_lse(to_device(q, DEVICE), to_device(k, DEVICE), 16**-0.5, causal).cpu()
    torch.testing.assert_close(lse, lse_from_logits(q, k, causal=causal), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_row_of_only_minus_inf_logits_is_nan_like_softmax():
    q, k = attention_inputs(1, 1, 1, 3, 9, 8, seed=23)
    q[..., 0] = q[..., 0].abs() + 0.5
    k[..., 0] = float("-inf")
    expected = reference.attention_scores(q, k, query_reduce="sum", head_reduce="none")
    assert expected.isnan().all()
    actual = triton_scores(q, k, query_reduce="sum", head_reduce="none")
    assert actual.isnan().all()


# Run in a child process: before int64 row offsets, the wrapped int32 offset read far outside the
# buffer (a segfault under the interpreter), which must fail this test, not kill the test session.
_SEQUENCE_MAJOR_SCRIPT = """
import sys
import torch
from vtprune_kernels import _triton_backend, reference
N, row = int(sys.argv[1]), int(sys.argv[2])
D = 16
storage = torch.empty(N * row, dtype=torch.float16)  # virtual memory: only touched pages are mapped
k = storage.as_strided((1, 1, N, D), (0, 0, row, 1))
g = torch.Generator().manual_seed(24)
values = torch.randn(1, 1, N, D, generator=g).half()
k.copy_(values)
q = torch.randn(1, 2, 5, D, generator=g).half()
for kwargs in (dict(), dict(query_reduce="max", head_reduce="max", causal=True)):
    actual = _triton_backend.attention_scores(q, k, **kwargs)
    torch.testing.assert_close(actual, reference.attention_scores(q, values, **kwargs), rtol=1e-5, atol=1e-6)
print("ok")
"""


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="interpreter twin of test_triton_gpu.py::test_sequence_major_keys_beyond_int32_offsets, which runs here",
)
@pytest.mark.parametrize(
    "n_keys, key_stride",
    [
        (2100, 2**20),  # keys from 2048 on lie beyond 2^31 elements: int64 tile starts
        (70, 2**25),  # one tile spans over 2^31 elements: the launcher copies k (MAX_TILE_STRIDE)
    ],
)
def test_offsets_beyond_int32_in_a_sequence_major_buffer(n_keys, key_stride):
    # k[0, 0, j] sits j * key_stride elements into its buffer, as in a [N, B*H*D] buffer with
    # N * B*H*D > 2^31 (a long prompt or many stacked layers, sequence-major)
    assert (n_keys - 1) * key_stride > 2**31
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", _SEQUENCE_MAJOR_SCRIPT, str(n_keys), str(key_stride)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (result.returncode, result.stderr[-2000:])


def test_grid_beyond_cuda_limits_is_an_error():
    # one program per head on grid axis 1, which CUDA caps at 65535
    q, k = torch.zeros(1, 65536, 1, 8, device=DEVICE), torch.zeros(1, 1, 1, 8, device=DEVICE)
    lse = torch.zeros(1, 65536, 1, device=DEVICE)
    with pytest.raises(ValueError, match="grid axis 1"):
        _triton_backend.attention_scores(q, k, head_reduce="none", lse=lse)
