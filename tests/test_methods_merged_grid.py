"""merged_grid_pool / merged_features / to_merge_order follow Qwen-VL's own token order (tracer tests).

Two tracers, both through transformers' own code:
- the model: the vision tower's forward with every block made the identity, the patch embedding
  replaced by a tracer holding each patch's sequence position, and the merger replaced by its bare
  concatenation (``view(-1, 4*C)``). What comes out of the model's ``get_image_features`` is then,
  per merged token, the positions it concatenates, in the model's output order (Qwen2.5-VL's
  window permutation and its inverse included).
- the processor: Qwen2-VL's image processor on a picture whose 14 px patches are painted with
  their (row, col); its flattened patch rows decode back to (row, col).
Together: merged token n (raster order of the merged grid, frame by frame) concatenates sequence
positions 4n..4n+3, which hold patches (2i+di, 2j+dj), di, dj in raster order.
"""
import pytest
import torch

import tiny_models as tm
from vtprune_kernels.methods.merged_grid import merged_features, merged_grid_pool, raster_to_merge_order, to_merge_order

GRIDS = [(1, 6, 10), (2, 4, 4), (1, 10, 6), (1, 2, 2)]  # odd and non-square merged grids, a 2-frame video


def _identity_tower_hooks(visual):
    """Hooks that leave only the model's token bookkeeping: tracer in, blocks identity, bare merge."""
    handles = []

    def tracer(module, args, output):
        t = torch.zeros_like(output)
        t[:, 0] = torch.arange(output.shape[0], dtype=output.dtype)
        return t

    handles.append(visual.patch_embed.register_forward_hook(tracer))
    if hasattr(visual, "pos_embed"):  # Qwen3-VL adds interpolated position embeddings
        handles.append(visual.pos_embed.register_forward_hook(lambda m, a, o: torch.zeros_like(o)))
    for block in visual.blocks:
        handles.append(block.register_forward_hook(lambda m, args, o: args[0]))
    unit = visual.spatial_merge_size**2
    handles.append(visual.merger.register_forward_hook(lambda m, args, o: args[0].reshape(-1, unit * args[0].shape[-1])))
    return handles


@pytest.mark.parametrize("build", [tm.qwen2_vl, tm.qwen2_5_vl, tm.qwen3_vl], ids=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_model_output_token_n_concatenates_positions_4n_to_4n_plus_3(build):
    model = build()
    visual = model.model.visual
    grid = torch.tensor(GRIDS)
    captured = {}
    handles = _identity_tower_hooks(visual)  # registered first: the capture below sees the identity's output
    handles.append(visual.blocks[-1].register_forward_hook(lambda m, a, o: captured.__setitem__("last", o)))
    try:
        with torch.no_grad():
            out = model.model.get_image_features(tm.qwen_pixels(GRIDS), grid)
    finally:
        for h in handles:
            h.remove()
    merged = torch.cat(out.pooler_output)  # [total merged, 4*C], the model's own order
    C = getattr(visual.config, "embed_dim", None) or visual.config.hidden_size  # Qwen2-VL: embed_dim
    positions = merged[:, ::C][:, :4]  # channel 0 of each concatenated patch
    total = sum(tm.qwen_visual_tokens(g) for g in GRIDS)
    assert torch.equal(positions, torch.arange(4 * total, dtype=positions.dtype).view(total, 4))
    # what the layers saw (window-permuted on Qwen2.5-VL), brought back by to_merge_order
    inside = captured["last"]
    if hasattr(visual, "window_size"):
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size, visual.patch_size)
        assert not torch.equal(inside, to_merge_order(inside, window_index)), "test precondition: windows permute"
        inside = to_merge_order(inside, window_index)
    assert torch.equal(merged_features(inside), merged)


