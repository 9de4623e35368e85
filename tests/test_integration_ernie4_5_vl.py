"""apply() on ERNIE 4.5-VL: a Qwen2-VL-like tower, the resampler on kept tokens, video frame pairs,
3-D positions and the MoE's vision-token routing (``moe_mm_token_type_ids``).

The batch: row 0 holds one 6x10-patch image (3x5 merged tokens); row 1 a 4x4-patch image and a 4-frame
4x4-patch video (2 frame pairs of 2x2 tokens: the image and the pairs share a merged grid, and are
selected apart). Every pruned forward is compared with the independent hand pipeline of ernie_oracles.py.
"""
import pytest
import torch

import tiny_models as tm
from ernie_oracles import assert_forward_matches_hand, assert_generate_matches_hand, hand_keep, hand_logits, media_of_call
from integration_oracles import BACKEND
from qwen_oracles import eager_patch_scores
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply
from vtprune_kernels.integrations.ernie4_5_vl import resample_kept
from vtprune_kernels.integrations.qwen_tower import describe_tower, run_tower

IMAGES = [(1, 6, 10), (1, 4, 4)]
VIDEOS = [(4, 4, 4)]
TOKENS = [15, 4, 8]  # language-model tokens per image / video
METHODS = {
    "vispruner": lambda: VisPruner(keep=3, step=2),
    "vispruner-layer": lambda: VisPruner(keep=3, important_ratio=0.4, step=1, score_layer=1),
    "hivtp": lambda: HIVTP(layers=(1, 3), region_ratio=0.5),
    "random": lambda: Random(keep=3, seed=4),
    "uniform": lambda: Uniform(keep=2),
}


@pytest.fixture(scope="module")
def model():
    return tm.ernie4_5_vl()


def _inputs(padding_side="left", videos=True, images=True):
    rows = [[("image", IMAGES[0])] if images else [], ([("image", IMAGES[1])] if images else []) + ([("video", VIDEOS[0])] if videos else [])]
    if not images:
        rows = [[("video", VIDEOS[0])], [("video", (2, 4, 6))]]
    ids, mask, types, moe = tm.ernie_prompts(rows, padding_side=padding_side)
    inputs = dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=types, moe_mm_token_type_ids=moe)
    if images:
        inputs.update(pixel_values=tm.ernie_pixels(IMAGES, seed=2), image_grid_thw=torch.tensor(IMAGES))
    if videos:
        grids = VIDEOS if images else [VIDEOS[0], (2, 4, 6)]
        inputs.update(pixel_values_videos=tm.ernie_pixels(grids, seed=3), video_grid_thw=torch.tensor(grids))
    return inputs


def _hand(model, method, inputs):
    return hand_keep(model, method, media_of_call(inputs))


# -- the tower -------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [(1,), (0, 3)])
def test_captured_scores_equal_eager_maps(model, layers):
    """Per-frame capture, pooled onto merged tokens, equals dense maps recomputed from the blocks' inputs."""
    tower = describe_tower(model.model.vision_tower)
    grid = torch.tensor(IMAGES + VIDEOS)
    pixels = tm.ernie_pixels(IMAGES + VIDEOS, seed=5)
    with torch.no_grad():
        run = run_tower(tower, pixels, grid, layers, backend=BACKEND)
    want = eager_patch_scores(model, pixels, grid, layers).view(-1, 4).mean(-1)
    assert run.segments == len(layers) * 6  # one attention segment per frame: 2 images, 4 video frames
    torch.testing.assert_close(run.scores, want, atol=1e-6, rtol=1e-5)


