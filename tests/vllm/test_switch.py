"""The switch: configuration errors are raised while the engine starts, with the reason; default off."""
from __future__ import annotations

import types

import pytest

from vtprune_kernels import Random, Uniform, VisPruner
from vtprune_kernels.integrations.vllm import hf_overrides, method_from_config

ARCH = "VTPruneLlavaForConditionalGeneration"


def _config(spec):
    return types.SimpleNamespace(vtprune=spec) if spec is not None else types.SimpleNamespace()


@pytest.mark.parametrize(
    "spec, message",
    [
        (None, "needs the method in the model config"),
        ("vispruner", "must be a JSON object"),
        ({"keep": 8}, "needs 'method'"),
        ({"method": "fastv", "keep": 8}, "unknown vtprune method 'fastv'"),
        ({"method": "hivtp", "keep": 8}, "depends on the image content"),
        ({"method": "HIVTP", "keep": 8}, "vLLM fixes each image's number of placeholder tokens"),
        ({"method": "ptp", "keep": 8}, "instruction text"),
        ({"method": "vispruner", "keep": 0}, "'keep' must be an integer >= 1"),
        ({"method": "vispruner", "keep": -3}, "'keep' must be an integer >= 1"),
        ({"method": "vispruner", "keep": 2.5}, "'keep' must be an integer >= 1"),
        ({"method": "vispruner"}, "'keep' must be an integer >= 1"),
        ({"method": "random", "keep": 4, "important_ratio": 0.5}, "bad arguments for Random"),
        ({"method": "vispruner", "keep": 4, "important_ratio": 2.0}, "important_ratio"),
    ],
)
def test_bad_configurations_name_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        method_from_config(_config(spec), ARCH)


def test_good_configurations_build_the_methods():
    assert repr(method_from_config(_config({"method": "VisPruner", "keep": 9, "step": 4}), ARCH)) == repr(VisPruner(9, step=4))
    assert repr(method_from_config(_config({"method": "random", "keep": 3, "seed": 7}), ARCH)) == repr(Random(3, seed=7))
    assert repr(method_from_config(_config({"method": "uniform", "keep": 16}), ARCH)) == repr(Uniform(16))


def test_hf_overrides_names_the_pruned_architecture():
    assert hf_overrides("LlavaNextForConditionalGeneration", "vispruner", 32, step=4) == {
        "architectures": ["VTPruneLlavaNextForConditionalGeneration"],
        "vtprune": {"method": "vispruner", "keep": 32, "step": 4},
    }
    with pytest.raises(ValueError, match="no pruned variant"):
        hf_overrides("Qwen2AudioForConditionalGeneration", "vispruner", 32)


def test_plugin_registers_only_new_architectures():
    """Default off: every stock architecture keeps vLLM's own class; each pruned name loads this
    package's class, a subclass of the stock one."""
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    from vtprune_kernels.integrations.vllm import PRUNED_ARCHITECTURES

    load_general_plugins()
    assert set(PRUNED_ARCHITECTURES.values()) <= set(ModelRegistry.get_supported_archs())
    assert len(PRUNED_ARCHITECTURES) == 31
    for stock_name, pruned_name in PRUNED_ARCHITECTURES.items():
        stock = ModelRegistry._try_load_model_cls(stock_name)
        # vLLM serves InternVLForConditionalGeneration with its InternS1 class, names LFM2-VL's class Lfm2VL...
        assert stock.__module__.startswith("vllm.model_executor.models.")
        assert stock.__name__.lower() == stock_name.lower() or stock.__name__ in (
            "InternS1ForConditionalGeneration",
            "Qwen2_5OmniThinkerForConditionalGeneration", "Qwen3OmniMoeThinkerForConditionalGeneration",  # Omni: the thinker
        )
        pruned = ModelRegistry._try_load_model_cls(pruned_name)
        assert pruned.__module__.startswith("vtprune_kernels.integrations.vllm.") and issubclass(pruned, stock), pruned_name


def _clip_tower(built_layers: int):
    """A stand-in with the attribute layout of vLLM's CLIPVisionModel (``describe_encoder`` reads it)."""
    from torch import nn

    def layer():
        block = nn.Module()
        block.self_attn = nn.Module()
        block.self_attn.attn = nn.Module()
        block.self_attn.attn.num_heads = 4
        block.self_attn.num_heads, block.self_attn.head_dim, block.self_attn.scale = 4, 8, 8**-0.5
        return block

    tower = type("CLIPVisionModel", (nn.Module,), {})()
    tower.vision_model = nn.Module()
    tower.vision_model.encoder = nn.Module()
    tower.vision_model.encoder.layers = nn.ModuleList([layer() for _ in range(built_layers)])
    return tower


