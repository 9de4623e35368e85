"""LLaVA-OneVision's kept counts in vLLM (``OnevisionLayout``), without an engine, on the tiny test
config (42 px tiles of 3 x 3 patches, pinpoints up to 4 x 4 tiles) and on the released models' shape
(384 px tiles of 27 x 27 patches, pinpoints up to 6 x 6 tiles):

- with a budget that prunes nothing, the packed layout's token count is stock vLLM's own count
  (``LlavaOnevisionProcessingInfo._get_num_unpadded_features`` + the base tile), for image sizes that
  unpad and downsize in every way;
- the bound that sizes the encoder cache (``max_kept``) is never below an image's kept count.
"""
from __future__ import annotations

import types

import pytest

from checkpoints import ONEVISION_PINPOINTS

RELEASED_PINPOINTS = [[384 * a, 384 * b] for a in range(1, 7) for b in range(1, 7)]


def _config(tile: int, patch: int, pinpoints):
    vision = types.SimpleNamespace(image_size=tile, patch_size=patch)
    return types.SimpleNamespace(vision_config=vision, image_grid_pinpoints=pinpoints)


def _stock_count(config, height: int, width: int) -> int:
    """Stock vLLM's placeholder count of an unpruned image (its processing info's own formula)."""
    from vllm.model_executor.models.llava_next import get_anyres_image_grid_shape
    from vllm.model_executor.models.llava_onevision import LlavaOnevisionProcessingInfo

    side = config.vision_config.image_size // config.vision_config.patch_size
    rows, cols = get_anyres_image_grid_shape((height, width), config.image_grid_pinpoints, config.vision_config.image_size)
    info = object.__new__(LlavaOnevisionProcessingInfo)
    unpadded, newlines = info._get_num_unpadded_features(
        original_height=height, original_width=width, npatches=side, num_patch_height=rows, num_patch_width=cols
    )
    return side * side + unpadded + newlines


SIZES = {
    "tiny": (_config(42, 14, ONEVISION_PINPOINTS), [(h, w) for h in (10, 40, 70, 100, 126, 168, 200) for w in (12, 42, 90, 140, 168, 230)]),
    "released": (_config(384, 14, RELEASED_PINPOINTS), [(h, w) for h in (100, 384, 700, 1153, 2304) for w in (90, 500, 944, 1800, 2304)]),
}


@pytest.mark.parametrize("shape", list(SIZES))
def test_unpruned_counts_are_stock_vllms(shape):
    from vtprune_kernels.integrations.vllm.llava_onevision import OnevisionLayout

    config, sizes = SIZES[shape]
    layout = OnevisionLayout(config, keep=10**6)
    for size in sizes:
        assert layout.kept(size) == _stock_count(config, *size), size


@pytest.mark.parametrize("shape", list(SIZES))
@pytest.mark.parametrize("keep", [1, 3, 64])
def test_the_encoder_cache_bound_holds(shape, keep):
    from vtprune_kernels.integrations.vllm.llava_onevision import OnevisionLayout

    config, sizes = SIZES[shape]
    layout = OnevisionLayout(config, keep=keep)
    assert max(layout.kept(size) for size in sizes) <= layout.max_kept()
