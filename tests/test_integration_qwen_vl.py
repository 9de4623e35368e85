"""apply() on Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5: dynamic-resolution images and videos,
received-attention scores, the 2x2 merged grid, exact M-RoPE positions and DeepStack.

The batch: row 0 holds one 6x10-patch image (3x5 merged tokens: odd, non-square); row 1 holds a
4x6-patch image and a 2-frame 4x4-patch video (Qwen3-VL: one run per frame, timestamps between).
Every pruned forward is compared with the independent hand pipeline of qwen_oracles.py.
"""
import pytest
import torch

import tiny_models as tm
from qwen_oracles import (
    BACKEND,
    assert_forward_matches_hand,
    assert_generate_matches_hand,
    assert_right_padded_forward_matches_hand,
    eager_patch_scores,
    hand_greedy_logits,
    hand_keep,
    hand_logits,
)
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.integrations.qwen_tower import describe_tower, merge_kept, run_tower

BUILDERS = {
    "qwen2_vl": tm.qwen2_vl, "qwen2_5_vl": tm.qwen2_5_vl, "qwen3_vl": tm.qwen3_vl, "qwen3_5": tm.qwen3_5,
    "qwen3_vl_moe": lambda **kw: tm.qwen3_vl(moe=True, **kw), "qwen3_5_moe": lambda **kw: tm.qwen3_5(moe=True, **kw),
}
FAMILIES = {
    "Qwen2VLForConditionalGeneration": "qwen2_vl", "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl", "Qwen3_5ForConditionalGeneration": "qwen3_5",
    "Qwen3VLMoeForConditionalGeneration": "qwen3_vl_moe", "Qwen3_5MoeForConditionalGeneration": "qwen3_5_moe",
}
IMAGES = [(1, 6, 10), (1, 4, 6)]
VIDEOS = [(2, 4, 4)]
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "vispruner-layer": lambda: VisPruner(keep=5, important_ratio=0.4, step=1, score_layer=1),
    "vispruner-last": lambda: VisPruner(keep=4, step=2, score_layer=-1),
    "hivtp": lambda: HIVTP(layers=(1, 3), region_ratio=0.5),
    "hivtp-windowed": lambda: HIVTP(layers=(0, 2)),
    "random": lambda: Random(keep=3, seed=4),
    "uniform": lambda: Uniform(keep=2),
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def model(request):
    return BUILDERS[request.param]()


def _family(model):
    return FAMILIES[type(model).__name__]


def _is_qwen3(model):
    """Qwen3-VL and Qwen3.5 write a video as one placeholder run per frame, timestamps between."""
    return _family(model) in ("qwen3_vl", "qwen3_5", "qwen3_vl_moe", "qwen3_5_moe")


def _windowed(model):
    """Qwen2.5-VL: windows in every block but 1 and 3 of the tiny tower."""
    return _family(model) == "qwen2_5_vl"


def _inputs(model, padding_side="left", videos=True):
    rows = [[("image", IMAGES[0])], [("image", IMAGES[1])] + ([("video", VIDEOS[0])] if videos else [])]
    ids, mask, types = tm.qwen_prompts(rows, per_frame_runs=_is_qwen3(model), padding_side=padding_side)
    inputs = dict(
        input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
        pixel_values=tm.qwen_pixels(IMAGES, seed=2), image_grid_thw=torch.tensor(IMAGES),
    )
    if videos:
        inputs.update(pixel_values_videos=tm.qwen_pixels(VIDEOS, seed=3), video_grid_thw=torch.tensor(VIDEOS))
        if _windowed(model):  # Qwen2.5-VL's temporal positions follow the video's time
            inputs["second_per_grid_ts"] = torch.tensor([1.5])
    return inputs


def _media(inputs):
    """Per image, then per video: its patches and grid (the hand pipeline runs each on its own)."""
    media = []
    for pixels_key, grid_key in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
        if inputs.get(pixels_key) is None:
            continue
        first = 0
        for grid in inputs[grid_key]:
            n = int(grid.prod())
            media.append(dict(pixels=inputs[pixels_key][first : first + n], grid=grid, kind="image" if grid_key == "image_grid_thw" else "video"))
            first += n
    return media


def _hand(model, method, inputs):
    media = _media(inputs)
    keep = hand_keep(model, method, media)
    return keep, list(zip(keep, [m["kind"] for m in media]))