def test_resampler_on_every_token_is_the_models_own(model):
    """``ln`` on the last block's output, then ``resample_kept`` on every token (images: frames=1; a
    video's pairs: frames=2) give the model's own features bit for bit."""
    tower = describe_tower(model.model.vision_tower)
    C = tower.hidden_size
    resampler, ln = model.model.resampler_model, model.model.vision_tower.ln
    with torch.no_grad():
        for pixels, grid, frames, features in (
            (tm.ernie_pixels(IMAGES), torch.tensor(IMAGES), 1, model.model.get_image_features),
            (tm.ernie_pixels([(2, 4, 6)]), torch.tensor([(2, 4, 6)]), 2, model.model.get_video_features),
        ):
            run = run_tower(tower, pixels, grid, (), backend=BACKEND)
            merged = ln(run.merged.reshape(-1, C)).reshape(run.merged.shape)
            if frames == 2:  # one pair of 2x3 merged tokens: frame 0's row, then frame 1's
                merged = torch.cat([merged[:6], merged[6:]], dim=-1)
            assert torch.equal(resample_kept(resampler, merged, frames), torch.cat(features(pixels, grid).pooler_output))
    assert tower.merger is None and tower.full_attention_layers == (0, 1, 2, 3) and not tower.windowed


# -- pruned forward == hand pipeline ----------------------------------------------------------------
@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = _hand(model, method, inputs)
    handle = assert_forward_matches_hand(model, method, inputs, keep)
    assert [s.tolist() for s in handle.last_selection] == [k.nonzero().flatten().tolist() for k, _ in keep]
    assert handle.last_num_tokens == TOKENS


def test_budgets_are_per_image_and_per_frame_pair(model):
    inputs = _inputs()
    with torch.no_grad(), apply(model, VisPruner(keep=3, step=2), backend=BACKEND) as handle:
        model(**inputs)
    image_a, image_b, video = handle.last_selection
    assert (image_a.numel(), image_b.numel()) == (3, 3)
    assert (video < 4).sum() == 3 and (video >= 4).sum() == 3  # 3 per pair of 2x2 merged tokens


def test_prompt_and_token_types_shortened_alike(model):
    """input_ids, mm_token_type_ids and moe_mm_token_type_ids lose the same columns (the markers stay,
    routed to the vision experts); the positions are the unpruned ones of the kept columns."""
    inputs = _inputs()
    with torch.no_grad(), apply(model, Uniform(keep=2), backend=BACKEND) as handle:
        prepared = handle.prepare_inputs(**inputs)
    ids, types, moe = prepared["input_ids"], prepared["mm_token_type_ids"], prepared["moe_mm_token_type_ids"]
    assert ids.shape == types.shape == moe.shape == prepared["attention_mask"].shape
    visual = (ids == tm.IMAGE_TOKEN) | (ids == tm.VIDEO_TOKEN)
    assert torch.equal(types != 0, visual) and torch.equal(moe[visual], types[visual])
    markers = torch.isin(ids, torch.tensor([tm.ERNIE_IMAGE_START, tm.ERNIE_IMAGE_END, tm.ERNIE_VIDEO_START, tm.ERNIE_VIDEO_END]))
    assert torch.equal((moe != 0) & prepared["attention_mask"].bool(), visual | markers)
    assert visual.sum(1).tolist() == [2, 2 + 2 * 2]
    positions, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"], inputs["video_grid_thw"], inputs["attention_mask"])
    for b in range(2):
        real = prepared["attention_mask"][b].bool()
        assert prepared["position_ids"][:, b, real].tolist() == positions[:, b, _kept_columns(inputs, b, handle)].tolist()


