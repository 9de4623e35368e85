"""attention_scores on a GPU: the compiled Triton kernels at real model sizes against the float64
reference (skipped without CUDA)."""
import pytest
import torch

import vtprune_kernels  # noqa: F401  (registers torch.ops.vtprune)
from attention_checks import REDUCES
from op_cases import FLOAT_DTYPES, attention_inputs, lse_from_logits
from triton_support import to_device
from vtprune_kernels import _triton_backend, ops, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_inputs(B, Hq, Hk, M, N, D, dtype, *, seed, layout="contiguous"):
    q, k = attention_inputs(B, Hq, Hk, M, N, D, dtype, seed=seed, layout=layout)
    return to_device(q, "cuda"), to_device(k, "cuda")


def reference_by_batch(q, k, lse=None, **kwargs):
    """The float64 reference one batch row at a time (bounded memory at real sizes)."""
    rows = []
    for b in range(q.shape[0]):
        row_lse = None if lse is None else lse[b : b + 1]
        rows.append(reference.attention_scores(q[b : b + 1], k[b : b + 1], lse=row_lse, **kwargs))
    return torch.cat(rows)


def assert_scores_close(actual, expected):
    """fp32 accumulation on tensor cores and exp2.approx, over up to 8192 keys, against the float64
    reference: a looser tolerance than attention_checks.assert_scores_close (tiny shapes)."""
    assert actual.is_cuda and actual.dtype == torch.float32 and actual.shape == expected.shape
    atol = 1e-5 * max(1.0, float(expected.abs().nan_to_num().max()))
    torch.testing.assert_close(actual, expected, rtol=2e-4, atol=atol, equal_nan=True)


def check(q, k, reduces=REDUCES, **kwargs):
    for query_reduce, head_reduce in reduces:
        kw = dict(query_reduce=query_reduce, head_reduce=head_reduce, **kwargs)
        assert_scores_close(_triton_backend.attention_scores(q, k, **kw), reference_by_batch(q, k, **kw))


def lse_from_cuda_flash(q, k, causal=False):
    """float32 [B, Hq, M]: the log-sum-exp returned by torch's CUDA flash attention (fp16/bf16)."""
    kk = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    try:
        out = torch.ops.aten._scaled_dot_product_flash_attention(q, kk, kk, 0.0, causal)
    except RuntimeError as exc:  # flash attention is not built for every GPU
        pytest.skip(f"torch's flash attention is unavailable here: {exc}")
    lse = out[1]
    assert lse.shape[:2] == q.shape[:2] and lse.dtype == torch.float32
    return lse[..., : q.shape[2]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_internvit_tiles_received_and_cls_attention(dtype):
    # InternViT-300M: 13 tiles x 1025 tokens x 16 heads x d=64
    q, k = cuda_inputs(13, 16, 16, 1025, 1025, 64, dtype, seed=1)
    check(q, k, reduces=[("mean", "mean"), ("max", "mean"), ("sum", "max"), ("mean", "none")])
    check(q[:, :, :1], k, reduces=[("mean", "mean"), ("mean", "none")])  # the [CLS] row, a strided view


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_clip_large_every_mode(dtype):
    # CLIP ViT-L/14 at 336 px: 577 tokens, 16 heads, d=64
    q, k = cuda_inputs(2, 16, 16, 577, 577, 64, dtype, seed=2)
    check(q, k)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_llm_instruction_rows_causal_gqa(dtype):
    # an LLM layer: 28 query heads over 4 kv heads, d=128; the last 37 rows (the instruction) of 1500
    q, k = cuda_inputs(2, 28, 4, 37, 1500, 128, dtype, seed=3)
    check(q, k, causal=True)
    # long context, a head dim padded to its bucket (80 -> 128) and (PTP) one mode
    q, k = cuda_inputs(1, 8, 2, 64, 8192, 80, dtype, seed=4)
    check(q, k, reduces=[("max", "mean")], causal=True)


@pytest.mark.parametrize("head_dim", [72, 256])
def test_head_dim_buckets_and_strided_layouts(head_dim):
    for layout in ("transposed", "sliced"):
        q, k = cuda_inputs(2, 4, 2, 200, 333, head_dim, torch.bfloat16, seed=head_dim, layout=layout)
        assert not q.is_contiguous() and not k.is_contiguous()
        check(q, k, reduces=[("mean", "mean"), ("max", "max"), ("sum", "none")], causal=True)


@pytest.mark.parametrize("causal", [False, True])
def test_lse_given(causal):
    q, k = cuda_inputs(2, 8, 4, 300, 300, 64, torch.float32, seed=5)
    lse = lse_from_logits(q.cpu(), k.cpu(), scale=0.2, causal=causal).cuda()
    check(q, k, scale=0.2, causal=causal, lse=lse)


def test_lse_from_the_models_flash_attention():
    # the intended use: reuse the log-sum-exp of the model's own attention, one pass left
    q, k = cuda_inputs(4, 16, 16, 1025, 1025, 64, torch.bfloat16, seed=6)
    lse = lse_from_cuda_flash(q, k)
    torch.testing.assert_close(lse, _triton_backend.row_lse(q, k, 64**-0.5, False), rtol=1e-5, atol=1e-4)
    for query_reduce, head_reduce in [("mean", "mean"), ("max", "mean"), ("mean", "none")]:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce)
        with_lse = _triton_backend.attention_scores(q, k, lse=lse, **kwargs)
        assert_scores_close(with_lse, reference_by_batch(q, k, lse=lse, **kwargs))
        assert_scores_close(with_lse, reference_by_batch(q, k, **kwargs))