# -- scores ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [(1,), (0, 3), (2,)], ids=["full", "window+full", "windowed"])
@pytest.mark.parametrize("backend", ["reference", BACKEND])
def test_captured_scores_equal_eager_maps(model, layers, backend):
    """Per-chunk capture (frames in full-attention blocks, windows in Qwen2.5-VL's others), put back
    in merge order and pooled, equals dense eager maps reduced the same way."""
    tower = describe_tower(model.model.visual)
    grid = torch.tensor(IMAGES + VIDEOS)
    pixels = tm.qwen_pixels(IMAGES + VIDEOS, seed=5)
    with torch.no_grad():
        run = run_tower(tower, pixels, grid, layers, backend=backend)
    want = eager_patch_scores(model, pixels, grid, layers).view(-1, 4).mean(-1)
    assert run.scores.dtype == torch.float32
    # frames (3 + 2 frames) in full-attention blocks, windows of 2x2 merged tokens in the others
    windows = [2 * 3, 1 * 2, 1, 1] if _windowed(model) else None  # 3x5, 2x3, 2x2, 2x2 merged
    expected = sum(4 if windows is None or layer in (1, 3) else sum(windows) for layer in layers)
    assert run.segments == expected and run.segments_with_lse == expected  # SDPA's CPU kernel gives the LSE
    torch.testing.assert_close(run.scores, want, atol=1e-6, rtol=1e-5)


def test_tower_run_is_the_models_own_computation(model):
    """Scoring every block leaves the tower's output bit for bit the model's: the merger (and every
    DeepStack merger) on all tokens of the run gives the model's own features, in its order; the
    vision config's attention implementation is back afterwards."""
    visual = model.model.visual
    tower = describe_tower(visual)
    grid = torch.tensor(IMAGES + VIDEOS)
    pixels = tm.qwen_pixels(IMAGES + VIDEOS)
    with torch.no_grad():
        want = model.model.get_image_features(pixels, grid)
        run = run_tower(tower, pixels, grid, range(tower.num_layers), backend=BACKEND)
        C = tower.hidden_size
        assert torch.equal(merge_kept(tower.merger, run.merged, C), torch.cat(want.pooler_output))
        for level, merger in enumerate(tower.deepstack_mergers or ()):
            assert torch.equal(merge_kept(merger, run.deepstack[level], C), torch.cat(want.deepstack_features[level]))
    assert len(run.deepstack) == len(tower.deepstack_layers) == (2 if _family(model) in ("qwen3_vl", "qwen3_vl_moe") else 0)
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert all(b.attn.config is model.config.vision_config for b in visual.blocks)


# -- pruned forward == hand pipeline ----------------------------------------------------------------
@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs(model)
    keep, tagged = _hand(model, method, inputs)
    handle = assert_forward_matches_hand(model, method, inputs, tagged)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k in keep]
    assert handle.last_num_tokens == [15, 6, 8]


def test_budgets_are_per_image_and_per_frame(model):
    inputs = _inputs(model)
    with torch.no_grad(), apply(model, VisPruner(keep=3, step=2), backend=BACKEND) as handle:
        model(**inputs)
    image_a, image_b, video = handle.last_selection
    assert (image_a.numel(), image_b.numel()) == (3, 3)
    assert (video < 4).sum() == 3 and (video >= 4).sum() == 3  # 3 per frame of 2x2 merged tokens


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs(model)
    with torch.no_grad():
        unpruned = model(**inputs).logits
        unpruned_gen = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        for method in (VisPruner(keep=100, step=2), HIVTP(layers=(1,), region_ratio=1.0), Random(keep=100), Uniform(keep=100)):
            with apply(model, method, backend=BACKEND) as handle:
                out = model(**inputs).logits
                gen = model.generate(**inputs, max_new_tokens=3, do_sample=False)
            assert [s.numel() for s in handle.last_selection] == [15, 6, 8], method
            assert torch.equal(out, unpruned), method
            assert torch.equal(gen[:, -3:], unpruned_gen[:, -3:]), method


def test_generate_matches_hand_greedy_steps(model):
    """Different kept counts per row (HIVTP), left padding: every decoding step's logits equal the
    hand pipeline's, whose new tokens sit at the unpruned max position + 1, + 2, ..."""
    method = HIVTP(layers=(1, 3), region_ratio=0.5)
    inputs = _inputs(model)
    assert_generate_matches_hand(model, method, inputs, _hand(model, method, inputs)[1])


