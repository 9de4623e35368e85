"""The vision tower of Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5: its anatomy, and one run that
yields what pruning needs.

The towers (transformers' ``Qwen2VisionTransformerPretrainedModel``,
``Qwen2_5_VisionTransformerPretrainedModel``, ``Qwen3VLVisionModel``, ``Qwen3_5VisionModel`` and
their MoE twins) take flattened patches
[S, 3*2*P*P] in the processor's merge-block order plus ``grid_thw``, run ``depth`` blocks over the
packed sequence (attention per frame: ``cu_seqlens``), and merge every
2x2 block of patches into one language-model token with ``merger`` (see
``methods/merged_grid.py`` for the orders). Differences:

- Qwen2-VL attends over the whole frame in every block; nothing else (its vision config names the
  blocks' width ``embed_dim``, and ``hidden_size`` is the merger's output).
- Qwen2.5-VL attends inside windows (112 px, i.e. 4x4 merged tokens) in every block except
  ``fullatt_block_indexes`` (7, 15, 23, 31 in the released checkpoints), and runs its blocks on a
  window-permuted sequence.
- Qwen3-VL attends over the whole frame in every block (no windows) and feeds the language model
  DeepStack features too: after blocks ``deepstack_visual_indexes`` (8, 16, 24) a per-level merger
  turns the block's output into one more feature per merged token.
- Qwen3.5 (dense and MoE) has Qwen3-VL's tower without DeepStack.
- GLM-4.1V / GLM-4.5V attend over the whole frame in every block and merge a 2x2 block with a norm
  per patch, a 2x2 convolution and an MLP (``glm4v_merge``), not by concatenation. GLM-OCR's tower is
  theirs with q/k norms inside its attention (before the rotary embedding, so the captured q/k are
  the normed ones) and no learned position embedding.
- PaddleOCR-VL's NaViT tower (``paddleocr_vl.PaddleOCRTower``, a subclass) sees raster-order patches and
  names its blocks' attention ``self_attn``: ``QwenTower.attention`` / ``forward`` / ``merge_order`` are
  what a subclass overrides.
- ERNIE 4.5-VL attends over the whole frame in every block (a video's frames one by one: no temporal
  patch), ends with a LayerNorm ``ln`` and has no merger: the model's resampler, outside the tower,
  turns the 4C concatenations into language-model tokens (``ernie4_5_vl.resample_kept``); its
  ``QwenTower.merger`` is None.

``run_tower`` calls the tower's own ``forward`` (embeddings, rotary positions, window permutation
and the model's attention implementation are the model's) while ``attention_capture`` hands the
scored blocks' q/k (after the rotary embedding, which Qwen applies inside the attention module)
and the kernel's log-sum-exp to a ``ScoreAccumulator``, once per attention segment: a frame in a
full-attention block, a window in Qwen2.5-VL's others. It leaves the forward after the last block, so
the merger only ever runs on the kept tokens (``merge_kept``). The DeepStack mergers, which the
model calls inside its block loop, are handed a single merged token by a pre-hook during the run
(the blocks' outputs are kept), so they too run only on kept tokens. Hooks exist only during the call and
act only in the calling thread.
"""
from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..methods._device import from_host
from ..methods.hivtp import PAPER_LAYERS
from ..methods.merged_grid import merged_features, merged_grid_pool, to_merge_order
from .attention_capture import AttentionCapture
from .score_accumulator import ScoreAccumulator
from .stop_tower import StopTower, stopped_early

TOWER_CLASSES = (
    "Qwen2VisionTransformerPretrainedModel",
    "Qwen2_5_VisionTransformerPretrainedModel",
    "Qwen2_5OmniVisionEncoder",
    "Exaone4_5_VisionModel",
    "Qwen3OmniMoeVisionEncoder",
    "Qwen3VLVisionModel",
    "Qwen3VLMoeVisionModel",
    "Qwen3_5VisionModel",
    "Qwen3_5MoeVisionModel",
    "Glm4vVisionModel",
    "Glm4vMoeVisionModel",
    "GlmOcrVisionModel",
    "Ernie4_5_VLMoeVisionTransformerPretrainedModel",
)


