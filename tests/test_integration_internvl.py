"""apply() on InternVL: selection on the pixel-shuffled tokens of each tile; PTP per image with the
LLM probe. Image 0 has 3 tiles (2 tiles + thumbnail), image 1 a single tile.

The hand pipeline pools the eager [CLS]/received maps by pushing them through the model's own
``pixel_shuffle`` as a 1-channel feature map and averaging the channels it stacks (independent of
``methods.pixel_shuffle_pool``), and computes PTP's instruction score from the eager LLM's maps.
"""
import pytest
import torch

import tiny_models as tm
from integration_oracles import (
    BACKEND,
    assert_pruned_forward_matches,
    eager_copy,
    hand_greedy_logits,
    hand_logits,
    instruction_attention,
    method_keep,
)
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply

T = 9  # tokens per tile after the pixel shuffle (6x6 patches -> 3x3)
TILES = [3, 1]
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=3, seed=2),
    "uniform": lambda: Uniform(keep=4),
    "ptp": lambda: PTP(prune_ratio=0.5, alpha=0.5, vision_layer=1, llm_layer=1),
}


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    return tm.internvl(text=request.param)


CHAT_TAIL = [2, 40, 41, 42]  # an end-of-turn token (the text config's eos, 2), then an "assistant" header


def _inputs(padding_side="left", chat_tail=False):
    ids, mask = tm.make_prompts([[TILES[0] * T], [TILES[1] * T]], wrap_images=True, padding_side=padding_side)
    if chat_tail:  # rows are left-padded: every row ends in the last column
        assert padding_side == "left"
        ids = torch.cat([ids, torch.tensor(CHAT_TAIL).expand(ids.shape[0], -1)], 1)
        mask = torch.cat([mask, torch.ones(mask.shape[0], len(CHAT_TAIL), dtype=mask.dtype)], 1)
    return ids, mask, tm.pixels(sum(TILES), 84, seed=7)


def _pool(model, scores):
    """[tiles, 36] patch scores -> [tiles, 9]: the model's own pixel shuffle, channel mean."""
    shuffled = model.model.pixel_shuffle(scores.reshape(-1, 6, 6, 1), scale_factor=0.5)
    return shuffled.reshape(scores.shape[0], T, -1).mean(-1)


def _hand_pruned(model, method, ids, mask, px):
    """(per-image projected kept features, per-image selection)."""
    eager = eager_copy(model)
    out = eager.model.vision_tower(pixel_values=px, output_attentions=True, output_hidden_states=True)
    last = out.last_hidden_state  # vision_feature_layer=-1: the tower's normed output
    shuffled = model.model.pixel_shuffle(last[:, 1:].reshape(-1, 6, 6, last.shape[-1]), scale_factor=0.5).reshape(len(px), T, -1)
    projected = model.model.multi_modal_projector(shuffled)
    if isinstance(method, PTP):
        b = _pool(model, out.attentions[method.vision_layer][:, :, 0, 1:].mean(1))
        keeps, first = [], 0
        for i, S in enumerate(TILES):
            c = _instruction_scores(model, eager, ids, mask, projected, i, method.llm_layer, method.instruction)
            keeps.append(method.select(last[first : first + S, 0], b[first : first + S], c, backend=BACKEND))
            first += S
        keep = torch.cat(keeps)
    else:
        cls_attn = received = None
        if isinstance(method, VisPruner):
            cls_attn = _pool(model, out.attentions[-1][:, :, 0, 1:].mean(1))
        if isinstance(method, HIVTP):
            received = _pool(model, torch.stack([out.attentions[i].mean(dim=(1, 2)) for i in method.layers]).mean(0)[:, 1:])
        keep = method_keep(method, grid=(3, 3), cls_attn=cls_attn, received=received, features=shuffled, batch=len(px))
    features, selections, first = [], [], 0
    for S in TILES:
        features.append(projected[first : first + S][keep[first : first + S]])
        selections.append(keep[first : first + S].flatten().nonzero().flatten().tolist())
        first += S
    return features, selections


def _instruction_rows(model, row_ids, mode):
    """(first, stop) of the instruction in a row's real tokens: "after_image" = everything after the
    last placeholder; "text" = after the </img> that follows it, before the first eos (or the end)."""
    last = int((row_ids == tm.IMAGE_TOKEN).nonzero().flatten()[-1])
    if mode == "after_image":
        return last + 1, len(row_ids)
    assert int(row_ids[last + 1]) == tm.END_IMAGE_TOKEN
    first = last + 2
    eos = (row_ids[first:] == model.config.text_config.eos_token_id).nonzero().flatten()
    return first, first + int(eos[0]) if eos.numel() else len(row_ids)


