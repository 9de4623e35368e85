"""HIVTP vs explicit region slicing + a window loop (tests/paper_references.py), counts, arguments."""
import itertools

import pytest
import torch

import paper_references
from methods_support import backends, one_cpu_thread, quantised  # noqa: F401
from vtprune_kernels import HIVTP
from vtprune_kernels.methods import Captured, Needs, VisPruner

BACKENDS = backends("region_topk_mask", "window_argmax_mask")
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "grid, region_grid, ratio, window",
    [
        ((24, 24), 2, 0.25, 2),  # LLaVA-1.5 (the published setting)
        ((27, 27), 2, 0.25, 2),  # regions 13/14 rows, windows straddle the boundary, partial edge windows
        ((16, 16), 2, 0.25, 2),
        ((24, 24), 3, 0.3, 3),
        ((9, 14), 2, 0.25, 2),  # non-square
        ((7, 5), 3, 0.5, (2, 3)),
        ((1, 1), 2, 0.25, 2),  # more region bands than rows: empty regions
        ((5, 5), 1, 1.0, 2),  # everything kept by the regions: windows mark nothing
        ((6, 6), 2, 0.0, 1),  # no region tokens, every cell is its own window
    ],
)
def test_matches_explicit_slicing_on_random_scores(backend, grid, region_grid, ratio, window):
    g = torch.Generator().manual_seed(grid[0] * 100 + grid[1])
    received = torch.rand(3, grid[0] * grid[1], generator=g)
    method = HIVTP(region_grid=region_grid, region_ratio=ratio, window=window)
    mask = method.select(received, grid, backend=backend)
    assert mask.dtype == torch.bool and mask.shape == received.shape
    expected = paper_references.hivtp(received, grid, region_grid, ratio, method.window)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grid", [(24, 24), (27, 27), (5, 9)])
def test_matches_explicit_slicing_on_ties_and_nan(backend, dtype, grid):
    g = torch.Generator().manual_seed(7 * grid[0] + grid[1])
    received = quantised((4, grid[0] * grid[1]), 4, g)
    received[torch.rand(received.shape, generator=g) < 0.1] = float("nan")
    received[3] = float("nan")  # a row of NaN only: index order decides everything
    received = received.to(dtype)
    mask = HIVTP().select(received, grid, backend=backend)
    assert torch.equal(mask, paper_references.hivtp(received.float(), grid))


