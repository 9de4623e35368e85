"""Bad input raises an error naming the argument, through vtprune_kernels.ops and torch.ops.vtprune."""
import pytest
import torch

import vtprune_kernels  # noqa: F401
from op_cases import attention_inputs, budget_inputs, dedup_inputs, region_inputs, run_op, window_inputs
from vtprune_kernels import ops


def attention(**changes):
    q, k = attention_inputs(2, 4, 2, 5, 9, 8, seed=0)
    args = dict(q=q, k=k)
    args.update(changes)
    return "attention_scores", (args.pop("q"), args.pop("k")), args


def region(**changes):
    scores, ids, k = region_inputs(2, 12, 3, seed=0)
    args = dict(scores=scores, region_ids=ids, k=k)
    args.update(changes)
    return "region_topk_mask", (args["scores"], args["region_ids"], args["k"]), {}


def window(**changes):
    scores, exclude = window_inputs(2, 6, 6, seed=0)
    args = dict(scores=scores, exclude=exclude, window=[2, 2])
    args.update(changes)
    return "window_argmax_mask", (args["scores"], args["exclude"], args["window"]), {}


def dedup(**changes):
    x, candidates, order_scores, n_keep = dedup_inputs(2, 10, 4, seed=0)
    args = dict(x=x, candidates=candidates, order_scores=order_scores, n_keep=n_keep, step=8)
    args.update(changes)
    return "cosine_dedup_mask", tuple(args.values()), {}


def budget(**changes):
    weights, total, capacity = budget_inputs(2, 3, seed=0)
    args = dict(weights=weights, total=total, capacity=capacity)
    args.update(changes)
    return "allocate_budget", tuple(args.values()), {}


def nan_at(t, index, value=float("nan")):
    t = t.clone()
    t[index] = value
    return t


Q, K = attention_inputs(2, 4, 2, 5, 9, 8, seed=0)
CASES = {
    # attention_scores
    "q wrong rank": (attention(q=Q[0]), r"\bq\b"),
    "k wrong rank": (attention(k=K[None]), r"\bk\b"),
    "q wrong dtype": (attention(q=Q.double(), k=K.double()), r"\bq\b"),
    "k dtype differs": (attention(k=K.half()), r"\bk\b.*dtype"),
    "k batch differs": (attention(k=K[:1]), r"\bk must have shape"),
    "k head dim differs": (attention(k=K[..., :4]), r"\bk must have shape"),
    "heads not a multiple (GQA)": (attention(k=torch.randn(2, 3, 9, 8)), r"\bk has 3 heads"),
    "head dim above 256": (attention(q=torch.randn(1, 1, 2, 300), k=torch.randn(1, 1, 3, 300)), r"\bq head dim"),
    "no query heads": (attention(q=Q[:, :0]), r"\bq must have at least one head"),
    "no query rows": (attention(q=Q[:, :, :0]), r"\bq must have at least one query row"),
    "no keys": (attention(k=K[:, :, :0]), r"\bk must have at least one key"),
    "causal with M > N": (attention(q=torch.randn(2, 4, 10, 8), causal=True), r"causal"),
    "unknown query_reduce": (attention(query_reduce="median"), r"query_reduce"),
    "unknown head_reduce": (attention(head_reduce="sum"), r"head_reduce"),
    "lse wrong shape": (attention(lse=torch.zeros(2, 4, 6)), r"\blse\b"),
    "lse wrong rank": (attention(lse=torch.zeros(2, 4)), r"\blse\b"),
    "lse wrong dtype": (attention(lse=torch.zeros(2, 4, 5, dtype=torch.float64)), r"\blse\b"),
    # region_topk_mask
    "scores wrong rank": (region(scores=torch.randn(12)), r"\bscores\b"),
    "scores wrong dtype": (region(scores=torch.ones(2, 12, dtype=torch.int64)), r"\bscores\b"),
    "region_ids wrong dtype": (region(region_ids=torch.zeros(2, 12, dtype=torch.int32)), r"\bregion_ids\b"),
    "region_ids wrong shape": (region(region_ids=torch.zeros(2, 11, dtype=torch.int64)), r"\bregion_ids\b"),
    "region id out of range": (region(region_ids=torch.full((12,), 3)), r"\bregion_ids\b"),
    "negative region id": (region(region_ids=nan_at(torch.zeros(2, 12, dtype=torch.int64), (1, 4), -1)), r"\bregion_ids\b"),
    "k wrong dtype": (region(k=torch.zeros(2, 3)), r"\bk\b"),
    "k wrong batch": (region(k=torch.zeros(3, 3, dtype=torch.int64)), r"\bk\b"),
    "k larger than its region": (region(region_ids=torch.zeros(12, dtype=torch.int64), k=torch.tensor([[13, 0, 0], [1, 0, 0]])), r"\bk\[0, 0\] = 13"),
    "negative k": (region(k=torch.tensor([[0, -1, 0], [0, 0, 0]])), r"\bk must be non-negative"),
    # window_argmax_mask
    "window scores wrong rank": (window(scores=torch.randn(2, 36)), r"\bscores\b"),
    "window scores wrong dtype": (window(scores=torch.zeros(2, 6, 6, dtype=torch.int32)), r"\bscores\b"),
    "exclude wrong dtype": (window(exclude=torch.zeros(2, 6, 6)), r"\bexclude\b"),
    "exclude wrong shape": (window(exclude=torch.zeros(2, 6, 5, dtype=torch.bool)), r"\bexclude\b"),
    "window size 0": (window(window=[0, 2]), r"\bwindow\b"),
    "negative window": (window(window=[2, -1]), r"\bwindow\b"),
    # cosine_dedup_mask
    "x wrong rank": (dedup(x=torch.randn(10, 4)), r"\bx\b"),
    "x wrong dtype": (dedup(x=torch.zeros(2, 10, 4, dtype=torch.int64)), r"\bx\b"),
    "candidates wrong dtype": (dedup(candidates=torch.ones(2, 10)), r"\bcandidates\b"),
    "candidates wrong shape": (dedup(candidates=torch.ones(2, 9, dtype=torch.bool)), r"\bcandidates\b"),
    "order_scores wrong shape": (dedup(order_scores=torch.rand(1, 10)), r"\border_scores\b"),
    "n_keep wrong dtype": (dedup(n_keep=torch.ones(2)), r"\bn_keep\b"),
    "n_keep wrong shape": (dedup(n_keep=torch.ones(3, dtype=torch.int64)), r"\bn_keep\b"),
    "negative n_keep": (dedup(n_keep=torch.tensor([2, -1])), r"\bn_keep\b"),
    "step 0": (dedup(step=0), r"\bstep\b"),
    # allocate_budget
    "weights wrong rank": (budget(weights=torch.rand(3)), r"\bweights\b"),
    "weights wrong dtype": (budget(weights=torch.ones(2, 3, dtype=torch.int64)), r"\bweights\b"),
    "no regions": (budget(weights=torch.rand(2, 0), capacity=torch.zeros(2, 0, dtype=torch.int64)), r"\bweights\b"),
    "total wrong shape": (budget(total=torch.tensor([1])), r"\btotal\b"),
    "total wrong dtype": (budget(total=torch.tensor([1.0, 2.0])), r"\btotal\b"),
    "capacity wrong dtype": (budget(capacity=torch.ones(2, 3)), r"\bcapacity\b"),
    "capacity wrong shape": (budget(capacity=torch.ones(2, 4, dtype=torch.int64)), r"\bcapacity\b"),
    "total above capacity": (budget(total=torch.tensor([0, 10]), capacity=torch.full((2, 3), 3)), r"\btotal\[1\] = 10"),
    "negative total": (budget(total=torch.tensor([-1, 0])), r"\btotal\b"),
    "negative weight": (budget(weights=nan_at(torch.rand(2, 3), (0, 1), -0.5)), r"\bweights\b"),
    "NaN weight": (budget(weights=nan_at(torch.rand(2, 3), (1, 2))), r"\bweights\b"),
    "inf weight": (budget(weights=nan_at(torch.rand(2, 3), (1, 0), float("inf"))), r"\bweights\b"),
    "negative capacity": (budget(capacity=torch.tensor([[1, -1, 1], [0, 0, 0]]), total=torch.tensor([0, 0])), r"\bcapacity\b"),
}