def test_hand_written_decoding_loop_uses_the_rope_deltas(model):
    """Prefill through the pruned forward, then decode without position_ids: the model's own
    rope_deltas (set by the pruned call) must place the new token at the unpruned max + 1.
    (transformers derives decoding positions from the deltas correctly only for unpadded rows
    without an attention mask, so the loop runs on one row.)"""
    method = VisPruner(keep=2, step=1)
    inputs = _inputs(model)
    one = {k: v[1:] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v for k, v in inputs.items()}
    for key, grid_key in (("pixel_values", "image_grid_thw"),):  # row 1 holds the second image and the video
        first = int(inputs[grid_key][0].prod())
        one[key], one[grid_key] = inputs[key][first:], inputs[grid_key][1:]
    one = {k: v[..., one["attention_mask"][0].bool()] if k in ("input_ids", "mm_token_type_ids") else v for k, v in one.items()}
    del one["attention_mask"]
    _, tagged = _hand(model, method, one)
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        out = model(**one, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        step = model(input_ids=token, cache=out.cache, use_cache=True)
    hand_inputs = dict(one, attention_mask=torch.ones_like(one["input_ids"]))
    expected, _ = hand_logits(model, hand_inputs, tagged, token)
    torch.testing.assert_close(step.logits[:, -1], expected[:, -1], atol=1e-4, rtol=1e-4)
    assert handle.last_num_tokens == [6, 8]


def test_right_padding(model):
    """Right-padded rows stay right-padded; each row's real-token logits match the hand pipeline's."""
    method = Uniform(keep=3)
    inputs = _inputs(model, padding_side="right")
    prepared = assert_right_padded_forward_matches_hand(model, method, inputs, _hand(model, method, inputs)[1])
    mask = prepared["attention_mask"]
    assert bool(mask[:, 0].all()) and not bool(mask[:, -1].all())  # still right-padded


def test_images_only_and_no_mm_token_type_ids(model):
    """Without videos, and without the processor's mm_token_type_ids (derived from the placeholders)."""
    method = Random(keep=2, seed=1)
    inputs = _inputs(model, videos=False)
    assert_forward_matches_hand(model, method, inputs, _hand(model, method, inputs)[1], drop=("mm_token_type_ids",))


def test_videos_only(model):
    """A call with videos and no images: per-frame selection, temporal positions kept."""
    method = VisPruner(keep=2, step=1)
    ids, mask, types = tm.qwen_prompts([[("video", VIDEOS[0])], [("video", (3, 4, 6))]], per_frame_runs=_is_qwen3(model))
    grids = [VIDEOS[0], (3, 4, 6)]
    inputs = dict(
        input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
        pixel_values_videos=tm.qwen_pixels(grids, seed=6), video_grid_thw=torch.tensor(grids),
    )
    handle = assert_forward_matches_hand(model, method, inputs, _hand(model, method, inputs)[1])
    assert [s.numel() for s in handle.last_selection] == [2 * 2, 3 * 2] and handle.last_num_tokens == [8, 18]


def test_generate_expansion_keeps_each_sample_with_its_media(model):
    method = HIVTP(layers=(1, 3), region_ratio=0.5)
    inputs = _inputs(model)
    _, tagged = _hand(model, method, inputs)
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(
            **inputs, max_new_tokens=2, do_sample=True, top_k=1, num_return_sequences=2,
            output_logits=True, return_dict_in_generate=True,
        )
    expected = hand_greedy_logits(model, inputs, tagged, gen.sequences[::2, -2:])
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got[::2], want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[1::2], want, atol=1e-4, rtol=1e-4)


# -- defaults, restore, errors ---------------------------------------------------------------------
def test_default_scored_layers():
    released = tm.qwen2_5_vl(depth=32, fullatt=(7, 15, 23, 31))
    tower = describe_tower(released.model.visual)
    assert tower.middle_layers() == (15, 23) and tower.feature_score_layer() == 31
    assert describe_tower(tm.qwen2_5_vl(depth=6, fullatt=(1, 3, 5)).model.visual).middle_layers() == (3,)
    odd = describe_tower(tm.qwen2_5_vl(depth=6, fullatt=(1, 3)).model.visual)
    assert odd.feature_score_layer() == 3 and odd.middle_layers() == (1, 3)
    qwen2 = describe_tower(tm.qwen2_vl(depth=12).model.visual)
    assert qwen2.middle_layers() == (6, 7, 8, 9) and qwen2.feature_score_layer() == 11
    assert qwen2.full_attention_layers == tuple(range(12)) and not qwen2.windowed and qwen2.hidden_size == 32
    qwen3 = describe_tower(tm.qwen3_vl(depth=12).model.visual)
    assert qwen3.middle_layers() == (6, 7, 8, 9) and qwen3.feature_score_layer() == 11
    assert qwen3.full_attention_layers == tuple(range(12)) and not qwen3.windowed


def test_default_hivtp_and_vispruner_run(model):
    inputs = _inputs(model)
    deep = BUILDERS[_family(model)](depth=10)
    for method in (HIVTP(), VisPruner(keep=3)):
        with torch.no_grad(), apply(deep, method, backend=BACKEND) as handle:
            deep(**inputs)
        assert len(handle.last_selection) == 3


def test_ptp_is_refused(model):
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match=r"PTP needs a vision tower with a \[CLS\] token"):
            model(**_inputs(model))


def test_bad_inputs(model):
    inputs = _inputs(model, videos=False)
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="needs image_grid_thw"):
            model(**{k: v for k, v in inputs.items() if k != "image_grid_thw"})
        with pytest.raises(ValueError, match="implies"):
            model(**dict(inputs, image_grid_thw=torch.tensor([(1, 6, 10), (1, 4, 4)])))
        with pytest.raises(ValueError, match="merge blocks"):
            model(**dict(inputs, pixel_values=tm.qwen_pixels([(1, 5, 10), (1, 4, 6)]), image_grid_thw=torch.tensor([(1, 5, 10), (1, 4, 6)])))
        with pytest.raises(ValueError, match="placeholders"):
            model(**dict(inputs, pixel_values=tm.qwen_pixels([(1, 6, 10), (1, 4, 8)]), image_grid_thw=torch.tensor([(1, 6, 10), (1, 4, 8)])))
