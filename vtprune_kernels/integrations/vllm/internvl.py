"""Pruned InternVL for vLLM, both checkpoint formats:

- HF-native ("-hf") checkpoints (vLLM's ``InternS1ForConditionalGeneration``):
  ``VTPruneInternVLForConditionalGeneration``;
- the original OpenGVLab format (``InternVLChatModel``: InternVL2.5, InternVL3, InternVL3.5 as
  published, loaded with ``trust_remote_code``): ``VTPruneInternVLChatModel``.

Selection per tile (thumbnail included) over the T tokens after the pixel shuffle, as ``apply()``:
scores on the patch grid are pooled onto the shuffled grid with ``methods.pixel_shuffle_pool``
(vLLM's ``pixel_shuffle`` has transformers' token order; the original format's ``ps_version`` "v2",
which every InternVL since 2.0 uses); VisPruner's diversity stage uses the shuffled, pre-projector
features. The processor's ``image_seq_length`` (placeholders per tile) becomes min(keep, T). Video
frames go through the same encoder step and are pruned the same way (a frame is one tile).
Selection indices: tile * T + token over the image's tiles.
"""
from __future__ import annotations

import math

from vllm.model_executor.models.interns1 import (
    InternS1DummyInputsBuilder,
    InternS1ForConditionalGeneration,
    InternS1MultiModalProcessor,
    InternS1ProcessingInfo,
)
from vllm.model_executor.models.internvl import (
    InternVLChatModel,
    InternVLDummyInputsBuilder,
    InternVLMultiModalProcessor,
    InternVLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods import pixel_shuffle_pool
from .encoder_pruning import EncoderPruning, check_encoder_runs_eagerly, gather_kept
from .switch import method_from_config

ARCHITECTURE = "VTPruneInternVLForConditionalGeneration"
CHAT_ARCHITECTURE = "VTPruneInternVLChatModel"


def _side(size) -> int:
    """An image or patch size given as an int (original format) or a pair (HF-native)."""
    return int(size if isinstance(size, int) else size[0])


def tokens_per_tile(hf_config) -> int:
    """T: tokens of one tile after the pixel shuffle (as the model computes ``num_image_token``)."""
    vision = hf_config.vision_config
    image_size = getattr(hf_config, "force_image_size", None) or vision.image_size
    return int((_side(image_size) // _side(vision.patch_size)) ** 2 * (hf_config.downsample_ratio**2))


class KeptPerTileInfo:
    """Processing-info mixin: the processor emits min(keep, T) placeholders per tile. Subclasses set
    ``vtprune_architecture``."""

    vtprune_architecture = ""

    def __init__(self, ctx):
        super().__init__(ctx)
        config = self.ctx.get_hf_config()
        self.vtprune_per_tile = min(method_from_config(config, self.vtprune_architecture).keep, tokens_per_tile(config))

    def get_hf_processor(self, **kwargs):
        processor = super().get_hf_processor(**kwargs)
        processor.image_seq_length = self.vtprune_per_tile  # read by the prompt updates and token counts
        return processor


class VTPruneInternVLProcessingInfo(KeptPerTileInfo, InternS1ProcessingInfo):
    """InternVL's (HF-native) processing info with min(keep, T) placeholders per tile."""

    vtprune_architecture = ARCHITECTURE


class VTPruneInternVLChatProcessingInfo(KeptPerTileInfo, InternVLProcessingInfo):
    """InternVL's (original format) processing info with min(keep, T) placeholders per tile."""

    vtprune_architecture = CHAT_ARCHITECTURE


class TilePruning:
    """Model mixin: the pruned encoder step of both InternVL classes. Subclasses set
    ``vtprune_architecture`` and ``vtprune_pixels`` (the image input's tiles key), call
    ``vtprune_setup(tower)`` in ``__init__`` and name their tower and projector (``vtprune_parts``)."""

    vtprune_architecture = ""
    vtprune_pixels = "pixel_values"

    def vtprune_parts(self):
        """(the vision tower, the projector) of this model class."""
        raise NotImplementedError

    def _process_vision_input(self, image_input):
        if image_input["type"] in ("image_embeds", "video_embeds"):
            return super()._process_vision_input(image_input)  # precomputed embeddings: nothing to prune
        tiles = [int(t) for t in image_input["num_patches"].tolist()]  # kept on the CPU by vLLM
        tower, projector = self.vtprune_parts()
        return self.vtprune_tiles(tower, projector, image_input[self.vtprune_pixels], tiles)

    def vtprune_setup(self, tower):
        self.vtprune = EncoderPruning(self.config, self.vtprune_architecture, tower)
        self.vtprune_factor = round(1 / self.downsample_ratio)
        if abs(self.vtprune_factor * self.downsample_ratio - 1) > 1e-9:
            raise ValueError(f"{self.vtprune_architecture}: downsample_ratio={self.downsample_ratio} is not 1/integer")

    def vtprune_selections(self, clear: bool = False):
        """Kept token indices (tile * T + token) of the images encoded so far."""
        return self.vtprune.selections(clear)

    def vtprune_tiles(self, tower, projector, pixel_values, tiles):
        """Per image, [kept tiles * per_tile, D]: the tiles ``pixel_values`` [sum(tiles), 3, H, W] encoded by
        ``tower``, pruned, the kept tokens projected by ``projector``."""
        with self.vtprune.capture() as capture:
            vit = tower(pixel_values=pixel_values)  # [tiles, 1 + h*w, C]
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
        embeds = projector(gather_kept(shuffled, keep, per_tile))  # [tiles, k, D]
        return embeds.reshape(-1, embeds.shape[-1]).split([t * per_tile for t in tiles])


@MULTIMODAL_REGISTRY.register_processor(
    InternS1MultiModalProcessor, info=VTPruneInternVLProcessingInfo, dummy_inputs=InternS1DummyInputsBuilder
)
class VTPruneInternVLForConditionalGeneration(TilePruning, InternS1ForConditionalGeneration):
    """vLLM's InternVL (HF-native checkpoints) with every tile pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtprune_setup(self.vision_tower)

    def vtprune_parts(self):
        return self.vision_tower, self.multi_modal_projector


@MULTIMODAL_REGISTRY.register_processor(
    InternVLMultiModalProcessor, info=VTPruneInternVLChatProcessingInfo, dummy_inputs=InternVLDummyInputsBuilder
)
class VTPruneInternVLChatModel(TilePruning, InternVLChatModel):
    """vLLM's InternVL (original-format checkpoints) with every tile pruned by the configured method."""

    vtprune_architecture = CHAT_ARCHITECTURE
    vtprune_pixels = "pixel_values_flat"

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if self.ps_version != "v2":
            raise ValueError(
                f"{CHAT_ARCHITECTURE}: ps_version={self.ps_version!r} (InternVL 1.x's pixel shuffle order) is not supported; "
                "InternVL 2.0 and later use 'v2'"
            )
        if self.use_data_parallel:
            raise ValueError(f"{CHAT_ARCHITECTURE}: mm_encoder_tp_mode='data' is not supported (run the tower tensor-parallel)")
        check_encoder_runs_eagerly(vllm_config, CHAT_ARCHITECTURE)
        self.vtprune_setup(self.vision_model)

    def vtprune_parts(self):
        return self.vision_model, self.mlp1