def _kept_columns(inputs, b, handle):
    """The columns of row b that the pruned prompt keeps (from the handle's selection)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    keep = mask[b].bool().clone()
    flat = {"image": [], "video": []}
    for sel, n, kind in zip(handle.last_selection, handle.last_num_tokens, ["image", "image", "video"]):
        k = torch.zeros(n, dtype=torch.bool)
        k[sel] = True
        flat[kind].append(k)
    for kind, token in (("image", tm.IMAGE_TOKEN), ("video", tm.VIDEO_TOKEN)):
        all_rows = torch.cat(flat[kind])
        where = ids == token
        before = int(where[:b].sum())
        keep[where[b]] = all_rows[before : before + int(where[b].sum())]
    return keep.nonzero().flatten()


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        unpruned_gen = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        for method in (VisPruner(keep=100, step=2), HIVTP(layers=(1,), region_ratio=1.0), Random(keep=100), Uniform(keep=100)):
            with apply(model, method, backend=BACKEND) as handle:
                out = model(**inputs).logits
                gen = model.generate(**inputs, max_new_tokens=3, do_sample=False)
            assert handle.last_num_tokens == TOKENS and [s.numel() for s in handle.last_selection] == TOKENS, method
            assert torch.equal(out, unpruned), method
            assert torch.equal(gen, unpruned_gen), method


def test_keeping_everything_of_a_long_video_gives_the_unpruned_generation(model):
    """A video longer (8 pairs) than its grid is wide (2x2): the model's text after it restarts below the
    video's last temporal position; keeping everything generates exactly as the unpruned model."""
    grids = [(16, 4, 4), (16, 4, 4)]
    ids, mask, types, moe = tm.ernie_prompts([[("video", grids[0])], [("video", grids[1])]])
    inputs = dict(
        input_ids=ids, attention_mask=mask, mm_token_type_ids=types, moe_mm_token_type_ids=moe,
        pixel_values_videos=tm.ernie_pixels(grids, seed=7), video_grid_thw=torch.tensor(grids),
    )
    with torch.no_grad():
        unpruned = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
        with apply(model, Uniform(keep=4), backend=BACKEND):
            pruned = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(pruned.sequences, unpruned.sequences)
    assert all(torch.equal(a, b) for a, b in zip(pruned.logits, unpruned.logits))