def test_regions_have_floor_boundaries():
    method = HIVTP(region_grid=2)
    ids = method.region_ids((27, 27)).reshape(27, 27)
    # row/column boundary at floor(27 / 2) = 13: region 0 is rows 0..12 x cols 0..12
    assert ids[:13, :13].eq(0).all() and ids[:13, 13:].eq(1).all()
    assert ids[13:, :13].eq(2).all() and ids[13:, 13:].eq(3).all()
    assert method.region_budgets((27, 27)) == [169 // 4, 182 // 4, 182 // 4, 196 // 4]
    assert method.region_budgets((24, 24)) == [36] * 4
    assert HIVTP(region_grid=3).region_ids((7, 4)).reshape(7, 4)[:, 0].tolist() == [0, 0, 3, 3, 6, 6, 6]


def test_published_count_range_on_24x24():
    method = HIVTP()
    assert method.count_bounds((24, 24)) == (252, 288)
    # lo is reached when each region's 36 best cells form 9 aligned 2x2 windows
    received = torch.zeros(24, 24)
    for y0, x0 in itertools.product((0, 12), (0, 12)):
        received[y0 : y0 + 6, x0 : x0 + 6] = 1.0 + torch.rand(6, 6)
    low = method.select(received.reshape(1, -1), (24, 24), backend="reference")
    assert int(low.sum()) == 252
    # hi is reached when no window holds 4 region tokens (checkerboard of high scores)
    checker = (torch.arange(24)[:, None] + torch.arange(24)[None, :]) % 2 == 0
    received = torch.where(checker, 1.0 + torch.rand(24, 24), torch.rand(24, 24))
    high = method.select(received.reshape(1, -1), (24, 24), backend="reference")
    assert int(high.sum()) == 288


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid", [(24, 24), (27, 27), (16, 16), (9, 14)])
def test_counts_lie_within_bounds(backend, grid, record_property):
    method = HIVTP()
    lo, hi = method.count_bounds(grid)
    g = torch.Generator().manual_seed(grid[0])
    received = torch.cat([torch.rand(6, grid[0] * grid[1], generator=g), quantised((2, grid[0] * grid[1]), 2, g)])
    counts = method.select(received, grid, backend=backend).sum(1).tolist()
    record_property(f"hivtp_counts_{grid[0]}x{grid[1]}", {"bounds": (lo, hi), "counts": counts})
    assert all(lo <= c <= hi for c in counts), (lo, hi, counts)


def _brute_force_count_range(method, grid):
    """Min and max of (kept + windows with a non-kept cell) over every placement of the region budgets."""
    h, w = grid
    ids = method.region_ids(grid).tolist()
    budgets = method.region_budgets(grid)
    cells = [[i for i in range(h * w) if ids[i] == r] for r in range(len(budgets))]
    wh, ww = method.window
    windows = [
        [y * w + x for y in range(y0, min(y0 + wh, h)) for x in range(x0, min(x0 + ww, w))]
        for y0 in range(0, h, wh)
        for x0 in range(0, w, ww)
    ]
    counts = set()
    for choice in itertools.product(*(itertools.combinations(c, k) for c, k in zip(cells, budgets))):
        kept = {i for part in choice for i in part}
        counts.add(len(kept) + sum(any(i not in kept for i in win) for win in windows))
    return min(counts), max(counts)


@pytest.mark.parametrize(
    "grid, region_grid, ratio, window, aligned",
    [
        ((4, 4), 2, 0.5, 2, True),
        ((4, 6), 2, 0.5, (2, 3), True),
        ((3, 3), 2, 0.5, 2, False),
        ((5, 5), 2, 0.3, 2, False),
        ((3, 5), 2, 0.5, (2, 2), False),
    ],
)
def test_count_bounds_against_brute_force(grid, region_grid, ratio, window, aligned):
    method = HIVTP(region_grid=region_grid, region_ratio=ratio, window=window)
    lo, hi = method.count_bounds(grid)
    true_lo, true_hi = _brute_force_count_range(method, grid)
    assert hi == true_hi
    assert lo <= true_lo
    if aligned:
        assert lo == true_lo


def test_needs_and_select_captured():
    method = HIVTP(layers=(6, 7, 8))
    assert method.needs(True) == Needs(vision_layers=(6, 7, 8), default_layers="middle", query_rows="all")
    # by default the integration picks the layers: the paper's 6..9 on towers attending globally
    from vtprune_kernels.integrations.adapter import score_layers

    default = HIVTP().needs(True)
    assert HIVTP().layers is None and default.vision_layers is None
    assert score_layers(default, 22, 24) == (6, 7, 8, 9)
    assert score_layers(method.needs(True), 22, 24) == (6, 7, 8)
    assert score_layers(VisPruner(4).needs(True), 22, 24) == (22,)
    assert score_layers(VisPruner(4, score_layer=-1).needs(True), 22, 24) == (23,)
    assert method.needs(False) == method.needs(True)
    received = torch.rand(2, 35)
    captured = Captured(grid=(5, 7), received=received)
    assert torch.equal(
        method.select_captured(captured, backend="reference"), method.select(received, (5, 7), backend="reference")
    )
    with pytest.raises(ValueError, match="received"):
        method.select_captured(Captured(grid=(5, 7), cls_attn=received))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(region_grid=0), "region_grid"),
        (dict(region_ratio=1.5), "region_ratio"),
        (dict(region_ratio=-0.5), "region_ratio"),
        (dict(window=0), "window"),
        (dict(window=(2, 0)), "window"),
        (dict(layers=()), "layers"),
        (dict(layers=(6, 1.5)), "layers"),
        (dict(layers=(6, True)), "layers"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HIVTP(**kwargs)


def test_bad_select_arguments():
    method = HIVTP()
    with pytest.raises(ValueError, match="grid"):
        method.select(torch.rand(2, 576), (24, 25))
    with pytest.raises(ValueError, match="grid"):
        method.select(torch.rand(2, 576), (0, 576))
    with pytest.raises(ValueError, match="received"):
        method.select(torch.rand(576), (24, 24))


@pytest.mark.parametrize("with_valid", [False, True])
def test_stages_are_the_regional_and_the_window_tokens(with_valid):
    """Stage 1 holds floor(25%) of every region, stage 2 at most one token per 2x2 window; disjoint,
    and their union is select's mask (on a valid rectangle too)."""
    g = torch.Generator().manual_seed(6)
    received = torch.rand(2, 64, generator=g)
    valid = None
    if with_valid:
        valid = torch.zeros(2, 8, 8, dtype=torch.bool)
        valid[:, 1:7, 0:8] = True
        valid = valid.reshape(2, 64)
    method = HIVTP(layers=(0,))
    regional, local = method.select_stages(received, (8, 8), valid=valid)
    assert not bool((regional & local).any())
    assert torch.equal(regional | local, method.select(received, (8, 8), valid=valid))
    budgets = method.region_budgets((6, 8) if with_valid else (8, 8))
    assert regional.sum(1).tolist() == [sum(budgets)] * 2
    if not with_valid:  # (b, window row, y, window column, x)
        assert int(local.reshape(2, 4, 2, 4, 2).sum((2, 4)).max()) <= 1
