"""Pruned Cohere2 Vision (Command A Vision) for vLLM: ``VTPruneCohere2VisionForConditionalGeneration``.

As ``apply()`` (``integrations/cohere2_vision.py``): per tile (every tile, then the thumbnail), on the
projector's pixel-shuffled grid; scores are the tower's received attention (SigLIP has no [CLS])
pooled over the patches each token merges, VisPruner's de-duplication compares the shuffled tower
output (after SigLIP's post_layernorm), and the projector runs on the kept tokens only (its pixel shuffle on all, its MLP on the kept rows).
The processor writes min(keep, tokens per tile) ``<|IMG_PATCH|>`` per tile; each tile's
``<|IMG_LINE_BREAK|>`` and the image's start / end tokens stay. Selection indices: per tile, raster
indices into its shuffled grid, as ``apply()``'s.

transformers' ``Cohere2VisionForConditionalGeneration`` does not multiply its logits by the text config's
``logit_scale``; vLLM's Cohere2 does: log-probabilities of the two differ by that scale on checkpoints
whose ``logit_scale`` is not 1, pruned or not (greedy tokens agree).
"""
from __future__ import annotations

from vllm.model_executor.models.cohere2_vision import (
    Cohere2VisionDummyInputsBuilder,
    Cohere2VisionForConditionalGeneration,
    Cohere2VisionMultiModalProcessor,
    Cohere2VisionProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails

from ...methods.pixel_shuffle_pooling import pixel_shuffle_pool
from ..adapter import square_grid
from .encoder_pruning import EncoderPruning, gather_kept
from .mrope_positions import shortened_runs
from .switch import method_from_config

ARCHITECTURE = "VTPruneCohere2VisionForConditionalGeneration"


class VTPruneCohere2VisionProcessingInfo(Cohere2VisionProcessingInfo):
    """Cohere2 Vision's processing info; validates the switch when the processor is built (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), ARCHITECTURE).keep


class VTPruneCohere2VisionMultiModalProcessor(Cohere2VisionMultiModalProcessor):
    """Cohere2 Vision's processor with every tile's run of ``<|IMG_PATCH|>`` cut to min(keep, tokens per tile)."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        token = processor.image_token_id
        kept = min(self.info.vtprune_keep, int(processor.patch_size**2))

        def shortened(update: PromptReplacement) -> PromptReplacement:
            def replacement(item_idx: int):
                full = update.replacement(item_idx).full
                return PromptUpdateDetails.select_token_id(shortened_runs(full, token, kept), token)

            return PromptReplacement(modality=update.modality, target=update.target, replacement=replacement)

        return [shortened(u) for u in super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)]


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneCohere2VisionMultiModalProcessor, info=VTPruneCohere2VisionProcessingInfo,
    dummy_inputs=Cohere2VisionDummyInputsBuilder,
)
class VTPruneCohere2VisionForConditionalGeneration(Cohere2VisionForConditionalGeneration):
    """vLLM's Cohere2 Vision with every tile pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vision_tower)

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the tiles encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _process_image_input(self, image_input, **kwargs):
        pixel_values = image_input["pixel_values"]
        tiles = image_input["num_patches"].tolist()  # tiles per image (kept on the CPU)
        with self.vtprune.capture() as capture:
            hidden = self.vision_tower(pixel_values)  # [n, h*w, C]: the last layer after post_layernorm
        scores = capture.scores()
        projector = self.multi_modal_projector
        factor = int(projector.downsample_factor)
        patch_grid = square_grid(hidden.shape[1], ARCHITECTURE)
        grid = (patch_grid[0] // factor, patch_grid[1] // factor)
        n, T = hidden.shape[0], grid[0] * grid[1]
        shuffled = projector.pixel_shuffle(hidden).reshape(n, T, -1)  # the projector's MLP input, one row per token
        features = self.vtprune.selection_features(lambda: shuffled, n, T, hidden)
        keep = self.vtprune.select(
            None if scores is None else pixel_shuffle_pool(scores, patch_grid, factor), features, grid, tiles
        )
        kept = gather_kept(shuffled, keep, min(self.vtprune.keep, T))
        kept = projector.linear_2(projector.act(projector.linear_1(kept)))  # the projector's MLP, on kept tokens only
        self.vtprune.record(list(keep))  # per tile, as apply()
        return [e.flatten(0, 1) for e in kept.split(tiles)]