def test_generate_matches_hand_greedy_steps(model):
    """Left padding, different kept counts per row: every decoding step's logits equal the hand
    pipeline's (new tokens at the unpruned max position + 1, + 2, ...; routed to the text experts)."""
    method = HIVTP(layers=(1, 3), region_ratio=0.5)
    inputs = _inputs()
    keep = _hand(model, method, inputs)
    assert len({int(k.sum()) for k, _ in keep}) > 1
    sequences = assert_generate_matches_hand(model, method, inputs, keep)
    assert torch.equal(sequences[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_generate_expansion_keeps_each_sample_with_its_media(model):
    """num_return_sequences repeats each row with its own media and token types."""
    method = VisPruner(keep=2, step=1)
    inputs = _inputs()
    keep = _hand(model, method, inputs)
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(
            **inputs, max_new_tokens=2, do_sample=True, top_k=1, num_return_sequences=2, output_logits=True,
            return_dict_in_generate=True,
        )
    for t, got in enumerate(gen.logits):
        want, _ = hand_logits(model, inputs, keep, gen.sequences[::2, -2 : -2 + t] if t else None)
        torch.testing.assert_close(got[::2], want[:, -1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[1::2], want[:, -1], atol=1e-4, rtol=1e-4)


def test_leaving_the_context_restores_the_model_exactly(model):
    inputs = _inputs()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attn = model.config.vision_config._attn_implementation
    with torch.no_grad():
        before = model(**inputs).logits
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        with apply(model, HIVTP(layers=(0, 1)), backend=BACKEND):
            assert model(**inputs).logits.shape[1] < before.shape[1]
        after = model(**inputs).logits
    assert torch.equal(before, after) and "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert model.config.vision_config._attn_implementation == attn
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_hand_written_decoding_loop_uses_the_rope_deltas(model):
    """Prefill through the pruned forward, then decode without position_ids: the rope_deltas the pruned call
    set place the new token at the unpruned max + 1 (one unpadded row: transformers derives decoding
    positions from the deltas correctly only without an attention mask)."""
    method = VisPruner(keep=2, step=1)
    grids = [(1, 4, 4)]
    ids, mask, types, moe = tm.ernie_prompts([[("image", grids[0]), ("video", VIDEOS[0])]])
    one = dict(
        input_ids=ids, mm_token_type_ids=types, moe_mm_token_type_ids=moe, pixel_values=tm.ernie_pixels(grids, seed=2),
        image_grid_thw=torch.tensor(grids), pixel_values_videos=tm.ernie_pixels(VIDEOS, seed=3), video_grid_thw=torch.tensor(VIDEOS),
    )
    keep = _hand(model, method, one)
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        out = model(**one, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        step = model(input_ids=token, cache=out.cache, use_cache=True)
    expected, _ = hand_logits(model, dict(one, attention_mask=mask), keep, token)
    torch.testing.assert_close(step.logits[:, -1], expected[:, -1], atol=1e-4, rtol=1e-4)


def test_right_padding(model):
    method = Uniform(keep=3)
    inputs = _inputs(padding_side="right")
    expected, expected_mask = hand_logits(model, inputs, _hand(model, method, inputs))
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        out = model(**inputs)
    for b, n in enumerate(expected_mask.sum(1).tolist()):
        torch.testing.assert_close(out.logits[b, :n], expected[b, -n:], atol=1e-4, rtol=1e-4)


def test_images_only_without_token_types(model):
    """Images alone; mm_token_type_ids derived from the placeholders, no moe_mm_token_type_ids (every
    token on the text experts, as the unpruned model does without them)."""
    method = Random(keep=2, seed=1)
    inputs = _inputs(videos=False)
    inputs.pop("moe_mm_token_type_ids")
    assert_forward_matches_hand(model, method, inputs, _hand(model, method, inputs), drop=("mm_token_type_ids",))


def test_videos_only(model):
    method = VisPruner(keep=2, step=1)
    inputs = _inputs(images=False)
    handle = assert_forward_matches_hand(model, method, inputs, _hand(model, method, inputs))
    assert [s.numel() for s in handle.last_selection] == [2 * 2, 1 * 2] and handle.last_num_tokens == [8, 6]


def test_default_hivtp_and_vispruner_run(model):
    deep = tm.ernie4_5_vl(depth=10)
    assert describe_tower(deep.model.vision_tower).middle_layers() == (6, 7, 8, 9)
    inputs = _inputs()
    for method in (HIVTP(), VisPruner(keep=3)):
        with torch.no_grad(), apply(deep, method, backend=BACKEND) as handle:
            deep(**inputs)
        assert len(handle.last_selection) == 3


# -- errors ----------------------------------------------------------------------------------------
def test_ptp_is_refused(model):
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match=r"PTP needs a vision tower with a \[CLS\] token"):
            model(**_inputs())


def test_bad_inputs(model):
    inputs = _inputs()
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="needs image_grid_thw"):
            model(**{k: v for k, v in inputs.items() if k != "image_grid_thw"})
        with pytest.raises(ValueError, match="implies"):
            model(**dict(inputs, image_grid_thw=torch.tensor([(1, 6, 10), (1, 4, 6)])))
        with pytest.raises(ValueError, match=r"video_grid_thw: .*even number of frames, got t = \[3\]"):
            model(**dict(inputs, pixel_values_videos=tm.ernie_pixels([(3, 4, 4)]), video_grid_thw=torch.tensor([(3, 4, 4)])))
        with pytest.raises(ValueError, match="merge blocks"):
            model(**dict(inputs, pixel_values=tm.ernie_pixels([(1, 5, 10), (1, 4, 4)]), image_grid_thw=torch.tensor([(1, 5, 10), (1, 4, 4)])))
        with pytest.raises(ValueError, match=r"moe_mm_token_type_ids shape \(2, 3\)"):
            model(**dict(inputs, moe_mm_token_type_ids=inputs["moe_mm_token_type_ids"][:, :3]))
