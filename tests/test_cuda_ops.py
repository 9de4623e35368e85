"""The CUDA C++ kernels of the selection ops (csrc/cuda/) against the C++ CPU kernels, bit for bit.

GPU only (skipped without a CUDA device). The CPU kernels are themselves tested against the
reference (tests/test_<op>.py); here every CUDA result must equal the CPU result exactly, on random
and adversarial inputs: ties, NaN, +-inf, +-0, empty regions, k = 0 / k = size, segments of 16..5000
tokens, many regions, partial and all-excluded windows, odd sizes, every score dtype.

cosine_dedup_mask: both backends rank by the cosines of csrc/common/cosine.h (float64, one
summation order), which the CUDA Gram kernel computes bit for bit like the CPU's exact cosines, so
every case (Gaussian, exact-lattice, duplicate features) must match exactly.
"""
import pytest
import torch

import vtprune_kernels  # noqa: F401
from op_cases import (
    BUDGET_HAND_CASES,
    FLOAT_DTYPES,
    budget_inputs,
    dedup_inputs,
    flat_region_features,
    generator,
    region_inputs,
    window_inputs,
)
from vtprune_kernels import _library, ops, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda(*tensors):
    return [t.cuda() if isinstance(t, torch.Tensor) else t for t in tensors]


def assert_cuda_equals_cpu(op, *args):
    """Runs torch.ops.vtprune.<op> on CPU and CUDA copies of args; returns the (equal) CPU result."""
    expected = op(*args)
    got = op(*cuda(*args))
    assert got.is_cuda and got.dtype == expected.dtype and got.shape == expected.shape
    mismatch = (got.cpu() != expected).nonzero()[:5].tolist()
    assert torch.equal(got.cpu(), expected), f"CUDA differs from CPU at {mismatch}"
    return expected


def test_cuda_kernels_are_registered():
    assert _library.HAS_CUDA_KERNELS, "vtprune_kernels._C was built without its CUDA kernels"


# ---------------------------------------------------------------- region_topk_mask

def score_values(shape, style, g):
    """float32 scores: 'random', 'ties' (4 levels), 'special' (NaN, +-inf, +-0 mixed in), 'nan'."""
    if style == "random":
        return torch.randn(shape, generator=g)
    if style == "ties":
        return torch.randint(0, 4, shape, generator=g).float()
    if style == "nan":
        return torch.full(shape, float("nan"))
    pool = torch.tensor([float("nan"), float("-inf"), float("inf"), 0.0, -0.0, 1.0, -1.0, 0.5])
    values = pool[torch.randint(0, len(pool), shape, generator=g)]
    return torch.where(torch.rand(shape, generator=g) < 0.3, torch.randn(shape, generator=g), values)


def segmented_inputs(B, sizes, dtype, *, seed, style, shared_ids=False):
    """scores [B, N]; region_ids with region r holding sizes[r] tokens at shuffled positions; k [B, R]
    random in [0, size] with region 0 taken whole and region 1 (if any) not at all."""
    g = generator(seed)
    R, N = len(sizes), sum(sizes)
    base = torch.repeat_interleave(torch.arange(R), torch.tensor(sizes))
    rows = 1 if shared_ids else B
    ids = torch.stack([base[torch.randperm(N, generator=g)] for _ in range(rows)])
    ids = ids[0] if shared_ids else ids
    scores = score_values((B, N), style, g).to(dtype)
    size = torch.tensor(sizes).expand(B, R)
    k = (torch.rand(B, R, generator=g) * (size + 1)).long().clamp(max=size)
    k[:, 0] = size[:, 0]
    if R > 1:
        k[:, 1] = 0
    return scores, ids, k


# Segment layouts: which kernel path each one exercises (see region_topk_mask.cu).
SEGMENTS = {
    "many_small_16": [16] * 256,  # one warp per segment
    "mixed_16_to_4096": [16, 4096, 577, 1000, 33, 2048],  # 256 threads, keys cached in shared memory
    "whole_image": [577],
    "beyond_key_cache": [5000, 100],  # 256 threads, keys re-read each pass
    "warp_long_segment": [1000] + [16] * 60,  # one warp, a segment beyond its key cache
    "empty_regions": [0, 300, 0, 17, 0],
    "odd_sizes": [1, 2, 3, 5, 577, 1025],
}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("style", ["random", "ties", "special", "nan"])
@pytest.mark.parametrize("layout", list(SEGMENTS))
def test_region_topk_matches_cpu(layout, style, dtype):
    sizes = SEGMENTS[layout]
    scores, ids, k = segmented_inputs(2, sizes, dtype, seed=len(sizes) + sum(sizes), style=style)
    out = assert_cuda_equals_cpu(torch.ops.vtprune.region_topk_mask, scores, ids, k)
    assert torch.equal(out.sum(1), k.sum(1))


