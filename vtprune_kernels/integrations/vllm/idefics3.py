"""Pruned Idefics3 and SmolVLM for vLLM: ``VTPruneIdefics3ForConditionalGeneration`` and
``VTPruneSmolVLMForConditionalGeneration``.

As ``apply()`` (``integrations/idefics3.py``): per tile (every split tile and the global image), on
the connector's pixel-shuffled grid; scores are the tower's received attention (no [CLS]) pooled over
the patches each token merges (``methods.pixel_shuffle_pool``), VisPruner's de-duplication compares
the shuffled features, and the kept features are rows of the connector's own output. The processor
writes min(keep, tokens per tile) placeholders per tile; the tile markers (``<row_i_col_j>``,
``<global-img>``, the fake image tokens) stay.

An engine whose image processor does not split images (``do_image_splitting=False``) is refused at
start: it pads images inside their tile, and the scores cannot yet leave padding out.
Selection indices: per tile (an image's tiles, then its global image), raster indices into its grid,
as ``apply()``'s.
"""
from __future__ import annotations

from vllm.model_executor.models.idefics3 import (
    Idefics3DummyInputsBuilder,
    Idefics3ForConditionalGeneration,
    Idefics3MultiModalProcessor,
    Idefics3ProcessingInfo,
)
from vllm.model_executor.models.smolvlm import SmolVLMForConditionalGeneration, SmolVLMProcessingInfo
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods.pixel_shuffle_pooling import pixel_shuffle_pool
from .encoder_pruning import EncoderPruning, gather_kept
from .switch import method_from_config

ARCHITECTURE = "VTPruneIdefics3ForConditionalGeneration"
SMOLVLM_ARCHITECTURE = "VTPruneSmolVLMForConditionalGeneration"


class KeptTilesInfo:
    """Processing-info mixin: min(keep, tokens per tile) placeholders per tile. Subclasses set
    ``vtprune_architecture``."""

    vtprune_architecture = ""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), self.vtprune_architecture).keep

    def _kept(self, processor) -> int:
        return min(self.vtprune_keep, int(processor.image_seq_len))

    def get_image_repl(self, *, processor, **kwargs) -> str:
        full = super().get_image_repl(processor=processor, **kwargs)
        token = processor.image_token
        return full.replace(token * int(processor.image_seq_len), token * self._kept(processor))

    def get_num_image_tokens(self, *, processor, **kwargs) -> int:
        return self.get_num_patches(processor=processor, **kwargs) * self._kept(processor)


class VTPruneIdefics3ProcessingInfo(KeptTilesInfo, Idefics3ProcessingInfo):
    vtprune_architecture = ARCHITECTURE


class VTPruneSmolVLMProcessingInfo(KeptTilesInfo, SmolVLMProcessingInfo):
    vtprune_architecture = SMOLVLM_ARCHITECTURE


class Idefics3Pruning:
    """Model mixin (before vLLM's class): the pruned image step. Subclasses set ``vtprune_architecture``."""

    vtprune_architecture = ""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if _image_splitting(vllm_config) is False:
            raise ValueError(
                f"{self.vtprune_architecture}: the image processor does not split images (do_image_splitting=False), "
                "so it pads them inside their tile; pruning needs full tiles: serve with image splitting on"
            )
        self.vtprune = EncoderPruning(self.config, self.vtprune_architecture, self.model.vision_model)
        self.vtprune_factor = int(self.config.scale_factor)

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the images encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _process_image_input(self, image_input):
        if image_input["type"] == "image_embeds":
            raise ValueError(f"{self.vtprune_architecture}: precomputed image embeddings cannot be pruned")
        with self.vtprune.capture() as capture:
            hidden = self._process_image_pixels(image_input)  # [n, h*w, C], the tower's output
        scores = capture.scores()
        side = int(round(hidden.shape[1] ** 0.5))
        factor = self.vtprune_factor
        connector = self.model.connector
        grid = (side // factor, side // factor)
        tiles = image_input["num_patches"].tolist()  # tiles per image (kept on the CPU)
        features = self.vtprune.selection_features(
            lambda: connector.pixel_shuffle(hidden, factor), hidden.shape[0], grid[0] * grid[1], hidden
        )
        keep = self.vtprune.select(
            None if scores is None else pixel_shuffle_pool(scores, (side, side), factor), features, grid, tiles
        )
        per_row = min(self.vtprune.keep, keep.shape[1])
        kept = gather_kept(connector(hidden), keep, per_row)  # [n, per_row, D]: rows of the connector's output
        self.vtprune.record(list(keep))  # per tile, as apply()
        return [e.flatten(0, 1) for e in kept.split(tiles)]


def _image_splitting(vllm_config):
    """The checkpoint image processor's ``do_image_splitting`` (None when it cannot be read)."""
    try:
        from transformers import AutoImageProcessor

        model_config = vllm_config.model_config
        processor = AutoImageProcessor.from_pretrained(
            model_config.model, revision=model_config.revision, trust_remote_code=model_config.trust_remote_code
        )
    except Exception:  # noqa: BLE001 - the check is advisory where the processor cannot be loaded here
        return None
    overrides = model_config.mm_processor_kwargs or {}
    return bool(overrides.get("do_image_splitting", getattr(processor, "do_image_splitting", True)))


@MULTIMODAL_REGISTRY.register_processor(
    Idefics3MultiModalProcessor, info=VTPruneIdefics3ProcessingInfo, dummy_inputs=Idefics3DummyInputsBuilder
)
class VTPruneIdefics3ForConditionalGeneration(Idefics3Pruning, Idefics3ForConditionalGeneration):
    """vLLM's Idefics3 with every tile pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE


@MULTIMODAL_REGISTRY.register_processor(
    Idefics3MultiModalProcessor, info=VTPruneSmolVLMProcessingInfo, dummy_inputs=Idefics3DummyInputsBuilder
)
class VTPruneSmolVLMForConditionalGeneration(Idefics3Pruning, SmolVLMForConditionalGeneration):
    """vLLM's SmolVLM with every tile pruned by the configured method."""

    vtprune_architecture = SMOLVLM_ARCHITECTURE
