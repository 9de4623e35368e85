"""Pruned LLaVA-NeXT for vLLM: ``VTPruneLlavaNextForConditionalGeneration``.

Per tile, among the tokens that survive the model's unpadding (``Captured.valid``, as ``apply()``:
min(keep, survivors) per tile); newline tokens stay where the model places them (one per row of
the unpadded grid). The packed layout comes from vLLM's own ``_merge_image_patch_embeddings``
applied to an index tracer, so the processor's placeholder count and the model's output are the
same function of the image size. Selection indices: tile * N + patch over the image's tiles (base
tile first).
"""
from __future__ import annotations

import functools
import types
from typing import Tuple

import torch
from vllm.model_executor.models.llava import LlavaDummyInputsBuilder
from vllm.model_executor.models.llava_next import (
    LlavaNextForConditionalGeneration,
    LlavaNextImageEmbeddingInputs,
    LlavaNextMultiModalProcessor,
    LlavaNextProcessingInfo,
    get_anyres_image_grid_shape,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods._device import from_host
from ..adapter import check_strategy
from ..llava_next import LlavaNextAdapter
from .encoder_pruning import EncoderPruning
from .switch import method_from_config

ARCHITECTURE = "VTPruneLlavaNextForConditionalGeneration"


class AnyresLayout:
    """The packing of a LLaVA-NeXT config, per image size (cached): tiles, packed sources, surviving
    tokens, kept count."""

    def __init__(self, hf_config, keep: int):
        self.config = hf_config
        self.keep = keep
        self.side = hf_config.vision_config.image_size // hf_config.vision_config.patch_size
        self.tokens_per_tile = self.side * self.side
        # vLLM's merge reads only ``config`` and ``image_newline`` from the model: a tracer stand-in
        self._tracer_model = types.SimpleNamespace(config=hf_config, image_newline=torch.tensor([-1.0], dtype=torch.float64))

    def num_tiles(self, image_size: Tuple[int, int]) -> int:
        rows, cols = get_anyres_image_grid_shape(image_size, self.config.image_grid_pinpoints, self.config.vision_config.image_size)
        return rows * cols + 1  # the grid tiles plus the base tile

    @functools.lru_cache(maxsize=1024)
    def sources(self, image_size: Tuple[int, int]) -> torch.Tensor:
        """host int64 [L]: source token (tile * N + patch) of every packed position, -1 for newlines."""
        tiles = self.num_tiles(image_size)
        tracer = torch.arange(tiles * self.tokens_per_tile, dtype=torch.float64).view(tiles, self.tokens_per_tile, 1)
        packed = LlavaNextForConditionalGeneration._merge_image_patch_embeddings(
            self._tracer_model, torch.tensor(image_size), tracer, strategy="spatial_unpad"
        )
        return packed[:, 0].long()

    @functools.lru_cache(maxsize=1024)
    def survivors(self, image_size: Tuple[int, int]) -> torch.Tensor:
        """host bool [tiles, N]: the tokens the unpadding keeps (the methods' ``valid``)."""
        return LlavaNextAdapter.surviving_tokens([self.sources(image_size)], [self.num_tiles(image_size)], self.tokens_per_tile)

    @functools.lru_cache(maxsize=1024)
    def kept(self, image_size: Tuple[int, int]) -> int:
        """Packed tokens an image keeps: min(keep, survivors) per tile, plus every newline."""
        per_tile = self.survivors(image_size).sum(1).clamp(max=self.keep)
        return int(per_tile.sum()) + int((self.sources(image_size) < 0).sum())


class VTPruneLlavaNextProcessingInfo(LlavaNextProcessingInfo):
    """LLaVA-NeXT's processing info with the kept count per image; validates the switch (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        config = self.get_hf_config()
        self.vtprune_layout = AnyresLayout(config, method_from_config(config, ARCHITECTURE).keep)

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        return self.vtprune_layout.kept((int(image_height), int(image_width)))


@MULTIMODAL_REGISTRY.register_processor(
    LlavaNextMultiModalProcessor, info=VTPruneLlavaNextProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class VTPruneLlavaNextForConditionalGeneration(LlavaNextForConditionalGeneration):
    """vLLM's LLaVA-NeXT with every image pruned per tile by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if self.select_layers is not None:
            raise ValueError(f"{ARCHITECTURE}: vision_feature_layer must be one layer, got {self.config.vision_feature_layer!r}")
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)
        if not self.vtprune.layout.has_cls:
            raise ValueError(f"{ARCHITECTURE}: only vision towers with a [CLS] token (CLIP) are supported")
        check_strategy(self.config.vision_feature_select_strategy, True, ARCHITECTURE)
        self.vtprune_layout = AnyresLayout(self.config, self.vtprune.keep)

    def vtprune_selections(self, clear: bool = False):
        """Kept token indices (tile * N + patch) of the images encoded so far."""
        return self.vtprune.selections(clear)

    def _process_image_input(self, image_input):
        if isinstance(image_input, LlavaNextImageEmbeddingInputs):
            return super()._process_image_input(image_input)  # precomputed embeddings: nothing to prune
        layout = self.vtprune_layout
        sizes = [tuple(int(v) for v in s) for s in image_input["image_sizes"].tolist()]  # kept on the CPU by vLLM
        tiles = [layout.num_tiles(s) for s in sizes]
        pixel_values = torch.cat([pv[:t] for pv, t in zip(image_input["pixel_values"], tiles)])
        with self.vtprune.capture() as capture:
            features = self._image_pixels_to_features(self.vision_tower, pixel_values)  # [T, N, C], [CLS] dropped
        scores = capture.scores()
        scores = None if scores is None else scores[:, 1:]
        valid = torch.cat([layout.survivors(s) for s in sizes])
        keep = self.vtprune.select(scores, features, (layout.side, layout.side), tiles, valid=valid)
        keeps = list(keep.split(tiles))
        device, C = features.device, features.shape[-1]
        tokens, is_newline, counts, first = [], [], [], 0
        for size, t, image_keep in zip(sizes, tiles, keeps):
            src = from_host(layout.sources(size), device)
            packed_keep = (src < 0) | image_keep.reshape(-1)[src.clamp(min=0)]
            kept_src = src[torch.nonzero_static(packed_keep, size=layout.kept(size)).flatten()]
            tokens.append(features[first : first + t].reshape(-1, C)[kept_src.clamp(min=0)])
            is_newline.append(kept_src < 0)
            counts.append(kept_src.shape[0])
            first += t
        self.vtprune.record(keeps)
        projected = self.multi_modal_projector(torch.cat(tokens))  # newline rows are replaced below
        newline = self.image_newline.to(projected.dtype)
        packed = torch.where(torch.cat(is_newline)[:, None], newline, projected)
        return list(packed.split(counts))