@pytest.mark.parametrize(
    "spec, layers",
    [
        ({"method": "vispruner", "keep": 4}, (2,)),  # the feature layer: the last one vLLM builds
        ({"method": "vispruner", "keep": 4, "score_layer": 1}, (1,)),
        ({"method": "vispruner", "keep": 4, "score_layer": -2}, (2,)),  # counted from the end of the full tower
        ({"method": "random", "keep": 4}, (2,)),
    ],
)
def test_scored_layers_resolve_as_apply(spec, layers):
    """The same rule as apply() (``adapter.score_layers``): vLLM builds a LLaVA tower only up to its
    feature layer (here 3 of the config's 4 layers), and negative indices count from the full tower."""
    from vtprune_kernels.integrations.vllm.encoder_pruning import EncoderPruning

    config = types.SimpleNamespace(vtprune=spec, vision_config=types.SimpleNamespace(num_hidden_layers=4))
    assert EncoderPruning(config, ARCH, _clip_tower(3)).score_layers == layers


def test_a_scored_layer_vllm_does_not_build_is_refused():
    from vtprune_kernels.integrations.vllm.encoder_pruning import EncoderPruning

    config = types.SimpleNamespace(
        vtprune={"method": "vispruner", "keep": 4, "score_layer": -1}, vision_config=types.SimpleNamespace(num_hidden_layers=4)
    )
    with pytest.raises(ValueError, match=r"scores vision layers \(3,\), but vLLM builds this tower with 3 layers"):
        EncoderPruning(config, ARCH, _clip_tower(3))


@pytest.mark.parametrize(
    "model, method, keep, message",
    [
        ("llava", "hivtp", 8, "cannot run in vLLM: HIVTP keeps a number of tokens"),
        ("qwen2_5_vl", "ptp", 8, "cannot run in vLLM: PTP scores tokens with the prompt's instruction text"),
        ("qwen2_5_vl", "vispruner", 0, "'keep' must be an integer >= 1"),
        ("qwen3_vl", "hivtp", 8, "cannot run in vLLM: HIVTP keeps a number of tokens"),
        ("qwen2_vl", "vispruner", -1, "'keep' must be an integer >= 1"),
    ],
)
def test_engine_start_refuses_a_bad_configuration(model, method, keep, message, checkpoint_dir):
    """The error comes from LLM(...), i.e. while the engine starts, not from a request."""
    import checkpoints
    from harness import Engine

    build, architecture = {
        "llava": (checkpoints.llava, "LlavaForConditionalGeneration"),
        "qwen2_5_vl": (checkpoints.qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration"),
        "qwen3_vl": (checkpoints.qwen3_vl, "Qwen3VLForConditionalGeneration"),
        "qwen2_vl": (checkpoints.qwen2_vl, "Qwen2VLForConditionalGeneration"),
    }[model]
    path, _ = build(f"{checkpoint_dir}/bad-config-{model}")
    with pytest.raises(Exception, match=message):
        Engine(path, hf_overrides(architecture, method, keep))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(compile_mm_encoder=True), "turn off compile_mm_encoder"),
        (dict(cudagraph_mm_encoder=True), "encoder CUDA graph"),
        (dict(enable_mm_embeds=True), "cannot be pruned"),
        (dict(video_pruning=("evs", 0.5)), "cannot be combined with --video-pruning-rate"),
        (dict(pipeline_parallel_size=2), "pipeline parallelism is not supported"),
    ],
)
def test_qwen_engine_checks_name_the_reason(change, message):
    """The Qwen-VL models' engine-start refusals (``qwen_vl_pruning.check_engine_config``), each alone
    (the GPU-only ones, encoder CUDA graphs and compiled encoders, included: they bypass the capture)."""
    from vtprune_kernels.integrations.vllm.qwen_vl_pruning import check_engine_config

    settings = dict(compile_mm_encoder=False, cudagraph_mm_encoder=False, enable_mm_embeds=False, video_pruning=None,
                    pipeline_parallel_size=1)
    check_engine_config(_vllm_config(**settings), "VTPruneQwen3VLForConditionalGeneration")  # all off: accepted
    settings.update(change)
    with pytest.raises(ValueError, match=message):
        check_engine_config(_vllm_config(**settings), "VTPruneQwen3VLForConditionalGeneration")


