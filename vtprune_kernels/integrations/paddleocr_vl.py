"""PaddleOCR-VL (``PaddleOCRVLForConditionalGeneration``): Qwen2-VL's plan on a SigLIP-style NaViT tower.

The tower (``model.model.visual.vision_model``: ``PaddleOCRVisionTransformer``) takes patches
[S, 3, P, P] of a packed batch of images (``image_grid_thw``, t = 1), each image's patches in RASTER
order (not Qwen's merge-block order), adds bilinearly resized learned position embeddings, runs its
``encoder.layers`` over the packed sequence with 2-D rotary q/k and attention per image
(``cu_seqlens``: one call per image under any non-flash implementation, as on Qwen-VL) and ends
with ``post_layernorm``. No [CLS] exists: VisPruner scores the attention each patch receives from
every row of its image (as on Qwen-VL). The ``projector`` (outside the tower) merges every 2x2
block: ``pre_norm`` per patch, the four patches concatenated (di, then dj), a two-layer MLP: one
language-model token per block, in the merged grid's raster order.

So the Qwen-VL machinery applies (``qwen_vl.py``, ``qwen_tower.py``): the tower's per-patch values
are put in merge-block order (``merged_grid.raster_to_merge_order``), selection runs per image on the
merged grid, the kept blocks alone go through ``post_layernorm`` + projector (``paddle_merge``, once per
image as the model calls its projector: keeping everything gives its features bit for bit), and
the kept placeholders keep their unpruned M-RoPE positions (the model's ``get_rope_index``).
Images only: the model takes no videos.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
from torch import nn

from ..methods._device import from_host
from ..methods.merged_grid import raster_to_merge_order
from .qwen_tower import QwenTower, merge_kept
from .qwen_vl import MODALITIES, QwenVLAdapter


@dataclasses.dataclass(frozen=True)
class PaddleOCRTower(QwenTower):
    """``QwenTower`` of PaddleOCR-VL's tower: blocks ``encoder.layers`` (attention ``self_attn``),
    patches in raster order, the 2x2 merge done by ``paddle_merge``."""

    def attention(self, layer: int) -> nn.Module:
        return self.blocks[layer].self_attn

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> None:
        """pixel_values [S, 3, P, P] as the model's ``get_image_features`` passes them (one packed row)."""
        self.module(pixel_values=pixel_values.type(self.module.dtype).unsqueeze(0), grid_thw=grid_thw)

    def merge_order(self, grid_thw: torch.Tensor, device: torch.device, host_grids=None) -> Callable[[torch.Tensor], torch.Tensor]:
        """Raster order -> merge-block order: one index built on the host from ``host_grids`` (read from
        ``grid_thw`` when not given, as the tower itself reads its grids) and uploaded once."""
        grids = grid_thw.tolist() if host_grids is None else host_grids
        index = from_host(raster_to_merge_order(grids, self.merge_size), device)
        return lambda x: x[index]


def paddle_merge(post_layernorm: nn.Module, projector: nn.Module, patches: torch.Tensor) -> torch.Tensor:
    """[K, D]: the tower's ``post_layernorm`` and the model's ``projector`` on patches [m*m*K, C] of the
    last block's output, m*m per merged token in merge-block order (the projector's own concatenation)."""
    x = projector.pre_norm(post_layernorm(patches))
    x = x.reshape(-1, projector.linear_1.in_features)
    return projector.linear_2(projector.act(projector.linear_1(x)))


def describe_paddle_tower(inner: nn.Module) -> PaddleOCRTower:
    """The ``PaddleOCRTower`` of a ``PaddleOCRVLModel`` (``model.model``)."""
    visual = inner.visual
    if type(visual).__name__ != "PaddleOCRVisionModel":
        raise ValueError(f"unsupported PaddleOCR-VL vision tower {type(visual).__name__}: expected PaddleOCRVisionModel")
    vit = visual.vision_model
    depth = len(vit.encoder.layers)
    return PaddleOCRTower(
        module=visual,
        blocks=vit.encoder.layers,
        merger=functools.partial(paddle_merge, vit.post_layernorm, inner.projector),
        merge_size=int(visual.config.spatial_merge_size),
        full_attention_layers=tuple(range(depth)),
        windowed=False,
        deepstack_layers=(),
        deepstack_mergers=None,
    )


class PaddleOCRVLAdapter(QwenVLAdapter):
    """Prunes the images of one ``PaddleOCRVLForConditionalGeneration`` call."""

    modalities = MODALITIES[:1]  # images
    patch_dims = 4  # [patches, channels, patch, patch]
    consumed_kwargs = ("pixel_values", "image_grid_thw")
    pixel_kwargs = ("pixel_values",)
    host_inputs = ("image_grid_thw", "video_grid_thw", "mm_token_type_ids")

    def describe_tower(self):
        return describe_paddle_tower(self.inner)

    def _merge(self, run, keeps):
        """``mm_encoder_outputs["image"]``: per image (``keeps``: its host keep mask), its kept merged tokens
        through ``paddle_merge``, one call per image as the model's projector runs."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        index = from_host(torch.cat(keeps).nonzero().flatten(), run.merged.device)
        kept = torch.split(run.merged[index], [int(k.sum()) for k in keeps])
        return BaseModelOutputWithPooling(pooler_output=[merge_kept(self.tower.merger, k, self.tower.hidden_size) for k in kept])
