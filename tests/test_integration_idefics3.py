"""apply() on Idefics3 and SmolVLM: per tile (every split tile and the global image), on the pixel-shuffled
grid (6x6 patches -> 3x3 tokens here); the batch's all-zero padding images dropped as the model drops them.

The hand pipeline: scores from an eager copy's attention maps pooled with ``avg_pool2d`` written here, the
methods' own ``select``, kept features from the model's own ``get_image_features``, the language model
on the hand-built sequence (integration_oracles)."""
import pytest
import torch
import torch.nn.functional as F

import tiny_models as tm
from integration_oracles import BACKEND, assert_pruned_forward_matches, eager_copy, hand_greedy_logits, method_keep
from integration_oracles import received_attention
from vtprune_kernels import HIVTP, PTP, Random, Uniform, VisPruner, apply

T = 9  # tokens per tile
METHODS = {
    "vispruner": lambda: VisPruner(keep=4, step=2),
    "vispruner-layer": lambda: VisPruner(keep=3, step=1, score_layer=0),
    "hivtp": lambda: HIVTP(layers=(0, 1), region_ratio=0.5),
    "random": lambda: Random(keep=5, seed=1),
    "uniform": lambda: Uniform(keep=4),
}
TILES = [3, 1]  # row 0: an image split in 2 tiles + its global image; row 1: one image (plus two padding images)


@pytest.fixture(scope="module", params=[False, True], ids=["idefics3", "smolvlm"])
def model(request):
    return tm.idefics3(smolvlm=request.param)


def _inputs(padding_side="left"):
    ids, mask = tm.make_prompts([[T] * n for n in TILES], wrap_images=True, padding_side=padding_side)
    px = torch.zeros(len(TILES), max(TILES), 3, 84, 84)
    for b, n in enumerate(TILES):
        px[b, :n] = tm.pixels(n, 84, seed=10 + b)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=px)


def hand_keep(model, method, pixel_values):
    tiles = torch.cat([pixel_values[b, :n] for b, n in enumerate(TILES)])
    eager = eager_copy(model)
    with torch.no_grad():
        out = eager.model.vision_model(pixel_values=tiles, output_attentions=True, output_hidden_states=True)
    last = model.config.vision_config.num_hidden_layers - 1
    layers = {VisPruner: lambda m: [last if m.score_layer is None else m.score_layer % (last + 1)], HIVTP: lambda m: m.layers}
    received = None
    if type(method) in layers:
        received = received_attention(out.attentions, layers[type(method)](method), has_cls=False)
        received = F.avg_pool2d(received.view(-1, 1, 6, 6), 2).flatten(1)
    features = model.model.connector.pixel_shuffle(out.last_hidden_state, 2)
    return method_keep(method, grid=(3, 3), received=received, features=features, batch=tiles.shape[0])


def hand_features(model, pixel_values, keep):
    with torch.no_grad():
        full = torch.cat(model.model.get_image_features(pixel_values).pooler_output).view(-1, T, model.config.text_config.hidden_size)
    return [tile[k] for tile, k in zip(full, keep)]


@pytest.mark.parametrize("method_name", list(METHODS))
def test_pruned_forward_matches_hand_pipeline(model, method_name):
    method = METHODS[method_name]()
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
    features = hand_features(model, inputs["pixel_values"], keep)
    selections = [k.nonzero().flatten().tolist() for k in keep]
    assert_pruned_forward_matches(model, method, inputs, features, selections, [T] * sum(TILES))


def test_keeping_everything_gives_the_unpruned_logits(model):
    inputs = _inputs()
    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=T, step=2), Uniform(keep=T)):
            with apply(model, method, backend=BACKEND):
                assert torch.equal(model(**inputs).logits, unpruned), method


def test_generate_batch(model):
    method = HIVTP(layers=(1, 2), region_ratio=0.5)
    inputs = _inputs()
    keep = hand_keep(model, method, inputs["pixel_values"])
    features = hand_features(model, inputs["pixel_values"], keep)
    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
    expected = hand_greedy_logits(model, inputs["input_ids"], inputs["attention_mask"], features, tm.IMAGE_TOKEN, gen.sequences[:, -3:])
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_padded_tiles_ptp_and_bad_pixels_are_clear_errors(model):
    inputs = _inputs()
    mask = torch.ones(len(TILES), max(TILES), 84, 84, dtype=torch.bool)
    mask[0, 0, :, 70:] = False  # a tile padded on the right
    with apply(model, Uniform(keep=2)):
        with pytest.raises(ValueError, match="padded inside"):
            model(**inputs, pixel_attention_mask=mask)
        with pytest.raises(ValueError, match="pixel_values must be"):
            model(**{**inputs, "pixel_values": inputs["pixel_values"][0]})
    with apply(model, PTP(vision_layer=1, llm_layer=0)):
        with pytest.raises(ValueError, match="PTP"):
            model(**inputs)
