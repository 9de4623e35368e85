"""Pruned InternVL (HF-native checkpoints, vLLM's ``InternS1ForConditionalGeneration``):
``VTPruneInternVLForConditionalGeneration``.

Selection per tile (thumbnail included) over the T tokens after the pixel shuffle, as ``apply()``:
scores on the patch grid are pooled onto the shuffled grid with ``methods.pixel_shuffle_pool``
(vLLM's ``pixel_shuffle`` has transformers' token order); VisPruner's diversity stage uses the
shuffled, pre-projector features. The processor's ``image_seq_length`` (placeholders per tile)
becomes min(keep, T). Video frames go through the same encoder step and are pruned the same way
(a frame is one tile). Selection indices: tile * T + token over the image's tiles.
"""
from __future__ import annotations

import math

from vllm.model_executor.models.interns1 import (
    InternS1DummyInputsBuilder,
    InternS1ForConditionalGeneration,
    InternS1MultiModalProcessor,
    InternS1ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods import pixel_shuffle_pool
from .encoder_pruning import EncoderPruning, gather_kept
from .switch import method_from_config

ARCHITECTURE = "VTPruneInternVLForConditionalGeneration"


def tokens_per_tile(hf_config) -> int:
    """T: tokens of one tile after the pixel shuffle (as the model computes ``num_image_token``)."""
    vision = hf_config.vision_config
    return int((vision.image_size[0] // vision.patch_size[0]) ** 2 * (hf_config.downsample_ratio**2))


class VTPruneInternVLProcessingInfo(InternS1ProcessingInfo):
    """InternVL's processing info whose processor emits min(keep, T) placeholders per tile."""

    def __init__(self, ctx):
        super().__init__(ctx)
        config = self.ctx.get_hf_config()
        self.vtprune_per_tile = min(method_from_config(config, ARCHITECTURE).keep, tokens_per_tile(config))

    def get_hf_processor(self, **kwargs):
        processor = super().get_hf_processor(**kwargs)
        processor.image_seq_length = self.vtprune_per_tile  # read by the prompt updates and token counts
        return processor


@MULTIMODAL_REGISTRY.register_processor(
    InternS1MultiModalProcessor, info=VTPruneInternVLProcessingInfo, dummy_inputs=InternS1DummyInputsBuilder
)
class VTPruneInternVLForConditionalGeneration(InternS1ForConditionalGeneration):
    """vLLM's InternVL with every tile pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)
        self.vtprune_factor = round(1 / self.downsample_ratio)
        if abs(self.vtprune_factor * self.downsample_ratio - 1) > 1e-9:
            raise ValueError(f"{ARCHITECTURE}: downsample_ratio={self.downsample_ratio} is not 1/integer")

    def vtprune_selections(self, clear: bool = False):
        """Kept token indices (tile * T + token) of the images encoded so far."""
        return self.vtprune.selections(clear)

    def _process_vision_input(self, image_input):
        if image_input["type"] in ("image_embeds", "video_embeds"):
            return super()._process_vision_input(image_input)  # precomputed embeddings: nothing to prune
        tiles = [int(t) for t in image_input["num_patches"].tolist()]  # kept on the CPU by vLLM
        with self.vtprune.capture() as capture:
            vit = self.vision_tower(pixel_values=image_input["pixel_values"])  # [tiles, 1 + h*w, C]
        scores = capture.scores()
        n, C = vit.shape[0], vit.shape[-1]
        side = math.isqrt(vit.shape[1] - 1)
        shuffled = self.pixel_shuffle(vit[:, 1:].reshape(n, side, side, C), scale_factor=self.downsample_ratio)
        shuffled = shuffled.reshape(n, -1, shuffled.shape[-1])  # [tiles, T, C * f^2]
        f = self.vtprune_factor
        pooled = None if scores is None else pixel_shuffle_pool(scores[:, 1:], (side, side), f)
        keep = self.vtprune.select(pooled, shuffled, (side // f, side // f), tiles)
        self.vtprune.record(keep.split(tiles))
        per_tile = min(self.vtprune.keep, shuffled.shape[1])
        embeds = self.multi_modal_projector(gather_kept(shuffled, keep, per_tile))  # [tiles, k, D]
        return embeds.reshape(-1, embeds.shape[-1]).split([t * per_tile for t in tiles])
