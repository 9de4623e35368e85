"""The integration machinery on its own: captured scores vs eager attention maps, the LLM probe,
the prompt surgery, exact restore, independence of models and threads, unsupported models, and a
source check that the package never asks a model for attention maps."""
import pathlib
import re
import threading

import pytest
import torch

import tiny_models as tm
from integration_oracles import BACKEND, cls_attention, eager_copy, instruction_attention, received_attention, tower_maps
from thread_interleave import run_during
from vtprune_kernels import HIVTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.integrations.capture import VisionScoreCapture
from vtprune_kernels.integrations.llm_probe import PROBE_ATTENTION, instruction_scores
from vtprune_kernels.integrations.prompt_surgery import locate_images, placeholder_runs, rebuild_prompt
from vtprune_kernels.integrations.vision_runner import describe_tower, run_tower

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vtprune_kernels"


# -- captured scores == eager attention maps reduced the same way ----------------------------------
@pytest.mark.parametrize(
    "build, rows, layers",
    [
        (tm.llava_clip, "cls", (2,)),
        (tm.llava_clip, "all", (0, 1, 3)),
        (tm.llava_siglip, "all", (1,)),
        (lambda: tm.internvl(qk_norm=True), "cls", (1,)),
        (lambda: tm.internvl(qk_norm=True), "all", (0, 2)),
    ],
    ids=["clip-cls", "clip-all", "siglip-all", "internvl-cls", "internvl-all"],
)
@pytest.mark.parametrize("backend", ["reference", BACKEND])
def test_captured_scores_equal_eager_maps(build, rows, layers, backend):
    model = build()
    size = model.config.vision_config.image_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    px = tm.pixels(3, size, seed=5)
    tower = describe_tower(model.model.vision_tower)
    with torch.no_grad():
        capture = VisionScoreCapture(tower, layers, rows, backend=backend)
        with capture:
            run_tower(tower, px, feature_layer=max(layers), last_layer=max(layers))
        got = capture.scores()
        _, attentions = tower_maps(eager_copy(model), px)
    if rows == "cls":
        want = torch.stack([attentions[i][:, :, 0, :].mean(1) for i in layers]).mean(0)
    else:
        want = torch.stack([attentions[i].mean(dim=(1, 2)) for i in layers]).mean(0)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    # the oracles' [CLS]-dropped reductions are the same numbers
    if rows == "cls" and tower.has_cls:
        torch.testing.assert_close(got[:, 1:], cls_attention(attentions[layers[0]]), atol=1e-6, rtol=1e-5)
    if rows == "all":
        torch.testing.assert_close(
            got[:, 1:] if tower.has_cls else got, received_attention(attentions, layers, tower.has_cls), atol=1e-6, rtol=1e-5
        )


def test_run_tower_features_equal_model_hidden_states():
    model = tm.llava_clip()
    px = tm.pixels(2, 70)
    tower = describe_tower(model.model.vision_tower)
    with torch.no_grad():
        hidden = model.model.vision_tower(pixel_values=px, output_hidden_states=True).hidden_states
        for layer in range(4):
            out = run_tower(tower, px, feature_layer=layer, last_layer=layer)
            assert torch.equal(out["features"], hidden[layer + 1])


@pytest.mark.parametrize("text", ["qwen2", "llama"])
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("backend", ["reference", BACKEND])
def test_llm_probe_equals_eager_instruction_attention(text, layer, backend):
    model = tm.internvl(text=text)
    embeds = torch.randn(1, 13, model.config.text_config.hidden_size, generator=torch.Generator().manual_seed(3))
    lm = model.model.language_model
    configs = [l.self_attn.config for l in lm.layers]
    with torch.no_grad():
        got = instruction_scores(lm, embeds, layer=layer, num_instruction_tokens=4, backend=backend)
        want = instruction_attention(eager_copy(model), embeds, layer, 4)
    assert [l.self_attn.config for l in lm.layers] == configs and all(c is lm.config for c in configs)
    assert lm.config._attn_implementation == "sdpa" != PROBE_ATTENTION
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_llm_probe_stops_after_its_block():
    model = tm.internvl(text="llama")
    layers = model.model.language_model.layers
    calls = [0] * len(layers)
    hooks = [l.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1)) for i, l in enumerate(layers)]
    try:
        with torch.no_grad():
            instruction_scores(model.model.language_model, torch.randn(1, 6, 64), layer=0, num_instruction_tokens=2, backend=BACKEND)
    finally:
        for h in hooks:
            h.remove()
    assert calls == [0, 0]  # block 0's attention raises before the block returns; block 1 never runs