@pytest.mark.parametrize("via", ["auto", "torch.ops"])  # the wrapper's checks, the C++ checks
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_names_the_argument(case, via):
    (name, args, kwargs), pattern = CASES[case]
    with pytest.raises((ValueError, RuntimeError), match=pattern):
        run_op(name, *args, via=via, **kwargs)


def test_value_errors_are_value_errors_in_the_kernel():
    # data checks in the C++ kernels raise ValueError (TORCH_CHECK_VALUE), like the Python ones
    with pytest.raises(ValueError, match=r"\bk\["):
        torch.ops.vtprune.region_topk_mask(torch.randn(1, 3), torch.zeros(3, dtype=torch.int64), torch.tensor([[4]]))
    with pytest.raises(ValueError, match=r"\bweights\b"):
        torch.ops.vtprune.allocate_budget(torch.tensor([[float("nan")]]), torch.tensor([0]), torch.tensor([[1]]))


def test_device_mismatch_names_the_argument():
    # Without a GPU the only second device is "meta". The wrappers check devices first. Through
    # torch.ops, a meta tensor sends the call to the fake kernel (Meta outranks CPU in dispatch),
    # which checks nothing, so the C++ device check (op_checks.h) needs two real devices.
    q, k = attention_inputs(1, 2, 2, 3, 4, 8, seed=0)
    with pytest.raises(ValueError, match=r"\bk is on meta"):
        ops.attention_scores(q, k.to("meta"))
    scores, ids, kk = region_inputs(1, 5, 2, seed=0)
    with pytest.raises(ValueError, match=r"\bregion_ids is on meta"):
        ops.region_topk_mask(scores, ids.to("meta"), kk)
    with pytest.raises(ValueError, match=r"\bexclude is on meta"):
        ops.window_argmax_mask(torch.randn(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool, device="meta"), 2)
    x, c, o, n = dedup_inputs(1, 5, 4, seed=0)
    with pytest.raises(ValueError, match=r"\bn_keep is on meta"):
        ops.cosine_dedup_mask(x, c, o, n.to("meta"))
    w, t, cap = budget_inputs(1, 2, seed=0)
    with pytest.raises(ValueError, match=r"\bcapacity is on meta"):
        ops.allocate_budget(w, t, cap.to("meta"))
