"""Random and Uniform baselines: exact budgets, determinism, spatial spread, arguments."""
import copy
import pickle

import pytest
import torch

from methods_support import backends
from vtprune_kernels import Random, Uniform
from vtprune_kernels.methods import Captured, Needs

BACKENDS = backends("region_topk_mask")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid", [(24, 24), (27, 27), 576, (1, 1), (3, 5)])
@pytest.mark.parametrize("keep", [1, 64, 191, 728, 2000])
def test_random_keeps_exactly_min_keep_n(backend, grid, keep):
    n = grid if isinstance(grid, int) else grid[0] * grid[1]
    mask = Random(keep, seed=3).select(grid, 3, backend=backend)
    assert mask.dtype == torch.bool and mask.shape == (3, n)
    assert mask.sum(1).tolist() == [min(keep, n)] * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_is_seeded_and_independent_per_row(backend):
    method = Random(64, seed=11)
    first = method.select((24, 24), 4, backend=backend)
    assert torch.equal(first, Random(64, seed=11).select((24, 24), 4, backend=backend))  # a new object replays
    assert torch.equal(first[:2], Random(64, seed=11).select((24, 24), 2, backend=backend))  # row b ignores later rows
    assert len({tuple(row.nonzero().flatten().tolist()) for row in first}) == 4  # rows differ
    assert not torch.equal(first, Random(64, seed=12).select((24, 24), 4, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_draws_new_masks_on_every_call_and_replays_from_the_seed(backend):
    """The generator is seeded once: successive batches differ, and the sequence of calls is the
    sequence of rows (two calls of 2 rows = one call of 4 rows); a new Random(seed) replays it."""
    method = Random(64, seed=11)
    calls = [method.select((24, 24), 2, backend=backend) for _ in range(2)]
    assert not torch.equal(calls[0], calls[1])
    assert torch.equal(torch.cat(calls), Random(64, seed=11).select((24, 24), 4, backend=backend))


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copied_random_continues_from_the_same_position(clone):
    """copy, deepcopy and pickle carry the generator's position; the copy and the original then
    advance independently."""
    method = Random(64, seed=5)
    method.select((24, 24), 3)
    twin = clone(method)
    assert repr(twin) == repr(method)
    assert torch.equal(twin.select((24, 24), 2), method.select((24, 24), 2))
    assert torch.equal(twin.select((24, 24), 1), method.select((24, 24), 1))


def test_random_is_the_seeded_permutation():
    """Row b keeps the tokens whose value in the b-th randperm of the seeded CPU generator is among
    the `keep` largest (an independent restatement of the rule)."""
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(729, generator=g) for _ in range(3)]
    mask = Random(100, seed=5).select((27, 27), 3, backend="reference")
    for b in range(3):
        assert torch.equal(mask[b], perms[b] >= 729 - 100)


@pytest.mark.parametrize("cls", [Random, Uniform])
def test_keep_zero_is_rejected_naming_the_rule(cls):
    with pytest.raises(ValueError, match="keep must be >= 1.*leave the image out"):
        cls(0)


def test_random_is_uniform_over_tokens():
    """Over 400 seeds every one of 16 tokens is kept about keep/N = 1/4 of the time."""
    counts = sum(Random(4, seed=s).select((4, 4), 1, backend="reference")[0].long() for s in range(400))
    assert counts.sum() == 1600
    assert int(counts.min()) >= 70 and int(counts.max()) <= 130  # mean 100, sd ~8.7


@pytest.mark.parametrize("grid", [(24, 24), (27, 27), (16, 16), (9, 14), (1, 10), 10, (1, 1)])
@pytest.mark.parametrize("keep", [1, 2, 7, 64, 144, 191, 576, 1000])
def test_uniform_keeps_exactly_min_keep_n_spread_over_rows(grid, keep):
    h, w = (1, grid) if isinstance(grid, int) else grid
    mask = Uniform(keep).select(grid, 2)
    assert mask.shape == (2, h * w) and torch.equal(mask[0], mask[1])
    assert mask.sum(1).tolist() == [min(keep, h * w)] * 2
    per_row = mask[0].reshape(h, w).sum(1)
    used = per_row[per_row > 0]
    if used.numel():
        assert int(used.max()) - int(used.min()) <= 1  # tokens shared evenly by the rows used


@pytest.mark.parametrize("side, s", [(24, 12), (24, 8), (24, 6), (27, 9), (16, 4), (27, 8)])
def test_uniform_perfect_square_is_a_regular_subgrid(side, s):
    mask = Uniform(s * s).select((side, side), 1)[0].reshape(side, side)
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    assert len(rows) == len(cols) == s
    assert bool(mask[rows][:, cols].all())  # a full s x s product grid
    expected = torch.tensor([((2 * i + 1) * side) // (2 * s) for i in range(s)])
    assert torch.equal(rows, expected) and torch.equal(cols, expected)
    if side % s == 0:  # a constant stride
        assert set(torch.diff(rows).tolist()) == {side // s}


def test_uniform_144_of_24x24_is_every_other_cell():
    mask = Uniform(144).select((24, 24), 1)[0].reshape(24, 24)
    expected = torch.zeros(24, 24, dtype=torch.bool)
    expected[1::2, 1::2] = True
    assert torch.equal(mask, expected)


def test_needs_and_select_captured():
    for make in (lambda: Random(5), lambda: Uniform(5)):
        method = make()
        assert method.needs(True) == Needs(query_rows="none") == method.needs(False)
        by_size = method.select_captured(Captured(grid=(4, 6), batch_size=3), backend="reference")
        assert by_size.shape == (3, 24) and torch.equal(by_size, make().select((4, 6), 3, backend="reference"))
        from_tensor = method.select_captured(Captured(grid=(4, 6), features=torch.zeros(2, 24, 1)), backend="reference")
        assert from_tensor.shape == (2, 24)
        with pytest.raises(ValueError, match="batch_size"):
            method.select_captured(Captured(grid=(4, 6)))


@pytest.mark.parametrize("cls", [Random, Uniform])
def test_bad_arguments(cls):
    with pytest.raises(ValueError, match="keep"):
        cls(-1)
    with pytest.raises(ValueError, match="keep"):
        cls(1.5)
    with pytest.raises(ValueError, match="grid"):
        cls(4).select((0, 4))
    with pytest.raises(ValueError, match="grid"):
        cls(4).select((2, 3, 4))
    with pytest.raises(ValueError, match="batch_size"):
        cls(4).select((2, 2), -1)
    with pytest.raises(ValueError, match="backend"):
        cls(4).select((2, 2), backend="tpu")
    if cls is Random:
        with pytest.raises(ValueError, match="seed"):
            Random(4, seed=-3)
