"""Pruned Gemma 4 for vLLM (images): ``VTPruneGemma4ForConditionalGeneration``.

As ``apply()`` (``integrations/gemma4.py``): per image on the tower's position-pooled grid (3 x 3
patches per soft token on the released models), scores are the attention each patch receives
inside its image, pooled with the tower's own position pooling; VisPruner's de-duplication compares
the pooler's output; min(keep, soft tokens) per image, rows of the model's own image embeddings.

vLLM runs transformers' own Gemma 4 vision tower (its patch embedder and encoder, on images padded
at the end to the processor's patch budget, in buckets of equal patch count and memory-sized
chunks), so the scores come from the transformers capture (``capture.VisionScoreCapture``) on its
attention modules, each row's real patches scored alone (``row_lengths``, rows in encode order). The processor writes min(keep, soft tokens) placeholders between each image's
boi / eoi tokens. Videos (frames through the same tower) are not pruned yet: the pruned engine
takes no video (``limit_mm_per_prompt``), and the MM-LoRA path (images padded into one batch) is
refused at start. Selection indices: raster indices into the image's pooled grid.
"""
from __future__ import annotations

import threading
from typing import List

import torch
from vllm.model_executor.models.gemma4_mm import (
    Gemma4DummyInputsBuilder,
    Gemma4ForConditionalGeneration,
    Gemma4MultiModalProcessor,
    Gemma4ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..capture import VisionScoreCapture
from ..gemma4 import pooled_grid, pooled_scores
from ..vision_runner import VisionTower
from .encoder_capture import EncoderLayout
from .encoder_pruning import EncoderPruning, check_encoder_runs_eagerly
from .switch import method_from_config

ARCHITECTURE = "VTPruneGemma4ForConditionalGeneration"


class VTPruneGemma4ProcessingInfo(Gemma4ProcessingInfo):
    """Gemma 4's processing info with min(keep, soft tokens) placeholders per image and no videos.
    Validates the switch when the processor is built (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), ARCHITECTURE).keep

    def _compute_num_soft_tokens(self, image_width: int, image_height: int, max_soft_tokens=None) -> int:
        full = super()._compute_num_soft_tokens(image_width, image_height, max_soft_tokens=max_soft_tokens)
        return min(self.vtprune_keep, full)

    def get_supported_mm_limits(self):
        limits = dict(super().get_supported_mm_limits())
        limits.pop("video", None)  # video frames are not pruned yet
        return limits

    def get_mm_max_tokens_per_item(self, seq_len, mm_counts):
        tokens = dict(super().get_mm_max_tokens_per_item(seq_len, mm_counts) or {})
        if "image" in tokens:
            tokens["image"] = min(tokens["image"], self.vtprune_keep)
        tokens.pop("video", None)
        return tokens


def tower_layout(tower) -> EncoderLayout:
    """The attention layout of transformers' Gemma 4 vision tower (every head on every rank: vLLM does not shard it)."""
    config = tower.config
    return EncoderLayout(
        attention=lambda i: tower.encoder.layers[i].self_attn,
        num_layers=len(tower.encoder.layers),
        local_heads=int(config.num_attention_heads),
        total_heads=int(config.num_attention_heads),
        head_dim=int(config.head_dim),
        scale=1.0,
        has_cls=False,
    )


def encode_order(pixel_values) -> List[int]:
    """The images in the order vLLM's Gemma 4 encodes them: grouped by patch count (first appearance), in order."""
    buckets = {}
    for i, image in enumerate(pixel_values):
        buckets.setdefault(int(image.shape[0]), []).append(i)
    return [i for items in buckets.values() for i in items]


@MULTIMODAL_REGISTRY.register_processor(
    Gemma4MultiModalProcessor, info=VTPruneGemma4ProcessingInfo, dummy_inputs=Gemma4DummyInputsBuilder
)
class VTPruneGemma4ForConditionalGeneration(Gemma4ForConditionalGeneration):
    """vLLM's Gemma 4 with every image pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_encoder_runs_eagerly(vllm_config, ARCHITECTURE)
        if self._enable_mm_lora:
            raise ValueError(f"{ARCHITECTURE}: multimodal LoRA (images padded into one batch) is not supported")
        tower = self.vision_tower
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, tower, layout=tower_layout(tower))
        layers = tower.encoder.layers
        self.vtprune_tower = VisionTower(module=tower, layers=layers, attention_module=lambda i: layers[i].self_attn, has_cls=False)

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the images encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _process_image_input(self, image_input):
        pixel_values, positions = image_input["pixel_values"], image_input["pixel_position_ids"]
        order = encode_order(pixel_values)
        pooler = self.vision_tower.pooler
        pooled, owner = [], threading.get_ident()

        def keep_pooled(module, args, output):  # called once per image, in call order
            if threading.get_ident() == owner:
                pooled.append(output)

        needs = self.vtprune.needs
        # one host copy of every image's patch positions (vLLM's own pooling reads them on the host too)
        host_positions = list(torch.cat(list(positions)).cpu().split([p.shape[0] for p in positions]))
        real_of = [int((p != -1).all(-1).sum()) for p in host_positions]  # real patches (padding last)
        real = [real_of[i] for i in order]  # per encoded row
        hook = pooler.register_forward_hook(keep_pooled)
        try:
            if needs.query_rows == "none":
                embeddings = super()._process_image_input(image_input)
                rows = None
            else:
                capture = VisionScoreCapture(
                    self.vtprune_tower, self.vtprune.score_layers, needs.query_rows, backend=self.vtprune.backend, row_lengths=real
                )
                with capture:
                    embeddings = super()._process_image_input(image_input)
                rows = [chunk[0] for chunk in capture.chunk_scores()]  # [n_i] per image, encode order
        finally:
            hook.remove()
        scores = [None] * len(order)
        if rows is not None:
            for i, row in zip(order, rows):
                scores[i] = row

        out, keeps = [], []
        kernel = int(self.config.vision_config.pooling_kernel_size)
        for i, image in enumerate(embeddings):
            features, mask = pooled[i]
            grid = pooled_grid(host_positions[i][: real_of[i]], kernel, image.shape[0], ARCHITECTURE)
            image_scores = None
            if scores[i] is not None:
                image_scores = pooled_scores(pooler, [scores[i][None]], positions[i][None], features.shape[1])[:, mask[0]]
            image_features = self.vtprune.selection_features(lambda: features[:, mask[0]], 1, image.shape[0], image)
            keep = self.vtprune.select(image_scores, image_features, grid, [1])
            keeps.append(keep)
            out.append(image[torch.nonzero_static(keep[0], size=min(self.vtprune.keep, image.shape[0]))[:, 0]])
        self.vtprune.record(keeps)
        return out
