"""Whole-model prefill with and without pruning (VisPruner), random weights, CPU or CUDA.

Two models (see ``vlm_models.py``):
- ``clip_l``: CLIP-L-shaped tower (24 layers, 577 tokens) + 12-layer hidden-1024 Llama, one image:
  prefill unpruned and with 75 / 50 / 25 % of the 576 visual tokens kept.
- ``llm_heavy``: small tower + the same Llama, five images per prompt (2880 visual tokens):
  prefill unpruned and at 25 % kept, plus the pruning overhead.

Pruning overhead = ``prepare_inputs`` with VisPruner minus ``prepare_inputs`` with Uniform at the
same budget: both run the tower to the same feature layer, project the kept tokens and rebuild
the prompt; only VisPruner captures q/k, scores and selects. Its two parts are also recorded
directly: scoring (time inside ``vtprune::attention_scores``, profiler) and selection (time
inside ``select_captured``).

Every comparison is also timed paired (``timing.py``: the two calls alternate, fastest of
each kept) into ``extra_info["paired_*_s"]``; ``plot_results.py`` quotes those ratios.
"""
import pytest
import torch
from pruning_benchmarks import bench_image_stage, bench_prefill
from vlm_models import LLM_1024, clip_l_llava, llm_heavy_llava, prompt_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROUNDS = dict(rounds=3, warmup_rounds=1, iterations=1)
KEPT_FRACTIONS = (0.75, 0.5, 0.25)


def _to(model, inputs):
    model = model.to(DEVICE)
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return model, inputs


@pytest.fixture(scope="module")
def clip_l():
    model, processor = clip_l_llava(text=LLM_1024)
    return _to(model, prompt_inputs(processor, images_per_prompt=1))


@pytest.fixture(scope="module")
def llm_heavy():
    model, processor = llm_heavy_llava()
    return _to(model, prompt_inputs(processor, images_per_prompt=5))


def _bench_prefill(benchmark, model, inputs, keep=None):
    bench_prefill(benchmark, model, inputs, keep, device=DEVICE, rounds=ROUNDS)


@pytest.mark.benchmark(group="prefill clip_l")
def test_prefill_clip_l_unpruned(benchmark, clip_l):
    _bench_prefill(benchmark, *clip_l)


@pytest.mark.benchmark(group="prefill clip_l")
@pytest.mark.parametrize("kept_fraction", KEPT_FRACTIONS)
def test_prefill_clip_l_vispruner(benchmark, clip_l, kept_fraction):
    _bench_prefill(benchmark, *clip_l, keep=round(576 * kept_fraction))


@pytest.mark.benchmark(group="prefill llm_heavy")
def test_prefill_llm_heavy_unpruned(benchmark, llm_heavy):
    _bench_prefill(benchmark, *llm_heavy)


@pytest.mark.benchmark(group="prefill llm_heavy")
def test_prefill_llm_heavy_vispruner_25(benchmark, llm_heavy):
    _bench_prefill(benchmark, *llm_heavy, keep=144)


@pytest.mark.benchmark(group="image stage llm_heavy")
@pytest.mark.parametrize("method_name", ["vispruner", "uniform"])
def test_image_stage_llm_heavy(benchmark, llm_heavy, method_name):
    """prepare_inputs (tower to the feature layer, [scoring, selection,] projector, prompt rebuild)
    at 25 % kept; VisPruner also records its scoring and selection times and a paired timing
    against Uniform."""
    bench_image_stage(benchmark, *llm_heavy, method_name, 144, device=DEVICE, rounds=ROUNDS)
