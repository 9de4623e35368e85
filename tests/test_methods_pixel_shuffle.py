"""pixel_shuffle_pool follows transformers' InternVLModel.pixel_shuffle token order (tracer test)."""
import pytest
import torch

from vtprune_kernels.methods import pixel_shuffle_pool

modeling_internvl = pytest.importorskip("transformers.models.internvl.modeling_internvl")


def _model_token_sources(h, w, factor):
    """Patch indices merged into each output token by the model's own pixel shuffle.

    The tracer: one channel holding the source patch's raster index, run through
    ``InternVLModel.pixel_shuffle`` and the reshape ``get_image_features`` applies after it.
    """
    tracer = torch.arange(h * w, dtype=torch.float64).reshape(1, h, w, 1)
    # pixel_shuffle does not use self; the model calls it on [B, side, side, C] features
    shuffled = modeling_internvl.InternVLModel.pixel_shuffle(None, tracer, scale_factor=1.0 / factor)
    tokens = shuffled.reshape(1, -1, shuffled.shape[-1])[0]  # [tokens, factor**2] source indices
    return [sorted(int(v) for v in row) for row in tokens]


def _pool_sources(h, w, factor):
    """Patch indices each output of pixel_shuffle_pool averages: pool the one-hot of every patch."""
    pooled = pixel_shuffle_pool(torch.eye(h * w), (h, w), factor)  # [patch, token] weights
    return [sorted(pooled[:, t].nonzero().flatten().tolist()) for t in range(pooled.shape[1])]


@pytest.mark.parametrize("grid, factor", [((4, 4), 2), ((16, 16), 2), ((32, 32), 2), ((8, 8), 4), ((6, 4), 2)])
def test_grouping_and_order_match_the_model(grid, factor):
    h, w = grid
    model_sources = _model_token_sources(h, w, factor)
    assert len(model_sources) == (h // factor) * (w // factor)
    assert all(len(s) == factor * factor for s in model_sources)
    assert _pool_sources(h, w, factor) == model_sources


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_values_are_the_mean_of_the_merged_patches(dtype):
    h = w = 16
    scores = torch.rand(3, h * w).to(dtype)
    pooled = pixel_shuffle_pool(scores, (h, w))
    sources = torch.tensor(_model_token_sources(h, w, 2))  # [64, 4]
    expected = scores.double()[:, sources].mean(-1)
    assert pooled.shape == (3, 64) and pooled.dtype == dtype
    tol = 0 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(pooled.double(), expected, rtol=tol, atol=1e-6 if dtype == torch.float32 else tol)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle_pool(torch.rand(1, 27 * 27), (27, 27))
    with pytest.raises(ValueError, match="grid"):
        pixel_shuffle_pool(torch.rand(1, 256), (16, 15))
    with pytest.raises(ValueError, match="scores"):
        pixel_shuffle_pool(torch.rand(256), (16, 16))
    with pytest.raises(ValueError, match="factor"):
        pixel_shuffle_pool(torch.rand(1, 256), (16, 16), factor=0)
