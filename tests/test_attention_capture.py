"""The capture attention function: the tower's output is unchanged (bit for bit), the log-sum-exp it
hands over is the row normaliser, one-pass scores equal two-pass and eager-map scores, fallbacks,
exact restore, independence of models and threads, per-chunk calls, and the score accumulator."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

import tiny_models as tm
from integration_oracles import eager_copy, tower_maps
from thread_interleave import run_during
from vtprune_kernels import ops, reference
from vtprune_kernels.integrations.attention_capture import CAPTURE_ATTENTION, AttentionCapture
from vtprune_kernels.integrations.capture import VisionScoreCapture
from vtprune_kernels.integrations.score_accumulator import ScoreAccumulator
from vtprune_kernels.integrations.vision_runner import VisionTower, describe_tower, run_tower

TOWERS = {"clip": tm.llava_clip, "siglip": tm.llava_siglip, "internvl": tm.internvl}
DTYPES = [torch.float32, torch.bfloat16]


def _tower(name: str, dtype=torch.float32, seed: int = 0):
    model = TOWERS[name](seed=seed).to(dtype)
    size = model.config.vision_config.image_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    return model, describe_tower(model.model.vision_tower), tm.pixels(3, size, seed=7).to(dtype)


def _hidden_states(tower, px):
    with torch.no_grad():
        out = tower.module(pixel_values=px, output_hidden_states=True)
    return list(out.hidden_states) + [out.last_hidden_state]


class _Calls:
    """A sink keeping every ``AttentionCall``."""

    def __init__(self):
        self.calls = []

    def __call__(self, call):
        self.calls.append(call)


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", TOWERS)
def test_sdpa_on_cpu_runs_the_kernel_that_returns_the_lse(name, dtype):
    """What 'identical' rests on: the model's own SDPA runs aten's CPU flash kernel for these towers,
    the kernel the capture calls (and never the math kernel)."""
    _, tower, px = _tower(name, dtype)
    with torch.no_grad(), _OpLog() as log:
        tower.module(pixel_values=px)
    assert "_scaled_dot_product_flash_attention_for_cpu" in log.ops
    assert not any("math" in op for op in log.ops)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", TOWERS)
def test_hidden_states_are_identical_with_the_capture(name, dtype):
    model, tower, px = _tower(name, dtype)
    want = _hidden_states(tower, px)
    for layers in (range(tower.num_layers), (1,)):
        capture = VisionScoreCapture(tower, layers, "all")
        with capture:
            got = _hidden_states(tower, px)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
        assert capture.layers_with_lse == len(layers)  # every captured layer: one pass
    assert model.config.vision_config._attn_implementation == "sdpa"


# Accuracy of the CPU flash kernel's log-sum-exp (natural-log units), measured on random inputs of
# 26..1025 keys: fp32 <= 7e-6; bf16/fp16 inputs <= 6.1e-5 (the kernel's reduced-precision path).
# A probability normalised by it is off by the factor exp(error), so one-pass scores agree with
# two-pass scores to that relative error and no better.
LSE_ERROR = {torch.float32: 2e-5, torch.bfloat16: 1e-4}


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", TOWERS)
def test_lse_is_the_row_normaliser_and_one_pass_equals_two_passes(name, dtype):
    tol = LSE_ERROR[dtype]
    _, tower, px = _tower(name, dtype)
    sink = _Calls()
    with AttentionCapture({i: tower.attention_module(i) for i in range(tower.num_layers)}, sink), torch.no_grad():
        tower.module(pixel_values=px)
    assert [c.layer for c in sink.calls] == list(range(tower.num_layers)) and all(c.chunk == 0 for c in sink.calls)
    for c in sink.calls:
        q, k = c.query.double(), c.key.double()
        assert c.lse.dtype == torch.float32 and c.lse.shape == q.shape[:3]
        torch.testing.assert_close(c.lse.double(), torch.logsumexp(c.scale * q @ k.transpose(-1, -2), -1), atol=tol, rtol=0)
        for rows in (slice(None), slice(0, 1)):
            one = ops.attention_scores(c.query[:, :, rows], c.key, scale=c.scale, lse=c.lse[:, :, rows])
            two = ops.attention_scores(c.query[:, :, rows], c.key, scale=c.scale)
            exact = reference.attention_scores(q[:, :, rows], k, scale=c.scale)
            torch.testing.assert_close(two, exact, atol=1e-7, rtol=1e-5)
            torch.testing.assert_close(one, exact, atol=1e-7, rtol=tol)


@pytest.mark.parametrize(
    "name, rows", [("clip", "cls"), ("clip", "all"), ("siglip", "all"), ("internvl", "cls"), ("internvl", "all")]
)
def test_one_pass_capture_equals_two_pass_capture_and_eager_maps(name, rows):
    model, tower, px = _tower(name)
    layers = (0, tower.num_layers - 1)
    scores = {}
    for reuse in (True, False):
        capture = VisionScoreCapture(tower, layers, rows, reuse_lse=reuse)
        with capture, torch.no_grad():
            tower.module(pixel_values=px)
        assert capture.layers_with_lse == (len(layers) if reuse else 0)
        scores[reuse] = capture.scores()
    with torch.no_grad():
        _, maps = tower_maps(eager_copy(model), px)
    reduce = (lambda a: a[:, :, 0].mean(1)) if rows == "cls" else (lambda a: a.mean(dim=(1, 2)))
    eager = torch.stack([reduce(maps[i]) for i in layers]).mean(0)
    torch.testing.assert_close(scores[True], scores[False], atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(scores[True], eager, atol=1e-6, rtol=1e-5)


def test_a_layer_the_tower_did_not_reach_is_an_error():
    _, tower, px = _tower("clip")
    capture = VisionScoreCapture(tower, (1, 3), "all")
    with capture, torch.no_grad():
        run_tower(tower, px, feature_layer=1, last_layer=2)
    with pytest.raises(RuntimeError, match="captured 1 of 2 layers.*stopped before a needed layer"):
        capture.scores()


# -- fallbacks: the model's own attention, lse=None ---------------------------------------------------
@pytest.mark.parametrize("setting", ["eager", "sdpa math kernel"])
def test_fallback_runs_the_model_attention_without_lse(setting):
    model, tower, px = _tower("clip")
    if setting == "eager":
        model = eager_copy(model)
        tower = describe_tower(model.model.vision_tower)
    with sdpa_kernel([SDPBackend.MATH]):
        want = _hidden_states(tower, px)
        capture = VisionScoreCapture(tower, (0, 2), "all")
        with capture:
            got = _hidden_states(tower, px)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert capture.layers_with_lse == 0
    with VisionScoreCapture(tower, (0, 2), "all") as one_pass, torch.no_grad():  # default kernels again
        tower.module(pixel_values=px)
    torch.testing.assert_close(capture.scores(), one_pass.scores(), atol=1e-6, rtol=1e-5)
    assert model.config.vision_config._attn_implementation == ("eager" if setting == "eager" else "sdpa")


def test_flash_implementations_that_cannot_be_served_are_refused():
    _, tower, _ = _tower("clip")
    config = tower.attention_module(0).config
    config._attn_implementation_internal = "flash_attention_3"
    try:
        with pytest.raises(ValueError, match="flash_attention_3.*cannot be captured"):
            AttentionCapture({0: tower.attention_module(0)}, _Calls()).__enter__()
        assert config._attn_implementation_internal == "flash_attention_3"
    finally:
        config._attn_implementation_internal = "sdpa"


# -- restore, independence, threads ----------------------------------------------------------------
@pytest.mark.parametrize("own", ["sdpa", "eager", None])
def test_the_implementation_is_restored_exactly_even_after_an_error(own):
    _, tower, px = _tower("clip")
    config = tower.attention_module(0).config
    config._attn_implementation_internal = own
    capture = AttentionCapture({1: tower.attention_module(1)}, _Calls())
    with capture:
        assert config._attn_implementation == CAPTURE_ATTENTION
        with AttentionCapture({0: tower.attention_module(0)}, _Calls()):  # a second capture shares the switch
            pass
        assert config._attn_implementation == CAPTURE_ATTENTION

    def failing(call):
        raise KeyError("sink failed")

    with pytest.raises(KeyError, match="sink failed"), AttentionCapture({0: tower.attention_module(0)}, failing), torch.no_grad():
        tower.module(pixel_values=px)
    assert config._attn_implementation_internal == own
    with pytest.raises(RuntimeError, match="already being captured"), capture:
        capture.__enter__()
    assert config._attn_implementation_internal == own


@pytest.mark.parametrize("own", ["sdpa", "eager"])
def test_masks_built_while_captured_are_the_own_implementations(own):
    """transformers builds attention masks by implementation name: under the capture a padded batch must
    get the mask its own implementation gets (an unregistered name would get none)."""
    from transformers import LlamaConfig, LlamaModel
    from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2)
    config._attn_implementation = own
    module = LlamaModel(config).layers[0].self_attn
    embeds = torch.zeros(2, 5, 16)
    padding = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])

    def masks():
        return (
            create_causal_mask(config=config, inputs_embeds=embeds, attention_mask=padding, cache=None,
                               position_ids=torch.arange(5)[None]),
            create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=padding),
        )

    expected = masks()
    with AttentionCapture({0: module}, lambda call: None):
        assert config._attn_implementation == CAPTURE_ATTENTION
        got = masks()
    for a, b in zip(got, expected):
        assert a is not None and torch.equal(a, b)


def test_two_models_are_independent_even_when_they_share_a_config():
    a, tower_a, px = _tower("internvl", seed=0)
    b, tower_b, _ = _tower("internvl", seed=1)
    shared = type(b)(a.config).eval()  # another model reading the very same config objects
    shared.load_state_dict(b.state_dict())
    tower_s = describe_tower(shared.model.vision_tower)
    want_b, want_s = _hidden_states(tower_b, px), _hidden_states(tower_s, px)
    sink = _Calls()
    with AttentionCapture({i: tower_a.attention_module(i) for i in range(tower_a.num_layers)}, sink):
        assert tower_s.attention_module(0).config._attn_implementation == CAPTURE_ATTENTION
        got_b, got_s = _hidden_states(tower_b, px), _hidden_states(tower_s, px)
        assert sink.calls == []  # only tower_a's modules are captured
        _hidden_states(tower_a, px)
    assert len(sink.calls) == tower_a.num_layers
    assert all(torch.equal(g, w) for g, w in zip(got_b + got_s, want_b + want_s))
    assert b.config.vision_config._attn_implementation == a.config.vision_config._attn_implementation == "sdpa"


def test_another_thread_running_the_same_tower_gets_its_own_attention_and_is_not_captured():
    _, tower, px = _tower("clip")
    want = _hidden_states(tower, px)
    results = {}

    def capturing():
        sink = _Calls()
        with AttentionCapture({i: tower.attention_module(i) for i in range(tower.num_layers)}, sink):
            results["captured"] = _hidden_states(tower, px)
        results["calls"] = len(sink.calls)

    def other():
        results["live"] = tower.attention_module(0).config._attn_implementation
        results["other"] = _hidden_states(tower, px)

    run_during(tower.layers[0], capturing, other)
    assert results["live"] == CAPTURE_ATTENTION
    assert results["calls"] == tower.num_layers  # the other thread's calls were not captured
    assert all(torch.equal(g, w) for g, w in zip(results["other"], want))
    assert all(torch.equal(g, w) for g, w in zip(results["captured"], want))


# -- per-chunk calls (packed towers) --------------------------------------------------------------
class _PackedAttention(torch.nn.Module):
    """A packed attention layer in the style of Qwen2.5-VL's vision blocks: one sequence [S, C] of
    several images, the attention function called once per ``cu_seqlens`` chunk."""

    def __init__(self, config, heads: int = 2):
        super().__init__()
        self.config, self.heads, self.is_causal = config, heads, False
        self.qkv = torch.nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, x, cu_seqlens):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        q, k, v = self.qkv(x).reshape(x.shape[0], 3, self.heads, -1).permute(1, 2, 0, 3)[:, None].unbind(0)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, None)
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
        outs = [
            attention(self, qc, kc, vc, None, scaling=0.3, dropout=0.0, is_causal=False)[0]
            for qc, kc, vc in zip(*(t.split(lengths, dim=2) for t in (q, k, v)))
        ]
        return torch.cat(outs, dim=1).reshape(x.shape[0], -1)


def test_per_chunk_calls_map_to_chunks_in_cu_seqlens_order():
    from transformers import PretrainedConfig

    config = PretrainedConfig()
    config.hidden_size, config._attn_implementation_internal = 16, "sdpa"
    layer = _PackedAttention(config).eval()
    x, cu = torch.randn(11, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 4, 11])
    with torch.no_grad():
        want = layer(x, cu)
        acc = ScoreAccumulator("all")
        with AttentionCapture({5: layer}, lambda c: acc.add(c.query, c.key, scale=c.scale, lse=c.lse, chunk=c.chunk)):
            got = layer(x, cu)
        q, k, _ = layer.qkv(x).reshape(11, 3, 2, -1).permute(1, 2, 0, 3)[:, None].unbind(0)
    assert torch.equal(got, want) and config._attn_implementation == "sdpa"
    assert acc.chunks == [0, 1] and acc.adds_with_lse == 2
    for chunk, (lo, hi) in enumerate([(0, 4), (4, 11)]):
        expected = reference.attention_scores(q[:, :, lo:hi], k[:, :, lo:hi], scale=0.3)
        torch.testing.assert_close(acc.mean(chunk), expected, atol=1e-6, rtol=1e-5)


def test_qwen2_5_vl_vision_blocks_are_captured_per_chunk():
    """The design the Qwen integration builds on: a Qwen2.5-VL vision tower (rotary embedding inside
    the attention, window blocks, packed images) reaches the capture once per ``cu_seqlens`` chunk:
    per window in window blocks, per image in full-attention blocks, with unchanged outputs."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    config = Qwen2_5_VLVisionConfig(
        depth=2, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=32, fullatt_block_indexes=[1],
        window_size=56, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VisionTransformerPretrainedModel._from_config(config).eval()
    grid = torch.tensor([[1, 4, 4], [1, 4, 8]])  # two images: 16 and 32 patches, windows of 4x4 patches
    patches = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(1))
    sink = _Calls()
    with torch.no_grad():
        want = model(patches, grid_thw=grid).last_hidden_state
        with AttentionCapture({i: block.attn for i, block in enumerate(model.blocks)}, sink):
            got = model(patches, grid_thw=grid).last_hidden_state
    assert torch.equal(got, want) and model.config._attn_implementation == "sdpa"
    chunks = {(c.layer, c.chunk): c.query.shape[2] for c in sink.calls}
    assert chunks == {(0, 0): 16, (0, 1): 16, (0, 2): 16, (1, 0): 16, (1, 1): 32}
    assert all(c.lse is not None and c.lse.shape == c.query.shape[:3] for c in sink.calls)

    # per-image scores of the full-attention block through VisionScoreCapture
    tower = VisionTower(module=model, layers=model.blocks, attention_module=lambda i: model.blocks[i].attn, has_cls=False)
    capture = VisionScoreCapture(tower, config.fullatt_block_indexes, "all")
    with capture, torch.no_grad():
        model(patches, grid_thw=grid)
    full = [c for c in sink.calls if c.layer == 1]
    got = capture.chunk_scores()
    assert [g.shape for g in got] == [(1, 16), (1, 32)] and capture.layers_with_lse == 2
    for g, c in zip(got, full):
        torch.testing.assert_close(g, reference.attention_scores(c.query, c.key, scale=c.scale), atol=1e-6, rtol=1e-5)
    with pytest.raises(RuntimeError, match="attended in 2 chunks: use chunk_scores"):
        capture.scores()