def _instruction_scores(model, eager, ids, mask, projected, image, layer, mode):
    """[S, T] c-scores of ``image`` (row ``image`` holds exactly that image) from the eager LLM, whose
    maps are computed on the row up to the end of the instruction."""
    row_ids = ids[image][mask[image].bool()]
    embeds = model.get_input_embeddings()(row_ids).clone()
    first = sum(TILES[:image])
    positions = (row_ids == tm.IMAGE_TOKEN).nonzero().flatten()
    embeds[positions] = projected[first : first + TILES[image]].reshape(-1, projected.shape[-1])
    start, stop = _instruction_rows(model, row_ids, mode)
    scores = instruction_attention(eager, embeds[None, :stop], layer, stop - start)
    return scores[positions].reshape(TILES[image], T)


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    ids, mask, px = _inputs()
    features, selections = _hand_pruned(model, method, ids, mask, px)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px)
    assert_pruned_forward_matches(model, method, inputs, features, selections, [S * T for S in TILES])


@pytest.mark.parametrize("instruction", ["text", "after_image"])
def test_ptp_instruction_tokens_with_a_chat_template_tail(model, instruction):
    """A prompt closing the user's turn (eos) and opening the assistant's: "text" probes the user's
    instruction only, "after_image" also </img> and the template's closing tokens."""
    method = PTP(prune_ratio=0.5, alpha=1.0, vision_layer=1, llm_layer=1, instruction=instruction)
    ids, mask, px = _inputs(chat_tail=True)
    features, selections = _hand_pruned(model, method, ids, mask, px)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=px)
    assert_pruned_forward_matches(model, method, inputs, features, selections, [S * T for S in TILES])


def test_ptp_instruction_modes_probe_different_rows(model):
    """alpha=1 ranks by the instruction score alone: the two modes see different query rows, so
    the hand pipeline of one mode must not match the other (guards the oracle against a no-op)."""
    ids, mask, px = _inputs(chat_tail=True)
    text = _hand_pruned(model, PTP(alpha=1.0, vision_layer=1, llm_layer=1, instruction="text"), ids, mask, px)[1]
    after = _hand_pruned(model, PTP(alpha=1.0, vision_layer=1, llm_layer=1, instruction="after_image"), ids, mask, px)[1]
    assert text != after


def test_ptp_generate_batch(model):
    """PTP keeps round(0.5 * S * T) per image (14 and 5 here: half up) with unequal per-tile budgets."""
    method = METHODS["ptp"]()
    ids, mask, px = _inputs()
    features, _ = _hand_pruned(model, method, ids, mask, px)
    assert [f.shape[0] for f in features] == [14, 5]
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(
            input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=3, do_sample=False,
            output_logits=True, return_dict_in_generate=True,
        )
    expected = hand_greedy_logits(model, ids, mask, features, tm.IMAGE_TOKEN, gen.sequences[:, -3:])
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_generate_expansion_keeps_each_sample_with_its_images(model):
    """num_return_sequences=2 makes generate repeat every sample (and its image features) itself;
    with PTP's unequal per-tile counts the features must still follow their sample."""
    method = METHODS["ptp"]()
    ids, mask, px = _inputs()
    features, _ = _hand_pruned(model, method, ids, mask, px)
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(
            input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=2, do_sample=True, top_k=1,
            num_return_sequences=2, output_logits=True, return_dict_in_generate=True,
        )
    repeated = [features[0], features[0], features[1], features[1]]
    expected = hand_greedy_logits(
        model, ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), repeated, tm.IMAGE_TOKEN, gen.sequences[:, -2:]
    )
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_ptp_forward_right_padding(model):
    """Right-padded rows stay right-padded; each row's real-token logits match the hand pipeline
    (left-padded there: the rotary embedding makes a constant position shift irrelevant)."""
    method = METHODS["ptp"]()
    ids, mask, px = _inputs(padding_side="right")
    features, _ = _hand_pruned(model, method, ids, mask, px)
    expected, expected_mask = hand_logits(model, ids, mask, features, tm.IMAGE_TOKEN)
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        out = model(input_ids=ids, attention_mask=mask, pixel_values=px)
    for b, n in enumerate(expected_mask.sum(1).tolist()):
        torch.testing.assert_close(out.logits[b, :n], expected[b, -n:], atol=1e-4, rtol=1e-4)


def test_ptp_rejects_a_prompt_without_instruction(model):
    ids, mask = tm.make_prompts([[T]], wrap_images=True, text_after=0)
    ids, mask = ids[:, :-2], mask[:, :-2]  # drop "</img>" and the token after it: the image ends the prompt
    with apply(model, METHODS["ptp"](), backend=BACKEND):
        with pytest.raises(ValueError, match="instruction tokens after the last image"):
            model(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(1, 84))