def test_same_model_in_another_thread_during_a_probe_uses_its_own_attention():
    """Thread A probes block 1 and pauses inside block 0; meanwhile thread B runs the whole model,
    whose block 1 then reaches the probe function: it must get the model's own attention."""
    model = tm.internvl(text="qwen2")
    lm = model.model.language_model
    embeds = torch.randn(1, 9, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = lm(inputs_embeds=embeds).last_hidden_state
    results = {}

    def thread_a():
        results["a"] = instruction_scores(lm, embeds, layer=1, num_instruction_tokens=3, backend=BACKEND)

    def thread_b():
        assert lm.layers[1].self_attn.config._attn_implementation == PROBE_ATTENTION  # the probe is live
        with torch.no_grad():
            results["b"] = lm(inputs_embeds=embeds).last_hidden_state

    run_during(lm.layers[0], thread_a, thread_b)
    assert torch.equal(results["b"], reference)
    assert results["a"].shape == (9,)


# -- prompt surgery ---------------------------------------------------------------------------------
def test_rebuild_prompt_left_padding_and_labels():
    P = tm.IMAGE_TOKEN
    ids = torch.tensor([[0, 0, 5, P, P, P, 6], [7, P, P, P, 8, P, P]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    labels = torch.arange(14).view(2, 7)
    images = locate_images(ids, P, [3, 3, 2])
    assert [(i.row, i.positions.tolist()) for i in images] == [(0, [3, 4, 5]), (1, [1, 2, 3]), (1, [5, 6])]
    keep = [torch.tensor([True, False, True]), torch.tensor([False, False, True]), torch.tensor([False, False])]
    new_ids, new_mask, new_labels = rebuild_prompt(ids, mask, labels, images, keep, pad_token_id=0)
    assert new_ids.tolist() == [[5, P, P, 6], [0, 7, P, 8]]
    assert new_mask.tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
    assert new_labels.tolist() == [[2, 3, 5, 6], [-100, 7, 10, 11]]


def test_rebuild_prompt_without_padding():
    P = tm.IMAGE_TOKEN
    ids = torch.tensor([[5, P, P, 6], [7, P, P, 8]])
    images = locate_images(ids, P, [2, 2])
    same = rebuild_prompt(ids, None, None, images, [torch.tensor([True, False]), torch.tensor([False, True])], pad_token_id=0)
    assert same[0].tolist() == [[5, P, 6], [7, P, 8]] and same[1] is None
    # different kept counts and no mask: rows are left-padded and a mask is created
    new_ids, new_mask, _ = rebuild_prompt(ids, None, None, images, [torch.tensor([True, True]), torch.tensor([False, True])], pad_token_id=0)
    assert new_ids.tolist() == [[5, P, P, 6], [0, 7, P, 8]]
    assert new_mask.tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]


def test_prompt_surgery_errors():
    P = tm.IMAGE_TOKEN
    ids = torch.tensor([[5, P, P, 6], [P, P, 7, 8]])
    with pytest.raises(ValueError, match="4 image placeholders.*5 unpruned tokens"):
        locate_images(ids, P, [2, 3])
    with pytest.raises(ValueError, match="span several rows"):
        locate_images(ids, P, [3, 1])
    holes = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="contiguous"):
        rebuild_prompt(ids, holes, None, locate_images(ids, P, [2, 2]), [torch.ones(2, dtype=torch.bool)] * 2, pad_token_id=0)
    assert placeholder_runs(ids, P) == [(0, 1, 2), (1, 0, 2)]


# -- restore, independence, threads, unsupported models ---------------------------------------------
def _all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _restore_inputs(build, model):
    """One prompt with its pixels for ``build``'s model (Qwen-VL: an image and a 2-frame video)."""
    if build in (tm.qwen2_vl, tm.qwen2_5_vl, tm.qwen3_vl):
        image, video = (1, 4, 6), (2, 4, 4)
        ids, mask, types = tm.qwen_prompts([[("image", image), ("video", video)]], per_frame_runs=build is tm.qwen3_vl)
        return dict(
            input_ids=ids, attention_mask=mask, mm_token_type_ids=types, pixel_values=tm.qwen_pixels([image]),
            image_grid_thw=torch.tensor([image]), pixel_values_videos=tm.qwen_pixels([video]), video_grid_thw=torch.tensor([video]),
        )
    if build is tm.paddleocr_vl:
        image = (1, 4, 6)
        ids, mask, types = tm.qwen_prompts([[("image", image)]])
        return dict(
            input_ids=ids, attention_mask=mask, mm_token_type_ids=types, pixel_values=tm.paddle_pixels([image]),
            image_grid_thw=torch.tensor([image]),
        )
    if build is tm.llava_next:
        px = tm.pixels(1, 42, tiles=5)
        sizes = torch.tensor([[84, 84]])
        n = model.model.get_image_features(pixel_values=px, image_sizes=sizes).pooler_output[0].shape[0]
        ids, mask = tm.make_prompts([[n]])
        return dict(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=sizes)
    if build is tm.internvl:
        ids, mask = tm.make_prompts([[9]], wrap_images=True)
        return dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(1, 84))
    ids, mask = tm.make_prompts([[25]])
    return dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(1, 70))