@pytest.mark.parametrize("shared_ids", [True, False])
def test_region_topk_more_regions_than_shared_counters(shared_ids):
    # R > 4096: the region counters live in global memory
    scores, ids, k = region_inputs(2, 20000, 5000, seed=1, shared_ids=shared_ids, tie_levels=5)
    assert_cuda_equals_cpu(torch.ops.vtprune.region_topk_mask, scores, ids, k)


def test_region_topk_shared_ids_and_reference():
    scores, ids, k = segmented_inputs(3, [16, 40, 7, 100], torch.float32, seed=2, style="special", shared_ids=True)
    out = assert_cuda_equals_cpu(torch.ops.vtprune.region_topk_mask, scores, ids, k)
    assert torch.equal(out, reference.region_topk_mask(scores, ids, k))


def test_region_topk_empty_shapes():
    for B, N, R in [(0, 5, 2), (2, 0, 3), (2, 6, 0)]:
        scores, ids = torch.randn(B, N), torch.zeros(B, N, dtype=torch.long)
        out = ops.region_topk_mask(*cuda(scores, ids, torch.zeros(B, R, dtype=torch.long)), validate=False)
        assert out.shape == (B, N) and not out.any()


def test_region_topk_invalid_values_are_memory_safe():
    # validate=False: ids outside [0, R) are ignored and k is clamped to [0, region size]
    scores, ids, k = segmented_inputs(2, [30, 50, 20], torch.float32, seed=3, style="random")
    ids[0, :7] = -1
    ids[1, 3:9] = 3
    k[0] = torch.tensor([-4, 1000, 5])
    out = ops.region_topk_mask(*cuda(scores, ids, k), validate=False, backend="cuda").cpu()
    valid = (ids >= 0) & (ids < 3)
    sanitized_ids = torch.where(valid, ids, 3)  # an extra region 3 with k = 0
    sizes = torch.zeros(2, 4, dtype=torch.long).scatter_add_(1, sanitized_ids, torch.ones_like(ids))
    sanitized_k = torch.cat([k, torch.zeros(2, 1, dtype=torch.long)], 1).clamp(min=0)
    sanitized_k = torch.minimum(sanitized_k, sizes)
    assert torch.equal(out, torch.ops.vtprune.region_topk_mask(scores, sanitized_ids, sanitized_k))


# ---------------------------------------------------------------- window_argmax_mask

WINDOW_CASES = [
    (2, 24, 24, (2, 2)),  # HIVTP
    (3, 23, 25, (2, 2)),  # partial edge windows
    (1, 1, 1, (2, 2)),
    (2, 17, 9, (3, 2)),
    (2, 7, 300, (1, 1)),
    (2, 33, 33, (5, 7)),  # 35 cells: one warp per window
    (2, 40, 70, (8, 8)),
    (1, 50, 50, (50, 50)),  # one window over the whole grid
    (1, 10, 10, (100, 3)),  # window taller than the grid
]


# (tie_levels, nan_fraction, exclude_fraction)
WINDOW_VALUES = [(None, 0.0, 0.5), (3, 0.0, 0.3), (None, 0.3, 0.5), (2, 0.5, 0.9), (None, 0.0, 1.0)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("tie_levels,nan_fraction,exclude_fraction", WINDOW_VALUES)
@pytest.mark.parametrize("B,H,W,window", WINDOW_CASES)
def test_window_argmax_matches_cpu(B, H, W, window, tie_levels, nan_fraction, exclude_fraction, dtype):
    scores, exclude = window_inputs(
        B, H, W, dtype, seed=H * W, tie_levels=tie_levels, exclude_fraction=exclude_fraction, nan_fraction=nan_fraction
    )
    if exclude_fraction < 1.0:
        exclude[:, : window[0], : window[1]] = True  # at least one all-excluded window
    out = assert_cuda_equals_cpu(torch.ops.vtprune.window_argmax_mask, scores, exclude, list(window))
    assert not (out & exclude).any()


def test_window_argmax_special_values_and_reference():
    g = generator(4)
    scores = score_values((2, 9, 11), "special", g)
    exclude = torch.rand(2, 9, 11, generator=g) < 0.3
    out = assert_cuda_equals_cpu(torch.ops.vtprune.window_argmax_mask, scores, exclude, [2, 3])
    assert torch.equal(out, reference.window_argmax_mask(scores, exclude, (2, 3)))


# ---------------------------------------------------------------- cosine_dedup_mask

def exact_features(B, N, C, *, seed, support):
    """[B, N, C]: `support` (a power of 4) entries of +-1/sqrt(support) per row: unit norm, every cosine
    a multiple of 1/support, exact in every precision and summation order (many exact ties)."""
    g = generator(seed)
    x = torch.zeros(B, N, C)
    cols = torch.rand(B, N, C, generator=g).argsort(-1)[..., :support]
    signs = torch.randint(0, 2, (B, N, support), generator=g).float() * 2 - 1
    return x.scatter_(-1, cols, signs / support**0.5)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("tie_levels", [None, 3])
@pytest.mark.parametrize("B,N,C,step", [(3, 577, 64, 8), (2, 1025, 16, 13), (2, 7, 4, 1), (1, 1, 4, 8), (2, 300, 8, 3)])
def test_dedup_exact_features_match_cpu_and_reference(B, N, C, step, tie_levels, dtype):
    x, candidates, order_scores, n_keep = dedup_inputs(B, N, C, seed=N + C, tie_levels=tie_levels)
    x = exact_features(B, N, C, seed=N, support=4).to(dtype)
    args = (x, candidates, order_scores.to(dtype), n_keep, step)
    out = assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, *args)
    if N <= 600:
        assert torch.equal(out, reference.cosine_dedup_mask(*args))


