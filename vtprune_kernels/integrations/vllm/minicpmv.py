"""Pruned MiniCPM-V 4.6 for vLLM: ``VTPruneMiniCPMV4_6ForConditionalGeneration``.

As ``apply()`` (``integrations/minicpmv.py``): per NaViT unit (an image's source image and slices, a
video frame's the same) on the language-model grid (4 x 4 patches per token, 2 x 2 with
``downsample_mode="4x"``); scores are the attention each patch (or window-merged token, for layers
after the window merger) receives inside its unit, pooled over the patches each token covers;
VisPruner's de-duplication compares the MLP merger's input; min(keep, tokens) per unit; the kept
features are rows of the merger's output. The processor writes min(keep, tokens) placeholders per
unit; the unit markers stay. Random draws one image's (or video's) units in order from one fresh
``Random(keep, seed)``, as ``apply()`` on that image alone.

vLLM runs the units as rows of a padded batch (Idefics2's tower with a key mask): masked, its
attention runs SDPA instead of ``MMEncoderAttention``, so the capture hooks each scored layer's
fused q/k/v projection and scores each row's real tokens alone (``EncoderLayout.qkv_output``,
``row_lengths``); the methods vLLM runs score one layer, on one side of the window merger (the
patches up to ``insert_layer_id``, merged tokens after it). Precomputed embeddings are refused in a
request; ``compile_mm_encoder`` and encoder CUDA graphs at start. The units' sizes are read on the
host, as stock vLLM's mergers read them. Selection indices (``vtprune_selections``): per unit, raster
indices into its grid.
"""
from __future__ import annotations

import dataclasses
from typing import List

import torch
from vllm.model_executor.models.minicpmv import MiniCPMVDummyInputsBuilder
from vllm.model_executor.models.minicpmv4_6 import (
    MiniCPMV4_6ForConditionalGeneration,
    MiniCPMV4_6MultiModalProcessor,
    MiniCPMV4_6ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ...methods.pixel_shuffle_pooling import pixel_shuffle_pool
from ..minicpmv import merged_blocks, scored_grid, unit_grids
from .encoder_capture import EncoderLayout, describe_encoder
from .encoder_pruning import EncoderPruning, check_encoder_runs_eagerly
from .switch import method_from_config

ARCHITECTURE = "VTPruneMiniCPMV4_6ForConditionalGeneration"


class VTPruneMiniCPMV4_6ProcessingInfo(MiniCPMV4_6ProcessingInfo):
    """MiniCPM-V 4.6's processing info with min(keep, tokens) placeholders per unit (source image, slice, video
    frame); validates the switch when the processor is built (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), ARCHITECTURE).keep

    def _compute_visual_tokens(self, image_size, max_slice_nums=None, downsample_mode=None):
        grids, source, per_slice = super()._compute_visual_tokens(image_size, max_slice_nums, downsample_mode)
        return grids, min(self.vtprune_keep, source), min(self.vtprune_keep, per_slice)


def tower_layout(tower) -> EncoderLayout:
    """vLLM's Idefics2 tower as MiniCPM-V runs it (a key mask: SDPA, not ``MMEncoderAttention``): the fused q/k/v
    projection of every layer is hooked."""
    layers = tower.encoder.layers
    return dataclasses.replace(describe_encoder(tower), attention=lambda i: layers[i].self_attn.qkv_proj, qkv_output=True)


@MULTIMODAL_REGISTRY.register_processor(
    MiniCPMV4_6MultiModalProcessor, info=VTPruneMiniCPMV4_6ProcessingInfo, dummy_inputs=MiniCPMVDummyInputsBuilder
)
class VTPruneMiniCPMV4_6ForConditionalGeneration(MiniCPMV4_6ForConditionalGeneration):
    """vLLM's MiniCPM-V 4.6 with every image and video unit pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_encoder_runs_eagerly(vllm_config, ARCHITECTURE)
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, self.vpm, layout=tower_layout(self.vpm))
        insert = int(getattr(self.config, "insert_layer_id", -1))
        self.vtprune_insert = insert if insert >= 0 else None  # the layer after which the window merger runs

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the units encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _process_vision_input(self, image_input, use_vit_merger=None):
        if image_input["type"] == "image_embeds":
            raise ValueError(f"{ARCHITECTURE}: precomputed image or video embeddings cannot be pruned")
        return super()._process_vision_input(image_input, use_vit_merger=use_vit_merger)

    def get_vision_hidden_states(self, data, downsample_mode=None) -> List[torch.Tensor]:
        """Per unit of ``data`` (items' units in order), its kept language-model tokens [min(keep, T), D]."""
        sizes = [(int(h), int(w)) for h, w in data["tgt_sizes"].tolist()]  # host read, as stock vLLM's mergers do
        mode = downsample_mode or getattr(self.config, "downsample_mode", "16x")
        insert = None if mode == "4x" else self.vtprune_insert
        layers = self.vtprune.score_layers
        scored = [scored_grid(size, insert, layers) for size in sizes]
        tower_output = {}

        def keep_output(module, args, output):
            tower_output["hidden"] = output  # [B, S, C]: the tower's output (post_layernorm), rows padded at the end

        hook = self.vpm.post_layernorm.register_forward_hook(keep_output)
        try:
            with self.vtprune.capture(row_lengths=[h * w for h, w in scored]) as capture:
                units = super().get_vision_hidden_states(data, downsample_mode)
        finally:
            hook.remove()
        scores, hidden = capture.scores(), tower_output["hidden"]

        out, keeps, b = [], [], 0
        for count in data["num_slices"].tolist():  # units per item (kept on the CPU)
            method = self.vtprune.image_method()
            for _ in range(count):
                tower_grid, grid = unit_grids(sizes[b], insert)
                tokens = grid[0] * grid[1]
                unit_scores = None
                if scores is not None:
                    n = scored[b][0] * scored[b][1]
                    unit_scores = pixel_shuffle_pool(scores[b : b + 1, :n], scored[b], scored[b][0] // grid[0])
                rows = hidden[b, : tower_grid[0] * tower_grid[1]]
                features = self.vtprune.selection_features(lambda: merged_blocks(rows, tower_grid)[None], 1, tokens, hidden)
                keep = self.vtprune.select(unit_scores, features, grid, [1], method=method)
                keeps.append(keep)
                out.append(units[b][torch.nonzero_static(keep[0], size=min(self.vtprune.keep, tokens))[:, 0]])
                b += 1
        self.vtprune.record(keeps)  # per unit, as apply()
        return out