def _vllm_config(compile_mm_encoder, cudagraph_mm_encoder, enable_mm_embeds, video_pruning, pipeline_parallel_size):
    """A stand-in with the fields of vLLM's VllmConfig that ``check_engine_config`` reads."""
    mm = types.SimpleNamespace(enable_mm_embeds=enable_mm_embeds, get_video_pruning_spec=lambda: video_pruning)
    return types.SimpleNamespace(
        compilation_config=types.SimpleNamespace(compile_mm_encoder=compile_mm_encoder, cudagraph_mm_encoder=cudagraph_mm_encoder),
        model_config=types.SimpleNamespace(get_multimodal_config=lambda: mm),
        parallel_config=types.SimpleNamespace(pipeline_parallel_size=pipeline_parallel_size),
    )


def test_qwen_engine_start_refuses_video_pruning_rate(checkpoint_dir):
    """vLLM's EVS (--video-pruning-rate) and this plugin would both prune the videos: refused at start."""
    import checkpoints
    from harness import Engine

    path, _ = checkpoints.qwen2_5_vl(f"{checkpoint_dir}/qwen-evs")
    with pytest.raises(Exception, match="cannot be combined with --video-pruning-rate"):
        Engine(path, hf_overrides("Qwen2_5_VLForConditionalGeneration", "vispruner", 8), max_videos=1, video_pruning_rate=0.5)


def test_plugin_installed_but_off_serves_the_stock_model(checkpoint_dir):
    """No switch: vLLM's own class, every visual token in the prompt, the unpruned model's greedy tokens."""
    import torch
    from transformers import AutoProcessor

    import checkpoints
    from harness import MAX_NEW_TOKENS, Engine, image

    path, model = checkpoints.llava(f"{checkpoint_dir}/stock", "clip")
    processor = AutoProcessor.from_pretrained(path)
    engine = Engine(path, {})
    try:
        classes = engine.llm.apply_model(lambda m: (type(m).__module__, type(m).__name__))
        text, pictures = "USER: <image>\nWhat is shown here? ASSISTANT:", [image(70, 70, seed=60)]
        ((tokens, prompt_length),) = engine.greedy([(text, pictures)])
    finally:
        engine.close()
    assert classes == [("vllm.model_executor.models.llava", "LlavaForConditionalGeneration")]
    inputs = processor(text=[text], images=pictures, return_tensors="pt")
    assert prompt_length == inputs["input_ids"].shape[1]  # all 25 visual tokens
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=0)
    assert tokens == out[0, -MAX_NEW_TOKENS:].tolist()


def test_idefics3_engine_refuses_images_padded_inside(tmp_path):
    """Idefics3 / SmolVLM: an image processor that does not split images (it pads them inside their tile)
    is read at engine start, from the checkpoint or the engine's mm_processor_kwargs."""
    import checkpoints

    from vtprune_kernels.integrations.vllm.idefics3 import _image_splitting

    def config(path, overrides=None):
        model = types.SimpleNamespace(model=path, revision=None, trust_remote_code=False, mm_processor_kwargs=overrides)
        return types.SimpleNamespace(model_config=model)

    splitting, _ = checkpoints.idefics3(str(tmp_path / "splitting"))
    assert _image_splitting(config(splitting)) is True
    assert _image_splitting(config(splitting, {"do_image_splitting": False})) is False
    whole, _ = checkpoints.idefics3(str(tmp_path / "whole"), image_splitting=False)
    assert _image_splitting(config(whole)) is False
    assert _image_splitting(config(whole, {"do_image_splitting": True})) is True


def test_llama4_engine_refuses_a_data_parallel_tower(checkpoint_dir):
    """Llama 4's tower run data-parallel (each rank a share of the tiles) is refused at engine start."""
    import checkpoints
    from harness import Engine

    path, _ = checkpoints.llama4(f"{checkpoint_dir}/dp-llama4")
    with pytest.raises(Exception, match="mm_encoder_tp_mode='data' is not supported"):
        Engine(path, hf_overrides("Llama4ForConditionalGeneration", "uniform", 4), mm_encoder_tp_mode="data")