def test_dedup_full_size_exact_features():
    # N = 3000 tokens, C = 4096 channels, cosines multiples of 1/1024: every round compared exactly
    B, N, C = 2, 3000, 4096
    x = exact_features(B, N, C, seed=5, support=1024)
    _, candidates, order_scores, _ = dedup_inputs(B, N, 1, seed=5, candidate_fraction=0.95)
    n_keep = torch.tensor([64, 700])
    out = assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, x, candidates, order_scores, n_keep, 8)
    assert out.sum(1).tolist() == n_keep.tolist()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("B,N,C,step", [(2, 577, 1024, 8), (4, 130, 32, 3), (1, 2000, 256, 8)])
def test_dedup_gaussian_features_match_cpu(B, N, C, step, dtype):
    assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, *dedup_inputs(B, N, C, dtype, seed=N), step)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("B,N,C,regions", [(3, 577, 64, 4), (2, 1025, 256, 8), (1, 3000, 1024, 3)])
def test_dedup_duplicate_features_match_cpu_and_reference(B, N, C, regions, dtype):
    # flat image regions: most tokens are exact copies of a few vectors; their cosines are equal on
    # both devices and the maxima tie exactly (positions decide)
    x = flat_region_features(B, N, C, seed=N, regions=regions).to(dtype)
    _, candidates, order_scores, _ = dedup_inputs(B, N, 1, seed=N, candidate_fraction=0.9, tie_levels=5)
    n_keep = torch.tensor([16, N // 3, N - 5][:B])
    args = (x, candidates, order_scores.to(dtype), n_keep, 8)
    out = assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, *args)
    if N <= 600:
        assert torch.equal(out, reference.cosine_dedup_mask(*args))


def test_dedup_gram_kernel_equals_reference_cosines():
    # the Gram kernel alone (through the binding's path): identical vectors and power-of-two
    # multiples give cosine exactly 1, and the rounds agree with the reference on them
    x = flat_region_features(2, 200, 96, seed=14, regions=2)
    x[:, 7] = 0.5 * x[:, 6]
    candidates = torch.ones(2, 200, dtype=torch.bool)
    order_scores = torch.rand(2, 200, generator=generator(14))
    for keep in (1, 9, 150):
        args = (x, candidates, order_scores, torch.tensor([keep, keep + 1]), 8)
        out = assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, *args)
        assert torch.equal(out, reference.cosine_dedup_mask(*args))


def test_dedup_zero_nan_and_duplicate_vectors():
    x = exact_features(1, 12, 8, seed=6, support=4).repeat(1, 3, 1)  # every vector 3 times
    x[0, 5] = 0.0  # cosine 0 with everything
    x[0, 9, 2] = float("nan")  # a NaN row and column of the Gram matrix
    candidates = torch.ones(1, 36, dtype=torch.bool)
    order_scores = torch.linspace(1, 0, 36)[None]
    order_scores[0, ::5] = float("nan")
    for keep in (0, 1, 7, 12, 35, 36, 50):
        args = (x, candidates, order_scores, torch.tensor([keep]), 8)
        assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, *args)