def test_dispatcher_and_auto_backend_run_the_triton_kernel():
    q, k = cuda_inputs(2, 16, 16, 577, 577, 64, torch.float16, seed=7)
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce)
        direct = _triton_backend.attention_scores(q, k, **kwargs)
        assert torch.equal(torch.ops.vtprune.attention_scores(q, k, **kwargs), direct)
        assert torch.equal(ops.attention_scores(q, k, backend="auto", **kwargs), direct)
        assert torch.equal(ops.attention_scores(q, k, backend="triton", **kwargs), direct)


def test_deterministic_at_real_size():
    q, k = cuda_inputs(13, 16, 16, 1025, 1025, 64, torch.bfloat16, seed=8)
    for query_reduce, head_reduce in [("mean", "mean"), ("max", "mean"), ("sum", "max")]:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce)
        first = _triton_backend.attention_scores(q, k, **kwargs)
        for _ in range(3):
            assert torch.equal(_triton_backend.attention_scores(q, k, **kwargs), first)


def test_layers_stacked_in_the_batch_match_separate_calls():
    layers = [cuda_inputs(3, 16, 16, 577, 577, 64, torch.float16, seed=10 + i) for i in range(4)]
    stacked = _triton_backend.attention_scores(torch.cat([q for q, _ in layers]), torch.cat([k for _, k in layers]))
    separate = torch.cat([_triton_backend.attention_scores(q, k) for q, k in layers])
    torch.testing.assert_close(stacked, separate, rtol=1e-5, atol=1e-7)


def test_runs_on_the_current_stream_without_host_sync():
    q, k = cuda_inputs(2, 16, 16, 577, 577, 64, torch.float16, seed=11)
    expected = _triton_backend.attention_scores(q, k, query_reduce="max")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda.set_sync_debug_mode("error")  # any host sync inside raises
        try:
            out = _triton_backend.attention_scores(q, k, query_reduce="max")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    stream.synchronize()
    assert torch.equal(out, expected)


def test_opcheck_on_cuda():
    q, k = cuda_inputs(1, 4, 2, 9, 40, 32, torch.float16, seed=12)
    for kwargs in [dict(query_reduce="max", head_reduce="mean", causal=True), dict(head_reduce="none")]:
        torch.library.opcheck(torch.ops.vtprune.attention_scores.default, (q, k), kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_nan_and_infinite_lse_rows_with_skipped_row_blocks(dtype):
    # causal M = N: key blocks past a row block skip it, yet a NaN or -inf lse in a skipped row makes
    # p = NaN on the keys that row cannot see (the reference), so every later column is NaN
    q, k = cuda_inputs(2, 8, 4, 577, 577, 64, dtype, seed=13)
    lse = lse_from_logits(q.cpu(), k.cpu(), causal=True)
    lse[0, 3, 0] = float("nan")
    lse[1, 5, 10] = float("-inf")
    lse[1, 6, 20] = float("inf")
    lse = lse.cuda()
    for query_reduce, head_reduce in REDUCES:
        kwargs = dict(query_reduce=query_reduce, head_reduce=head_reduce, causal=True, lse=lse)
        actual = _triton_backend.attention_scores(q, k, **kwargs)
        expected = reference_by_batch(q, k, **kwargs)
        assert torch.equal(actual.isnan().cpu(), expected.isnan().cpu()), kwargs
        assert torch.equal(actual.isinf().cpu(), expected.isinf().cpu()), kwargs
        finite = expected.isfinite()
        if finite.any():
            assert_scores_close(actual[finite.cuda()], expected[finite].cuda())


@pytest.mark.parametrize("n_keys, key_stride", [(2100, 2**20), (70, 2**25)])
def test_sequence_major_keys_beyond_int32_offsets(n_keys, key_stride):
    # k[0, 0, j] sits j * key_stride elements into a 4.4-4.7 GB buffer (a [N, B*H*D] layout with
    # N * B*H*D > 2^31): int64 tile starts, and for the second case the launcher's contiguous copy
    storage = torch.empty(n_keys * key_stride, dtype=torch.float16, device="cuda")
    k = storage.as_strided((1, 1, n_keys, 64), (0, 0, key_stride, 1))
    values = torch.randn(1, 1, n_keys, 64, generator=torch.Generator().manual_seed(14)).half()
    k.copy_(values.cuda())
    q = torch.randn(1, 4, 70, 64, generator=torch.Generator().manual_seed(15)).half().cuda()
    for kwargs in (dict(), dict(query_reduce="max", head_reduce="max", causal=True), dict(head_reduce="none")):
        actual = _triton_backend.attention_scores(q, k, **kwargs)
        assert_scores_close(actual, reference_by_batch(q.cpu(), values, **kwargs).cuda())
    del storage, k
    torch.cuda.empty_cache()