@pytest.mark.parametrize(
    "build",
    [tm.llava_clip, tm.llava_next, tm.internvl, tm.qwen2_vl, tm.qwen2_5_vl, tm.qwen3_vl, tm.paddleocr_vl],
    ids=["llava", "llava_next", "internvl", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "paddleocr_vl"],
)
def test_leaving_the_context_restores_the_model_exactly(build):
    model = build()
    inputs = _restore_inputs(build, model)
    attn_before = (model.config.vision_config._attn_implementation, model.config.text_config._attn_implementation)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(**inputs).logits
        gen_before = model.generate(**inputs, max_new_tokens=2, do_sample=False)
        hooks_before = _all_hooks(model)  # transformers installs its own output-capturing hooks lazily
        with apply(model, HIVTP(layers=(0, 1)), backend=BACKEND):
            pruned = model(**inputs).logits
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
        after = model(**inputs).logits
        gen_after = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert pruned.shape[1] < before.shape[1]
    assert torch.equal(before, after) and torch.equal(gen_before, gen_after)
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert _all_hooks(model) == hooks_before
    assert (model.config.vision_config._attn_implementation, model.config.text_config._attn_implementation) == attn_before
    assert all(torch.equal(state_before[k], v) for k, v in model.state_dict().items())


def test_remove_is_idempotent_and_a_second_handle_is_refused():
    model = tm.llava_clip()
    handle = apply(model, Random(keep=3))
    with pytest.raises(RuntimeError, match="already has an active"):
        apply(model, Random(keep=3))
    handle.remove()
    handle.remove()
    apply(model, Uniform(keep=4)).remove()
    assert "forward" not in model.__dict__


def test_two_models_are_independent():
    a, b = tm.llava_clip(seed=0), tm.llava_clip(seed=1)
    ids, mask = tm.make_prompts([[25]])
    px = tm.pixels(1, 70)
    with torch.no_grad():
        b_before = b(input_ids=ids, attention_mask=mask, pixel_values=px).logits
        with apply(a, VisPruner(keep=4, step=2), backend=BACKEND):
            a_pruned = a(input_ids=ids, attention_mask=mask, pixel_values=px).logits
            b_during = b(input_ids=ids, attention_mask=mask, pixel_values=px).logits
    assert a_pruned.shape[1] == ids.shape[1] - 21
    assert torch.equal(b_before, b_during)


def test_two_handles_in_two_threads_do_not_interfere():
    llava, internvl = tm.llava_clip(), tm.internvl()
    jobs = {
        "llava": (llava, HIVTP(layers=(0, 1)), dict(zip(("input_ids", "attention_mask"), tm.make_prompts([[25], [25]]))), tm.pixels(2, 70)),
        "internvl": (internvl, HIVTP(layers=(0, 1)), dict(zip(("input_ids", "attention_mask"), tm.make_prompts([[18], [9]], wrap_images=True))), tm.pixels(3, 84)),
    }

    def run(name):
        model, method, text, px = jobs[name]
        with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
            logits = [model(**text, pixel_values=px).logits for _ in range(3)]
        return logits, handle.last_selection

    alone = {name: run(name) for name in jobs}
    together, errors = {}, []

    def worker(name):
        try:
            together[name] = run(name)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name in jobs:
        for got, want in zip(together[name][0], alone[name][0]):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        assert [s.tolist() for s in together[name][1]] == [s.tolist() for s in alone[name][1]]


def test_unsupported_model_is_a_clear_error():
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tm.text_config("llama"))
    with pytest.raises(TypeError, match="does not support LlamaForCausalLM.*LlavaForConditionalGeneration.*LlavaNext.*InternVL"):
        apply(model, Random(keep=3))
    with pytest.raises(ValueError, match="unsupported vision tower"):
        describe_tower(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="needs"):
        apply(tm.llava_clip(), object())


# -- the package never asks for attention maps -----------------------------------------------------
def test_package_never_requests_attention_maps():
    offenders = []
    pattern = re.compile(r"output_attentions\s*=\s*True|attn_implementation\s*=\s*[\"']eager[\"']|set_attn_implementation\(\s*[\"']eager")
    for path in PACKAGE.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