def test_dedup_n_keep_and_candidate_edges():
    x, candidates, order_scores, _ = dedup_inputs(4, 64, 8, seed=7)
    candidates[1] = False  # no candidate
    candidates[2] = True  # every token
    n_cand = candidates.sum(1)
    for keep in (torch.zeros(4, dtype=torch.long), n_cand, n_cand + 3, (n_cand - 1).clamp(min=0)):
        assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, x, candidates, order_scores, keep, 8)


def test_dedup_global_scratch_path():
    # N > 8192: the per-image scratch no longer fits in shared memory and moves to a workspace
    B, N = 2, 9000
    x = exact_features(B, N, 8, seed=8, support=4)
    g = generator(8)
    candidates = torch.zeros(B, N, dtype=torch.bool)
    candidates[:, torch.randperm(N, generator=g)[:300]] = True
    order_scores = torch.rand(B, N, generator=g)
    assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, x, candidates, order_scores, torch.tensor([20, 0]), 8)


def test_dedup_images_in_several_chunks():
    # The binding sorts at most 2^23 Gram entries per chunk: N = 577 (Np = 580) gives 24 images per
    # chunk, so 27 images run as two chunks (offset pointers into every tensor of the batch).
    B, N = 27, 577
    x = exact_features(B, N, 8, seed=11, support=4)
    _, candidates, order_scores, n_keep = dedup_inputs(B, N, 1, seed=11, tie_levels=4)
    out = assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, x, candidates, order_scores, n_keep, 8)
    assert torch.equal(out.sum(1), torch.minimum(n_keep, candidates.sum(1)))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["nan", "negative_nan"])
def test_dedup_nan_features_on_the_radix_sort_path(sign):
    # N > 1024: torch sorts float64 rows of this length with a radix sort, which ranks a NaN by its
    # sign bit; the binding's NaN marker (+inf) must keep every NaN cosine first.
    B, N = 2, 1500
    x = exact_features(B, N, 8, seed=12, support=4)
    x[0, 7, 1] = sign * float("nan")
    x[1, 100:110, 0] = sign * float("nan")
    candidates = torch.ones(B, N, dtype=torch.bool)
    order_scores = torch.rand(B, N, generator=generator(12))
    n_keep = torch.tensor([300, 1200])
    assert_cuda_equals_cpu(torch.ops.vtprune.cosine_dedup_mask, x, candidates, order_scores, n_keep, 8)


def test_empty_shapes_launch_nothing():
    for B, H, W in [(0, 4, 4), (2, 0, 5), (2, 5, 0)]:
        scores, exclude = cuda(torch.randn(B, H, W), torch.zeros(B, H, W, dtype=torch.bool))
        out = torch.ops.vtprune.window_argmax_mask(scores, exclude, [2, 2])
        assert out.shape == (B, H, W) and out.is_cuda
    for B, N in [(0, 5), (3, 0)]:
        x, candidates, order_scores, n_keep = cuda(
            torch.randn(B, N, 4), torch.ones(B, N, dtype=torch.bool), torch.rand(B, N), torch.zeros(B, dtype=torch.long)
        )
        out = torch.ops.vtprune.cosine_dedup_mask(x, candidates, order_scores, n_keep, 8)
        assert out.shape == (B, N) and not out.any()
    empty_long = torch.zeros(0, dtype=torch.long)
    weights, total, capacity = cuda(torch.rand(0, 3), empty_long, empty_long.reshape(0, 3))
    assert torch.ops.vtprune.allocate_budget(weights, total, capacity).shape == (0, 3)
    torch.cuda.synchronize()


@pytest.mark.parametrize("window", [(2**63 - 1, 2**63 - 1), (2**62, 2**62), (2**62, 3), (2, 2**63 - 1)])
def test_window_sizes_near_int64_max(window):
    # ceil(H / wh) and wh * W must not overflow for a huge window: a window beyond the grid is one
    # partial window, on both devices.
    scores, exclude = window_inputs(2, 9, 13, seed=13)
    got = torch.ops.vtprune.window_argmax_mask(*cuda(scores, exclude), list(window)).cpu()
    expected = torch.ops.vtprune.window_argmax_mask(scores, exclude, list(window))
    assert torch.equal(got, expected)
    assert torch.equal(expected, reference.window_argmax_mask(scores, exclude, (min(window[0], 9), min(window[1], 13))))


def test_dedup_negative_n_keep_acts_as_zero_without_validation():
    x, candidates, order_scores, _ = dedup_inputs(2, 40, 8, seed=9)
    args = cuda(x, candidates, order_scores, torch.tensor([-3, 5]))
    out = ops.cosine_dedup_mask(*args, validate=False, backend="cuda")
    expected = torch.ops.vtprune.cosine_dedup_mask(x, candidates, order_scores, torch.tensor([0, 5]), 8)
    assert torch.equal(out.cpu(), expected)