@dataclasses.dataclass(frozen=True)
class QwenTower:
    """Where the pieces of a Qwen-VL vision tower live.

    full_attention_layers: blocks whose attention spans the whole frame (every block on Qwen3-VL).
    windowed: whether the other blocks attend inside windows (Qwen2.5-VL); the blocks then see a
        window-permuted sequence. deepstack_layers / deepstack_mergers: Qwen3-VL's DeepStack.
    """

    module: nn.Module
    blocks: nn.ModuleList
    merger: Optional[Callable[[torch.Tensor], torch.Tensor]]  # [4K, C] patch rows -> [K, D] (ERNIE 4.5-VL: None)
    merge_size: int
    full_attention_layers: Tuple[int, ...]
    windowed: bool
    deepstack_layers: Tuple[int, ...]
    deepstack_mergers: Optional[nn.ModuleList]

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def hidden_size(self) -> int:
        """The blocks' width C (the merger's input is 4C per merged token)."""
        config = self.module.config
        return int(getattr(config, "embed_dim", None) or config.hidden_size)  # Qwen2-VL: embed_dim

    def feature_score_layer(self) -> int:
        """VisPruner's default layer (``feature_score_layer`` below)."""
        return feature_score_layer(self.num_layers, self.full_attention_layers)

    def middle_layers(self) -> Tuple[int, ...]:
        """HIVTP's default layers (``middle_layers`` below)."""
        return middle_layers(self.full_attention_layers, self.windowed)

    def window_index(self, grid_thw: torch.Tensor) -> Optional[torch.Tensor]:
        """The window permutation the model applies for these grids (None without windows)."""
        if not self.windowed:
            return None
        from transformers.vision_utils import get_vision_window_index

        visual = self.module
        index, _ = get_vision_window_index(grid_thw, visual.spatial_merge_size, visual.window_size, visual.patch_size)
        return index

    def attention(self, layer: int) -> nn.Module:
        """Block ``layer``'s attention module (the one ``attention_capture`` captures)."""
        return self.blocks[layer].attn

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> None:
        """The tower's own forward on a packed batch (``run_tower`` leaves it after the last block)."""
        self.module(pixel_values.type(self.module.dtype), grid_thw=grid_thw)

    def merge_order(
        self, grid_thw: torch.Tensor, device: torch.device, host_grids: Optional[Sequence[Sequence[int]]] = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function taking per-patch values [S, ...] in the order the blocks see them to the merge-block
        order (``methods/merged_grid.py``): Qwen2.5-VL's blocks see a window-permuted sequence.
        ``host_grids``: the grids as host lists when the caller has them (a subclass may read them)."""
        window_index = self.window_index(grid_thw)
        if window_index is None:
            return lambda x: x
        window_index = from_host(window_index, device)  # on the host: one copy, not one per captured layer
        return lambda x: to_merge_order(x, window_index, self.merge_size)


@dataclasses.dataclass
class MergedGridItem:
    """One image or video of a tower run: grid (t, h, w) in patches, first merged token in the run,
    merge size; its frames' merged grid (h/m, w/m). Shared with the vLLM plugin."""

    grid: Tuple[int, int, int]
    first: int
    merge: int

    @property
    def frame_grid(self) -> Tuple[int, int]:
        return self.grid[1] // self.merge, self.grid[2] // self.merge

    @property
    def frame_tokens(self) -> int:
        h, w = self.frame_grid
        return h * w

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.frame_tokens


def feature_score_layer(num_layers: int, full_attention_layers: Sequence[int]) -> int:
    """VisPruner's default layer: the layer whose output the merger uses (the last block) when
    it attends over the whole frame, else the last full-attention block (on every released
    Qwen2.5-VL the last block is a full-attention block, so both are the same). Shared with the
    vLLM plugin, whose Qwen2.5-VL tower has the same blocks."""
    last = num_layers - 1
    return last if last in full_attention_layers else max(full_attention_layers)


def middle_layers(full_attention_layers: Sequence[int], windowed: bool) -> Tuple[int, ...]:
    """HIVTP's default layers. Towers that attend globally in every block: the paper's 0-based
    6..9 (its layers 7-10 of CLIP-L's 24). Qwen2.5-VL: the middle one or two of its
    full-attention blocks (15 and 23 of 7, 15, 23, 31), since a windowed block's attention
    only spans a 112 px window and is not the image-wide received attention HIVTP scores."""
    if not windowed:
        return PAPER_LAYERS
    full = sorted(full_attention_layers)
    n = len(full)
    return tuple(full[(n - 1) // 2 : n // 2 + 1])


def glm4v_merge(visual: nn.Module, patches: torch.Tensor) -> torch.Tensor:
    """GLM-4V's merge of 2x2 blocks, as its tower runs it after the last block: the per-patch norm,
    the 2x2 convolution, the merger MLP. ``visual``: transformers' or vLLM's GLM-4V tower (the same
    module names); patches [4K, C] (4 per block, in the model's order) -> [K, D]."""
    m = visual.spatial_merge_size
    x = visual.post_layernorm(patches).view(-1, m, m, patches.shape[-1]).permute(0, 3, 1, 2)
    x = visual.downsample(x)  # [K, D, 1, 1]
    return visual.merger(x.view(x.shape[0], -1))


def describe_tower(visual: nn.Module) -> QwenTower:
    """The ``QwenTower`` of ``model.model.visual``; a clear error for other towers."""
    name = type(visual).__name__
    if name not in TOWER_CLASSES:
        raise ValueError(f"unsupported Qwen-VL vision tower {name}: supported {', '.join(TOWER_CLASSES)}")
    depth = len(visual.blocks)
    windowed = hasattr(visual, "fullatt_block_indexes")
    full = tuple(int(i) for i in visual.fullatt_block_indexes) if windowed else tuple(range(depth))
    if not full:
        raise ValueError(f"{name}: fullatt_block_indexes is empty (no block attends over the whole image)")
    deepstack = tuple(int(i) for i in getattr(visual, "deepstack_visual_indexes", ()) or ())
    return QwenTower(
        module=visual,
        blocks=visual.blocks,
        merger=functools.partial(glm4v_merge, visual) if hasattr(visual, "downsample") else getattr(visual, "merger", None),
        merge_size=int(visual.spatial_merge_size),
        full_attention_layers=full,
        windowed=windowed,
        deepstack_layers=deepstack,
        deepstack_mergers=getattr(visual, "deepstack_merger_list", None),
    )


@dataclasses.dataclass
class TowerRun:
    """One tower run over a packed batch of images (or videos), everything in merge order.

    merged: [T, 4*C] the last block's output concatenated per merged token (the merger's input).
    deepstack: per DeepStack level, [T, 4*C] that level's block output, concatenated the same way.
    scores: float32 [T] mean received attention of each merged token's patches (averaged over the
        scored layers), or None when nothing was scored.
    segments, segments_with_lse: attention segments scored, and how many of them reused the
        model's log-sum-exp (one pass over the keys instead of two).
    """

    merged: torch.Tensor
    deepstack: List[torch.Tensor]
    scores: Optional[torch.Tensor]
    segments: int = 0
    segments_with_lse: int = 0


def run_tower(
    tower: QwenTower,
    pixel_values: torch.Tensor,
    grid_thw: torch.Tensor,
    score_layers: Sequence[int] = (),
    *,
    backend: str = "auto",
    host_grids: Optional[Sequence[Sequence[int]]] = None,
) -> TowerRun:
    """Run every block of ``tower`` (not the mergers) and capture the received attention of
    ``score_layers`` (0-based blocks). pixel_values [S, 3*2*P*P], grid_thw int64 [n, 3] (device);
    host_grids: the same grids on the host, when the caller has read them."""
    bad = [i for i in score_layers if not 0 <= i < tower.num_layers]
    if bad:
        raise ValueError(f"vision layers {bad} do not exist in a {tower.num_layers}-block Qwen-VL tower")
    owner = threading.get_ident()
    kept: Dict[str, torch.Tensor] = {}
    unit = tower.merge_size**2

    def keep_output(name, stop=False):
        def hook(module, args, output):
            if threading.get_ident() == owner:
                kept[name] = output
                if stop:
                    raise StopTower()

        return hook

    def shrink(module, args):
        # the model merges this level inside its block loop: hand it one merged token, not all of them
        return (args[0][:unit],) if threading.get_ident() == owner else None

    handles = [tower.blocks[layer].register_forward_hook(keep_output(layer)) for layer in set(tower.deepstack_layers)]
    handles.append(tower.blocks[-1].register_forward_hook(keep_output("last", stop=True)))
    handles += [merger.register_forward_pre_hook(shrink) for merger in tower.deepstack_mergers or ()]
    scored = sorted(set(score_layers))
    scores = ScoreAccumulator("all", backend=backend)  # one chunk per (layer, attention segment)
    capture = AttentionCapture(
        {i: tower.attention(i) for i in scored},
        lambda call: scores.add(call.query, call.key, scale=call.scale, lse=call.lse, chunk=(call.layer, call.chunk)),
    )
    with stopped_early(handles), capture:
        tower.forward(pixel_values, grid_thw)
    if "last" not in kept:
        raise RuntimeError("the Qwen-VL vision tower returned before its last block")

    in_merge_order = tower.merge_order(grid_thw, pixel_values.device, host_grids)
    patch_scores = None
    if scored:
        # a layer's segments (frames, or windows) in call order cover its sequence once: concatenated,
        # one score per patch in the order the layer saw them
        per_layer = [torch.cat([scores.mean(c)[0] for c in scores.chunks if c[0] == layer]) for layer in scored]
        if any(s.numel() != pixel_values.shape[0] for s in per_layer):
            raise RuntimeError("a scored Qwen-VL vision block did not attend over every patch once")
        patch_scores = torch.stack([in_merge_order(s) for s in per_layer]).mean(0)
    merged = [merged_features(in_merge_order(kept[name]), tower.merge_size) for name in ("last", *tower.deepstack_layers)]
    pooled = None if patch_scores is None else merged_grid_pool(patch_scores, tower.merge_size)
    return TowerRun(
        merged=merged[0], deepstack=merged[1:], scores=pooled, segments=len(scores.chunks), segments_with_lse=scores.adds_with_lse
    )


def merge_kept(merger: Callable[[torch.Tensor], torch.Tensor], kept: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """[K, D]: ``merger`` (the final or a DeepStack merger) on kept merged tokens [K, 4*C], called
    exactly as the model calls it (on the [4K, C] patch rows)."""
    return merger(kept.reshape(-1, hidden_size))
