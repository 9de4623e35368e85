"""Vision towers at real size with and without scoring (random weights, bf16, GPU only).

- ``clip_l``: LLaVA-1.5's CLIP-L/14-336 tower (24 layers, 577 tokens), 5 images (a LLaVA-NeXT
  image's tiles), VisPruner(144) scoring the [CLS] row of the feature layer (layer 23 of 24).
- ``internvit``: InternVL's InternViT-300M tower (24 layers, 1025 tokens per 448 px tile), one image
  of 13 tiles, HIVTP scoring the attention every token receives at layers 7-10 (all 1025 rows, 4
  layers x 13 tiles x 16 heads: the op's largest use).

Contenders, per tower (one group):
- ``tower``: the tower's own forward, all layers (what the model runs without pruning);
- ``prepare-uniform``: ``apply(model, Uniform(k)).prepare_inputs``: the tower to the feature layer,
  selection without scores, projector, prompt rebuild: the same path with no scoring;
- ``prepare-<method>``: the same with the method's scoring (q/k capture + ``attention_scores``) and
  selection. Scoring overhead = prepare-<method> - prepare-uniform.

Run: ``pytest benchmarks/bench_towers.py --benchmark-only`` (skipped without a CUDA device).
"""
import pytest
import torch
from timing import synced
from vlm_models import CLIP_L, LLM_TINY, internvit_internvl, internvl_inputs, prompt_inputs

import vtprune_kernels
from vtprune_kernels import HIVTP, Uniform, VisPruner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DTYPE = torch.bfloat16


@pytest.fixture(scope="module")
def clip_l():
    from vtprune_kernels.demo.llava_factory import LlavaSpec, build_llava

    model, processor = build_llava(LlavaSpec(**CLIP_L, **LLM_TINY))
    model = model.to(device="cuda", dtype=DTYPE)
    inputs = {k: v.cuda() for k, v in prompt_inputs(processor, images_per_prompt=1, prompts=5).items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(DTYPE)
    return model, inputs, VisPruner(keep=144), Uniform(keep=144)


@pytest.fixture(scope="module")
def internvit():
    model = internvit_internvl(device="cuda", dtype=DTYPE)
    return model, internvl_inputs(13, device="cuda", dtype=DTYPE), HIVTP(), Uniform(keep=64)


TOWERS = {"clip_l": "5 images x 577 tokens", "internvit": "13 tiles x 1025 tokens"}


@pytest.mark.parametrize("contender", ["tower", "prepare-uniform", "prepare-method"])
@pytest.mark.parametrize("tower_name", list(TOWERS))
def test_tower(benchmark, request, tower_name, contender):
    model, inputs, method, uniform = request.getfixturevalue(tower_name)
    benchmark.group = f"tower {tower_name} (bf16, {TOWERS[tower_name]}, 24 layers)"
    if contender == "tower":
        fn = torch.inference_mode()(lambda: model.model.vision_tower(pixel_values=inputs["pixel_values"]))
    else:
        chosen = uniform if contender == "prepare-uniform" else method
        benchmark.extra_info["method"] = type(chosen).__name__
        handle = vtprune_kernels.apply(model, chosen)
        request.addfinalizer(handle.remove)
        fn = torch.inference_mode()(lambda: handle.prepare_inputs(**inputs))
    synced(fn)()  # warm up: Triton compile, cuDNN/cuBLAS heuristics
    benchmark(synced(fn))
    benchmark.extra_info["images_or_tiles"] = int(inputs["pixel_values"].shape[0])