# -- the score accumulator on its own ----------------------------------------------------------------
def test_score_accumulator_sums_per_chunk_and_reduces_rows():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 9, 8, generator=gen), torch.randn(2, 4, 9, 8, generator=gen)
    q2, k2 = torch.randn(2, 4, 5, 8, generator=gen), torch.randn(2, 4, 5, 8, generator=gen)
    lse = torch.logsumexp(0.5 * q @ k.transpose(-1, -2), -1)
    for rows, sl in (("all", slice(None)), ("cls", slice(0, 1))):
        acc = ScoreAccumulator(rows)
        acc.add(q, k, scale=0.5, lse=lse)
        acc.add(2 * q, k, scale=0.25, lse=lse)  # the same logits: same scores
        acc.add(q2, k2, chunk="image 1")
        assert acc.chunks == [0, "image 1"] and acc.count() == 2 and acc.count("image 1") == 1 and acc.adds_with_lse == 2
        torch.testing.assert_close(acc.mean(), reference.attention_scores(q[:, :, sl], k, scale=0.5), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(acc.mean("image 1"), reference.attention_scores(q2[:, :, sl], k2), atol=1e-6, rtol=1e-5)
    ignoring = ScoreAccumulator("all", reuse_lse=False)
    ignoring.add(q, k, scale=0.5, lse=torch.zeros_like(lse))  # a wrong lse is not used
    assert ignoring.adds_with_lse == 0
    torch.testing.assert_close(ignoring.mean(), reference.attention_scores(q, k, scale=0.5), atol=1e-6, rtol=1e-5)
    with pytest.raises(RuntimeError, match="no scores were added to chunk 3"):
        ignoring.mean(3)
    with pytest.raises(ValueError, match="query_rows"):
        ScoreAccumulator("first")


# -- CUDA: SDPA's flash and memory-efficient kernels, flash_attn --------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize(
    "dtype, backend",
    [(torch.float16, SDPBackend.FLASH_ATTENTION), (torch.bfloat16, SDPBackend.EFFICIENT_ATTENTION), (torch.float32, SDPBackend.EFFICIENT_ATTENTION)],
    ids=["flash-fp16", "efficient-bf16", "efficient-fp32"],
)
@pytest.mark.parametrize("name", TOWERS)
def test_cuda_sdpa_kernels_give_identical_outputs_and_the_lse(name, dtype, backend):
    model, _, px = _tower(name, dtype)
    model = model.cuda()
    tower, px = describe_tower(model.model.vision_tower), px.cuda()
    with sdpa_kernel([backend]):
        want = _hidden_states(tower, px)
        sink = _Calls()
        with AttentionCapture({i: tower.attention_module(i) for i in range(tower.num_layers)}, sink):
            got = _hidden_states(tower, px)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    for c in sink.calls:
        assert c.lse is not None and c.lse.shape == c.query.shape[:3]
        exact = torch.logsumexp(c.scale * c.query.double() @ c.key.double().transpose(-1, -2), -1)
        torch.testing.assert_close(c.lse.double(), exact, atol=2e-3, rtol=1e-3)


@cuda
@pytest.mark.parametrize("name", TOWERS)
def test_flash_attn_package_gives_identical_outputs_and_softmax_lse(name):
    pytest.importorskip("flash_attn", reason="the flash_attn package is not installed")
    model, _, px = _tower(name, torch.bfloat16)
    model = model.cuda()
    model.model.vision_tower.set_attn_implementation("flash_attention_2")
    tower, px = describe_tower(model.model.vision_tower), px.cuda()
    want = _hidden_states(tower, px)
    capture = VisionScoreCapture(tower, range(tower.num_layers), "all")
    with capture:
        got = _hidden_states(tower, px)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert capture.layers_with_lse == tower.num_layers
    assert model.config.vision_config._attn_implementation == "flash_attention_2"