# ---------------------------------------------------------------- allocate_budget

@pytest.mark.parametrize("dtype", FLOAT_DTYPES + (torch.float64,), ids=str)
@pytest.mark.parametrize("B,S", [(1000, 3), (257, 13), (64, 1), (32, 31)])
def test_allocate_budget_matches_cpu(B, S, dtype):
    weights, total, capacity = budget_inputs(B, S, dtype, seed=B + S)
    weights[: B // 4] = 1.0  # equal weights: fractional ties everywhere
    out = assert_cuda_equals_cpu(torch.ops.vtprune.allocate_budget, weights, total, capacity)
    assert torch.equal(out.sum(1), total) and bool((out <= capacity).all())


def test_allocate_budget_hand_cases():
    for weights, total, capacity, expected in BUDGET_HAND_CASES:
        args = cuda(torch.tensor([weights]), torch.tensor([total]), torch.tensor([capacity]))
        out = torch.ops.vtprune.allocate_budget(*args)
        assert out.cpu().tolist() == [expected], (weights, total, capacity)


@pytest.mark.parametrize("S", [3, 16, 17, 40])  # <= 16 regions: scratch in the thread, else in the workspace
def test_allocate_budget_exact_ties_and_huge_capacities(S):
    g = generator(S)
    weights = torch.randint(0, 4, (300, S), generator=g).double()  # equal shares and fractions everywhere
    capacity = torch.randint(0, 20, (300, S), generator=g)
    capacity[:50] = torch.randint(2**61, 2**62, (50, S), generator=g)  # sums beyond int64
    total = (torch.rand(300, generator=g, dtype=torch.float64) * capacity.double().sum(1).clamp(max=2.0**62)).long()
    weights[0, :3], total[0], capacity[0, :3] = torch.tensor([8.0, 5.0, 2.0]), 5, torch.tensor([100, 3, 3])
    capacity[0, 3:] = 0
    for dtype in (torch.float64, torch.float32, torch.float16):
        out = assert_cuda_equals_cpu(torch.ops.vtprune.allocate_budget, weights.to(dtype), total, capacity)
        assert out[0, :3].tolist() == [3, 2, 0]
        assert torch.equal(out[50:], reference.allocate_budget(weights[50:].to(dtype), total[50:], capacity[50:]))


# ---------------------------------------------------------------- opcheck and host syncs

def op_inputs():
    scores, ids, k = segmented_inputs(2, [16, 40, 7], torch.float32, seed=10, style="ties")
    w_scores, exclude = window_inputs(2, 9, 7, seed=10)
    x, candidates, order_scores, n_keep = dedup_inputs(2, 40, 8, seed=10)
    weights, total, capacity = budget_inputs(3, 5, seed=10)
    return {
        "region_topk_mask": cuda(scores, ids, k),
        "window_argmax_mask": cuda(w_scores, exclude) + [[2, 2]],
        "cosine_dedup_mask": cuda(x, candidates, order_scores, n_keep) + [8],
        "allocate_budget": cuda(weights, total, capacity),
    }


@pytest.mark.parametrize("name", ["region_topk_mask", "window_argmax_mask", "cosine_dedup_mask", "allocate_budget"])
def test_opcheck_on_cuda(name):
    torch.library.opcheck(getattr(torch.ops.vtprune, name).default, tuple(op_inputs()[name]))


@pytest.mark.parametrize("name", ["region_topk_mask", "window_argmax_mask", "cosine_dedup_mask", "allocate_budget"])
def test_default_arguments_compile_fullgraph_on_cuda(name):
    # validate=True (the default) checks values in Python on CUDA, except while torch.compile traces
    torch._dynamo.reset()
    args = op_inputs()[name]
    fn = getattr(ops, name)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(*args).cpu(), fn(*args).cpu())


def test_ops_never_sync_with_the_host():
    inputs = op_inputs()

    def run_all():
        ops.region_topk_mask(*inputs["region_topk_mask"], backend="cuda", validate=False)
        ops.window_argmax_mask(*inputs["window_argmax_mask"], backend="cuda")
        ops.cosine_dedup_mask(*inputs["cosine_dedup_mask"], backend="cuda", validate=False)
        ops.allocate_budget(*inputs["allocate_budget"], backend="cuda", validate=False)

    run_all()  # first calls: lazy initialisation (cuBLAS handles, kernel attributes)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_all()
        with pytest.raises(RuntimeError):  # the mode does catch a sync
            inputs["region_topk_mask"][2].sum().item()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
