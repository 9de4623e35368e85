"""VisPruner's image stage on a CLIP-L-shaped LLaVA tower (24 layers, 577 tokens, batch 2):
through the package vs eager attention with ``output_attentions`` (the published code's way).

- ``package``: ``handle.prepare_inputs`` of ``vtprune_kernels.apply(model, VisPruner(144))``: the
  tower (SDPA) runs to the feature layer while the capture attention function takes that layer's q/k
  and log-sum-exp, the [CLS] row is scored by ``attention_scores``, VisPruner selects, the kept tokens are projected, the prompt is
  rebuilt.
- ``eager``: the tower with eager attention and ``output_attentions=True, output_hidden_states=True``
  (every layer's [B, H, 577, 577] map is returned), [CLS] row of the feature layer's map, the same
  VisPruner selection, the kept tokens projected.

Both give the same kept tokens (checked once). Time by pytest-benchmark. Peak extra memory of one
call, two ways: ``extra_info["peak_extra_bytes"]``, the most tensor bytes alive at once (allocator
view, ``vtprune_kernels.demo.measure``, the measure the demo reports); on the CPU also
``extra_info["peak_extra_rss_bytes"]``, resident pages in a fresh process (``peak_memory.py``, the
measure of the op benchmarks). The eager benchmark also times both paths paired
(``timing.py``) into ``extra_info["paired_package_s"]`` / ``["paired_eager_s"]``.
``output_attentions`` appears here only as the baseline.
"""
import pytest
import torch
from peak_memory import cpu_peak_extra_bytes
from timing import paired_best
from vlm_models import LLM_TINY, clip_l_llava, prompt_inputs

import vtprune_kernels
from vtprune_kernels import VisPruner
from vtprune_kernels.demo.llava_factory import LlavaSpec, build_llava
from vtprune_kernels.demo.measure import peak_memory, synchronize

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KEEP = 144
ROUNDS = dict(rounds=3, warmup_rounds=1, iterations=1)


def _model_and_inputs(spec_kwargs=None):
    model, processor = clip_l_llava(text=LLM_TINY) if spec_kwargs is None else build_llava(LlavaSpec(**spec_kwargs))
    model = model.to(DEVICE)
    inputs = {k: v.to(DEVICE) for k, v in prompt_inputs(processor, images_per_prompt=1, prompts=2).items()}
    return model, inputs


@pytest.fixture(scope="module")
def model_and_inputs():
    return _model_and_inputs()


@torch.inference_mode()
def eager_vispruner(model, pixel_values, keep: int):
    """(kept mask [B, 576], projected kept tokens [K, D]) from eager attention maps."""
    tower = model.model.vision_tower
    out = tower(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    layer = model.config.vision_feature_layer
    cls_attn = out.attentions[layer][:, :, 0, 1:].mean(1)  # head-mean [CLS] row, [CLS] column dropped
    features = out.hidden_states[layer][:, 1:]
    mask = VisPruner(keep=keep).select(cls_attn.float(), features)
    return mask, model.model.multi_modal_projector(features[mask])


@pytest.fixture
def eager_tower(model_and_inputs):
    """The same model with the vision tower on eager attention for the duration of a test."""
    model, inputs = model_and_inputs
    model.model.vision_tower.set_attn_implementation("eager")
    yield model, inputs
    model.model.vision_tower.set_attn_implementation("sdpa")


def _package_call(model, inputs):
    handle = vtprune_kernels.apply(model, VisPruner(keep=KEEP))

    def call():
        with torch.inference_mode():
            handle.prepare_inputs(**inputs)

    return call


def _eager_call(model, inputs):
    model.model.vision_tower.set_attn_implementation("eager")
    return lambda: eager_vispruner(model, inputs["pixel_values"], KEEP)


def memory_case(path: str):
    """(call, warm_up) for ``peak_memory.cpu_peak_extra_bytes`` (run in a fresh process): the
    CLIP-L-shaped model and the same call on a tiny model as warm-up (thread pools, first use)."""
    make = _package_call if path == "package" else _eager_call
    tiny = _model_and_inputs(dict(vision_hidden=32, vision_layers=4, text_hidden=64, text_layers=1, text_heads=4))
    return make(*_model_and_inputs()), make(*tiny)


@pytest.mark.benchmark(group="score extraction clip_l batch 2")
def test_score_extraction_package(benchmark, model_and_inputs):
    model, inputs = model_and_inputs
    with vtprune_kernels.apply(model, VisPruner(keep=KEEP)) as handle, torch.inference_mode():

        def call():
            handle.prepare_inputs(**inputs)
            synchronize(DEVICE)

        benchmark.pedantic(call, **ROUNDS)
        benchmark.extra_info["peak_extra_bytes"] = peak_memory(call, DEVICE)
        benchmark.extra_info["kept_tokens"] = sum(s.numel() for s in handle.last_selection)
    _record_rss(benchmark, "package")


@pytest.mark.benchmark(group="score extraction clip_l batch 2")
def test_score_extraction_eager_output_attentions(benchmark, eager_tower):
    model, inputs = eager_tower
    pixel_values = inputs["pixel_values"]

    def call():
        eager_vispruner(model, pixel_values, KEEP)
        synchronize(DEVICE)

    benchmark.pedantic(call, **ROUNDS)
    benchmark.extra_info["peak_extra_bytes"] = peak_memory(call, DEVICE)
    _record_rss(benchmark, "eager")

    def package():
        model.model.vision_tower.set_attn_implementation("sdpa")
        with vtprune_kernels.apply(model, VisPruner(keep=KEEP)) as handle, torch.inference_mode():
            handle.prepare_inputs(**inputs)
        synchronize(DEVICE)

    def eager():
        model.model.vision_tower.set_attn_implementation("eager")
        call()

    benchmark.extra_info["paired_package_s"], benchmark.extra_info["paired_eager_s"] = paired_best(package, eager)


def _record_rss(benchmark, path: str):
    benchmark.extra_info["device"] = DEVICE
    if DEVICE == "cpu":
        rss = cpu_peak_extra_bytes("bench_score_extraction", "memory_case", path)
        if rss is not None:
            benchmark.extra_info["peak_extra_rss_bytes"] = rss


def test_both_paths_keep_the_same_tokens(model_and_inputs, eager_tower):
    """The comparison is fair only if both paths select the same tokens (not timed)."""
    model, inputs = eager_tower
    mask, _ = eager_vispruner(model, inputs["pixel_values"], KEEP)
    model.model.vision_tower.set_attn_implementation("sdpa")
    with vtprune_kernels.apply(model, VisPruner(keep=KEEP)) as handle, torch.inference_mode():
        handle.prepare_inputs(**inputs)
    assert [s.tolist() for s in handle.last_selection] == [row.nonzero().flatten().tolist() for row in mask]