def _painted(h: int, w: int, patch: int = 14):
    """RGB picture of h x w patches; patch (r, c) is filled with (20 r, 20 c, 0)."""
    from PIL import Image

    rows = torch.arange(h).repeat_interleave(patch)[:, None].expand(h * patch, w * patch)
    cols = torch.arange(w).repeat_interleave(patch)[None, :].expand(h * patch, w * patch)
    rgb = torch.stack([20 * rows, 20 * cols, torch.zeros_like(rows)], -1).to(torch.uint8)
    return Image.fromarray(rgb.numpy())


@pytest.mark.parametrize("h, w", [(6, 10), (4, 4), (10, 6), (8, 2)])
def test_processor_layout_is_merge_blocks_in_raster_order(h, w):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.vision_utils import get_vision_position_ids

    processor = Qwen2VLImageProcessorPil()
    out = processor(images=_painted(h, w), return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, h, w]]
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    rows = out["pixel_values"].view(h * w, 3, -1).mean(-1) * std + mean  # [S, 3] colour in [0, 1]
    decoded = (rows[:, :2] * 255 / 20).round().long()  # [S, (row, col)]
    s = torch.arange(h * w)
    n, k = s // 4, s % 4
    expected = torch.stack([2 * (n // (w // 2)) + k // 2, 2 * (n % (w // 2)) + k % 2], -1)
    assert torch.equal(decoded, expected)
    # the model's own rotary positions of the patches agree
    assert torch.equal(get_vision_position_ids(out["image_grid_thw"], 2), expected)
    # so pooling consecutive blocks of 4 averages each 2x2 neighbourhood of the raster grid
    table = torch.rand(h, w, dtype=torch.float64)
    pooled = merged_grid_pool(table[decoded[:, 0], decoded[:, 1]])
    want = torch.nn.functional.avg_pool2d(table[None, None], 2)[0, 0].flatten()
    torch.testing.assert_close(pooled, want)


@pytest.mark.parametrize("h, w", [(6, 10), (4, 4), (10, 6)])
def test_raster_processor_layout_to_merge_blocks(h, w):
    """PaddleOCR-VL's processor lays each image's patches in raster order; ``raster_to_merge_order`` takes
    them (two images packed) to Qwen's merge-block order (the projector's 2x2 grouping)."""
    from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import PaddleOCRVLImageProcessorPil

    processor = PaddleOCRVLImageProcessorPil(min_pixels=14 * 14 * 4, max_pixels=14 * 14 * 400)
    out = processor(images=[_painted(h, w), _painted(4, 6)], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, h, w], [1, 4, 6]]
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    rows = out["pixel_values"].flatten(2).mean(-1) * std + mean  # [S, 3] colour in [0, 1]
    decoded = (rows[:, :2] * 255 / 20).round().long()[raster_to_merge_order(out["image_grid_thw"])]
    expected = []
    for gh, gw in ((h, w), (4, 6)):
        s = torch.arange(gh * gw)
        n, k = s // 4, s % 4
        expected.append(torch.stack([2 * (n // (gw // 2)) + k // 2, 2 * (n % (gw // 2)) + k % 2], -1))
    assert torch.equal(decoded, torch.cat(expected))
    with pytest.raises(ValueError, match="merge blocks"):
        raster_to_merge_order([(1, 4, 5)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_pool_values_and_dtypes(dtype):
    scores = torch.rand(3, 40).to(dtype)
    pooled = merged_grid_pool(scores)
    assert pooled.shape == (3, 10) and pooled.dtype == dtype
    torch.testing.assert_close(pooled.double(), scores.double().view(3, 10, 4).mean(-1), rtol=1e-2, atol=1e-2)
    assert torch.equal(merged_grid_pool(torch.arange(18.0), merge_size=3), torch.tensor([4.0, 13.0]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of 4"):
        merged_grid_pool(torch.rand(2, 10))
    with pytest.raises(ValueError, match="merge_size"):
        merged_grid_pool(torch.rand(8), merge_size=0)
    with pytest.raises(ValueError, match="hidden"):
        merged_features(torch.rand(6, 3))
    with pytest.raises(ValueError, match="window_index covers"):
        to_merge_order(torch.rand(8, 3), torch.arange(3))
