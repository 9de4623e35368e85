"""Pruned Llama 4 for vLLM: ``VTPruneLlama4ForConditionalGeneration``.

As ``apply()`` (``integrations/llama4.py``): per tile (the split tiles of an image, then its global
tile), on the pixel-shuffled grid (12 x 12 = 144 tokens per 336 px tile); VisPruner scores the
attention of the [CLS] query row, which Llama 4 appends AFTER the patches, pooled 2 x 2 over the
patches each token merges; its de-duplication compares the pixel-shuffled features. The tower runs
up to its ``layernorm_post`` (a hook leaves its forward before the adapter), the adapter's MLP and
the projector run on the kept tokens only. The processor writes min(keep, 144) ``<|patch|>`` per
tile with the model's own tile separators. Selection indices: one entry per tile (an image's split
tiles, then its global tile), raster indices into its shuffled grid, as ``apply()``.
"""
from __future__ import annotations

import threading

from vllm.model_executor.models.mllama4 import (
    Llama4ForConditionalGeneration,
    Mllama4DummyInputsBuilder,
    Mllama4MultiModalProcessor,
    Mllama4ProcessingInfo,
    pixel_shuffle,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails, cached_encode

from ...methods.pixel_shuffle_pooling import pixel_shuffle_pool
from ..adapter import square_grid
from ..stop_tower import StopTower, stopped_early
from .encoder_pruning import EncoderPruning, check_encoder_runs_eagerly, gather_kept
from .switch import method_from_config

ARCHITECTURE = "VTPruneLlama4ForConditionalGeneration"


class VTPruneMllama4ProcessingInfo(Mllama4ProcessingInfo):
    """Llama 4's processing info with the kept count per tile. Validates the switch when the processor
    is built (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        config = self.get_hf_config()
        self.vtprune_kept = min(method_from_config(config, ARCHITECTURE).keep, self.get_patch_per_chunk(config.vision_config))


class VTPruneMllama4MultiModalProcessor(Mllama4MultiModalProcessor):
    """Writes every tile with min(keep, tokens per tile) ``<|patch|>`` placeholders (separators unchanged)."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        hf_processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        tokenizer = self.info.get_tokenizer()
        patch_ids = cached_encode(tokenizer, hf_processor.img_patch_token, add_special_tokens=False)

        def replacement(item: int):
            aspect_ratio = out_mm_kwargs["image"][item]["aspect_ratios"].data
            text = hf_processor._prompt_split_image(aspect_ratio=aspect_ratio, num_patches_per_chunk=self.info.vtprune_kept)
            return PromptUpdateDetails.select_token_ids(cached_encode(tokenizer, text, add_special_tokens=False), patch_ids)

        return [PromptReplacement(modality="image", target=[hf_processor.image_token_id], replacement=replacement)]


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneMllama4MultiModalProcessor, info=VTPruneMllama4ProcessingInfo, dummy_inputs=Mllama4DummyInputsBuilder
)
class VTPruneLlama4ForConditionalGeneration(Llama4ForConditionalGeneration):
    """vLLM's Llama 4 with every image tile pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_encoder_runs_eagerly(vllm_config, ARCHITECTURE)
        if self.use_data_parallel:
            raise ValueError(f"{ARCHITECTURE}: mm_encoder_tp_mode='data' is not supported (run the tower tensor-parallel)")
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_model)
        self.vtprune_ratio = float(self.config.vision_config.pixel_shuffle_ratio)
        # vLLM's patch embedding hands its linear layer a transposed (non-contiguous) unfold, which the CPU's
        # oneDNN matmul rejects (stock vLLM 0.32 fails there too): this model's own layer gets a contiguous copy
        self.vision_model.patch_embedding.linear.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the images encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _normalised_patches(self, pixel_values):
        """[tiles, P*P, C]: the tower's output after ``layernorm_post``, [CLS] dropped (the adapter's input);
        the adapter does not run."""
        seen, owner = {}, threading.get_ident()

        def stop(module, args):
            if threading.get_ident() == owner:
                seen["patches"] = args[0]
                raise StopTower()

        with stopped_early([self.vision_model.vision_adapter.register_forward_pre_hook(stop)]):
            self.vision_model(pixel_values)
        return seen["patches"]

    def _process_image_input(self, image_input):
        pixel_values = image_input["pixel_values"]
        tiles = image_input["patches_per_image"].tolist()  # per image (kept on the CPU)
        with self.vtprune.capture() as capture:
            patches = self._normalised_patches(pixel_values)
        scores = capture.scores()
        patch_grid = square_grid(patches.shape[1], ARCHITECTURE)
        factor = round(1 / self.vtprune_ratio)
        grid = (patch_grid[0] // factor, patch_grid[1] // factor)
        shuffled = pixel_shuffle(patches, self.vtprune_ratio)  # [tiles, T, 4C]
        keep = self.vtprune.select(
            None if scores is None else pixel_shuffle_pool(scores[:, :-1], patch_grid, factor), shuffled, grid, tiles
        )
        self.vtprune.record(list(keep.split(1)))  # one entry per tile, as apply()
        kept = gather_kept(shuffled, keep, min(self.vtprune.keep, keep.shape[1]))  # [tiles, k, 4C]
        embeddings = self.multi_modal_projector(self.vision_model.vision_adapter.mlp(kept))
        return [image.flatten(0, 1) for image in embeddings.split(tiles)]
