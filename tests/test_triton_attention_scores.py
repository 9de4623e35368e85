"""attention_scores, Triton kernels, against the float64 reference on tiny shapes.

Without a GPU the kernels run under Triton's interpreter on CPU tensors (conftest sets
TRITON_INTERPRET=1); with a GPU the same cases run the compiled kernels on CUDA tensors.
Block sizes are those that ship (64-128 rows/keys for 16-bit inputs, 16-64 for float32), so the
shapes with M = 70 and N = 130 cross block, chunk and key-block boundaries.
"""
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
from triton_support import to_device
from vtprune_kernels import _library, _triton_backend, ops, reference
from vtprune_kernels.triton_kernels import configs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and not _triton_backend.INTERPRETED,
    reason="no GPU and the Triton kernels are compiled (TRITON_INTERPRET was not set before import)",
)


def triton_scores(q, k, **kwargs):
    kwargs = {key: to_device(v, DEVICE) if isinstance(v, torch.Tensor) else v for key, v in kwargs.items()}
    out = _triton_backend.attention_scores(to_device(q, DEVICE), to_device(k, DEVICE), **kwargs)
    assert out.device.type == DEVICE
    return out.cpu()


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
