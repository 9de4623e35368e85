"""MiniCPM-V 4.6 (``MiniCPMV4_6ForConditionalGeneration``): a NaViT tower with a window merger inside, an MLP merger.

An image is a source image plus slices (a video frame the same, with the video token), each a "unit"
of its own h x w patches (``target_sizes``), all packed in one sequence; the tower attends per unit.
After layer ``insert_layer_id`` a window merger turns every 2 x 2 patches into one token (the
layers after it attend over those), and after the tower the MLP merger concatenates every 2 x 2 of
them into one language-model token: (h/4) x (w/4) tokens per unit in raster order
(``downsample_mode="4x"`` skips the window merger: (h/2) x (w/2) tokens of 2 x 2 patches). A unit's
tokens are one run of placeholders between its markers, which stay.

Selection per unit on its token grid, min(keep, tokens) per unit:
- scores: the attention each token of the scored layers receives inside its unit (no [CLS]: VisPruner
  as HIVTP), averaged over the patches (or window-merged tokens) each language-model token covers.
  The scored layers must all lie on one side of the window merger (a layer before it attends over
  patches, one after it over merged tokens); HIVTP's default layers are the paper's (6..9) when they
  do, else the four layers after the window merger;
- VisPruner's de-duplication compares the MLP merger's input (the tower's output, 2 x 2 concatenated);
- the kept features are rows of the model's own ``get_image_features`` / ``get_video_features``.

``last_selection``: one entry per unit (images' units, then videos'), raster indices into its grid.

MiniCPM-V 4.7 (``MiniCPMV4_7ForConditionalGeneration``) has 4.6's tower and units and gives the language model
"canvas" M-RoPE positions: every token of an image is placed on a 2-D canvas (the source image stretched over
the slices' canvas, each slice at its offset, markers at the corners). Pruning keeps 4.6's plan and, as for
Qwen-VL, gives the surviving columns their positions in the UNPRUNED prompt (the model's own
``get_rope_index``) and sets ``rope_deltas`` so that generation continues at the unpruned max + 1
(``MiniCPMV47Adapter``).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch

from ..methods._device import from_host
from ..methods.hivtp import PAPER_LAYERS
from ..methods.pixel_shuffle_pooling import pixel_shuffle_pool
from .adapter import PrunedImages, TowerAdapter, make_captured, require_vision_only, score_layers, select
from .capture import VisionScoreCapture
from .mrope import set_kept_positions
from .vision_runner import encoder_tower


def merged_blocks(hidden: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """[T, 4C]: a unit's tower output [h*w, C] (raster) with every 2 x 2 block concatenated ((row, column) offset
    order, as the MLP merger), blocks in raster order."""
    h, w = grid
    return hidden.reshape(h // 2, 2, w // 2, 2, hidden.shape[-1]).permute(0, 2, 1, 3, 4).reshape((h // 2) * (w // 2), -1)


def check_one_side(layers: Sequence[int], insert: Optional[int], method, needs) -> None:
    """A clear ``ValueError`` when the scored ``layers`` straddle the window merger after layer ``insert`` (None: no merger)."""
    if insert is not None and min(layers) <= insert < max(layers):
        raise ValueError(
            f"{type(method).__name__}({needs.vision_layers_arg}=...) scores vision layers {tuple(layers)}: layers "
            f"0..{insert} attend over patches, later ones over the window merger's 2x2 tokens; pick layers on one side"
        )


def unit_grids(size: Tuple[int, int], insert: Optional[int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """(the tower's output grid, the language-model grid) of a unit of ``size`` (h, w) patches; ``insert``: the layer
    after which the window merger runs, None when it does not."""
    h, w = size
    tower = (h // 2, w // 2) if insert is not None else (h, w)
    return tower, (tower[0] // 2, tower[1] // 2)


def scored_grid(size: Tuple[int, int], insert: Optional[int], layers: Sequence[int]) -> Tuple[int, int]:
    """The grid the scored ``layers`` attend over in a unit of ``size`` (h, w) patches: the patches, or the window
    merger's 2 x 2 tokens when it runs (``insert`` not None) before them."""
    h, w = size
    return (h // 2, w // 2) if insert is not None and min(layers) > insert else (h, w)


class MiniCPMVAdapter(TowerAdapter):
    """Prunes the image and video units of one ``MiniCPMV4_6ForConditionalGeneration`` call."""

    family = "MiniCPMV4_6ForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "target_sizes", "pixel_values_videos", "target_sizes_videos", "downsample_mode")
    pixel_kwargs = ("pixel_values", "pixel_values_videos")
    host_inputs = ("target_sizes", "target_sizes_videos")

    def __init__(self, model):
        super().__init__(model)
        self.video_token_id = int(model.config.video_token_id)

    def describe_tower(self):
        return encoder_tower(self.inner.vision_tower)

    def window_merger_after(self, mode: str) -> Optional[int]:
        """The encoder layer after which the window merger runs, or None (``downsample_mode="4x"``)."""
        insert = int(self.inner.vision_tower.config.insert_layer_id)
        return None if mode == "4x" or insert < 0 else insert

    def middle_layers(self, insert: Optional[int]) -> Tuple[int, ...]:
        """HIVTP's default layers: the paper's (0-based 6..9), or the four after the window merger when those
        straddle it."""
        if insert is not None and min(PAPER_LAYERS) <= insert < max(PAPER_LAYERS):
            return tuple(range(insert + 1, min(insert + 1 + len(PAPER_LAYERS), self.tower.num_layers)))
        return tuple(PAPER_LAYERS)

    def scored_layers(self, needs, method, insert: Optional[int]) -> Tuple[int, ...]:
        """0-based layers the method scores (``needs`` resolved), checked to lie on one side of the window merger."""
        layers = tuple(score_layers(needs, self.tower.num_layers - 1, self.tower.num_layers))
        check_one_side(layers, insert, method, needs)
        return layers

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        needs = method.needs(False)
        require_vision_only(needs, method, self.family)
        mode = kwargs.get("downsample_mode") or self.model.config.downsample_mode
        insert = self.window_merger_after(mode)
        if needs.vision_layers is None and needs.default_layers == "middle":
            needs = dataclasses.replace(needs, vision_layers=self.middle_layers(insert))
        needs = self.resolved(needs, method)
        layers = self.scored_layers(needs, method, insert)
        units: List[_Units] = []
        for pixels_key, sizes_key, encode, token in (
            ("pixel_values", "target_sizes", self.inner.get_image_features, self.image_token_id),
            ("pixel_values_videos", "target_sizes_videos", self.inner.get_video_features, self.video_token_id),
        ):
            if kwargs.get(pixels_key) is None:
                continue
            if kwargs.get(sizes_key) is None:
                raise ValueError(f"{self.family}: pruning needs {sizes_key} with {pixels_key}")
            sizes = [(int(h), int(w)) for h, w in reads.get(sizes_key).tolist()]
            unit = 4 if insert is not None else 2
            if any(h % unit or w % unit for h, w in sizes):
                raise ValueError(f"{sizes_key}: every unit must be whole {unit} x {unit} blocks of patches, got {sizes}")
            capture = None if needs.query_rows == "none" else VisionScoreCapture(self.tower, layers, needs.query_rows, backend=backend)
            pixels = kwargs[pixels_key][:1]  # as the model's forward: every unit of the batch packed in row 0
            if capture is None:
                out = encode(pixels, kwargs[sizes_key], downsample_mode=mode)
            else:
                with capture:
                    out = encode(pixels, kwargs[sizes_key], downsample_mode=mode)
            units.append(self._select(out, sizes, capture, layers, insert, needs, method, backend, token))
        host = reads.fetch(*[m for u in units for m in u.masks])  # the call's host synchronisation

        result = PrunedImages(pooler_output=[], placeholder_keep=[], selection=[], num_tokens=[], placeholder_tokens=[],
                              encoder_outputs={})
        first = 0
        for u in units:
            kept = []
            for features, mask in zip(u.features, host[first : first + len(u.features)]):
                keep = mask[0]
                kept.append(features[from_host(keep.nonzero().flatten(), features.device)])
                result.placeholder_keep.append(keep)
                result.selection.append(keep.nonzero().flatten())
                result.num_tokens.append(int(keep.numel()))
                result.placeholder_tokens.append(u.token)
            first += len(u.features)
            modality = "image" if u.token == self.image_token_id else "video"
            result.encoder_outputs[modality] = BaseModelOutputWithPooling(pooler_output=kept)
            if modality == "image":
                result.pooler_output = kept
        return result

    def _select(self, out, sizes, capture, layers, insert, needs, method, backend, token) -> "_Units":
        """Per unit, its language-model tokens (the model's own) and keep mask [1, T] on the device."""
        chunks = None if capture is None else capture.chunk_scores()  # per unit [1, tokens of the scored layers]
        if chunks is not None and len(chunks) != len(sizes):
            raise RuntimeError(
                f"{self.family}: the tower attended in {len(chunks)} calls per layer for {len(sizes)} units "
                "(pruning expects one call per unit, as its attention runs outside flash attention)"
            )
        hidden = out.last_hidden_state[0]  # [sum of units' tower tokens, C]
        masks, start = [], 0
        for b, (h, w) in enumerate(sizes):
            tower_grid, grid = unit_grids((h, w), insert)
            n = tower_grid[0] * tower_grid[1]
            scores = None
            if chunks is not None:
                scored = scored_grid((h, w), insert, layers)
                scores = pixel_shuffle_pool(chunks[b], scored, scored[0] // grid[0])
            features = merged_blocks(hidden[start : start + n], tower_grid)[None] if needs.features else None
            captured = make_captured(needs, grid, scores, features, batch_size=1, device=hidden.device)
            masks.append(select(method, captured, (1, grid[0] * grid[1]), backend))
            start += n
        return _Units(list(out.pooler_output), masks, token)


@dataclasses.dataclass
class _Units:
    """One modality's units: per unit its language-model tokens [T, D] and device keep mask [1, T]; their placeholder."""

    features: List[torch.Tensor]
    masks: List[torch.Tensor]
    token: int


class MiniCPMV47Adapter(MiniCPMVAdapter):
    """MiniCPM-V 4.7: 4.6's units and selection, the surviving columns at their unpruned canvas positions."""

    family = "MiniCPMV4_7ForConditionalGeneration"
    host_inputs = ("target_sizes", "target_sizes_videos", "mm_token_type_ids")

    def finish(self, out: dict, inputs: dict, reads, layout) -> None:
        types = reads.get("mm_token_type_ids")
        if types is None:
            raise ValueError(f"{self.family}: pruning needs mm_token_type_ids (the processor returns them): the canvas positions read them")
        positions, _ = self.inner.get_rope_index(
            reads.get("input_ids"), mm_token_type_ids=types, target_sizes=reads.get("target_sizes"),
            target_sizes_videos=reads.get("target_sizes_videos"), downsample_mode=inputs.get("downsample_mode"),
            attention_mask=reads.get("attention_mask"),
        )
        set_kept_positions(self.inner, out, layout, positions, types)
