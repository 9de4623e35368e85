"""Gemma 4 (``Gemma4ForConditionalGeneration``): a vision tower at each image's own resolution, pooled k x k.

The processor turns every image into up to ``max_patches`` patches at its own aspect ratio, padded
at the END to the batch's patch count (``pixel_values`` [images, P, 3*p*p], ``image_position_ids``
[images, P, 2] holding each patch's (x, y), (-1, -1) for padding); the tower attends over each
image's real patches (a key mask), its pooler averages every k x k block of patches
(``pooling_kernel_size``, 3) into one soft token, in raster order of the pooled grid, and
``embed_vision`` maps the soft tokens to the language model. The selection runs per image on that
pooled grid, as on Gemma 3:

- scores: the attention each patch receives inside its image (no [CLS]: VisPruner as HIVTP), the
  padded rows' real queries and keys scored alone (``VisionScoreCapture(row_lengths=...)``), pooled
  with the pooler's own position pooling;
- VisPruner's de-duplication compares the pooler's output (the pooled tower features);
- budgets per image: min(keep, soft tokens); the kept features are rows of the model's own
  ``get_image_features``.

The language model attends bidirectionally inside each image on its sliding layers
(``mm_token_type_ids``): the pruned prompt's ``mm_token_type_ids`` lose the same columns, so an
image's kept tokens stay one block.

Videos (``pixel_values_videos`` [frames, P, 3*p*p], ``video_position_ids``, ``num_frames_per_video``): every
frame goes through the same tower as an image (its own padding, its own pooled grid) and is selected
as an image, min(keep, soft tokens) per frame; a video's placeholders are its frames' soft tokens in
frame order. Audio (``input_features``) is refused (not yet tested alongside). Selection indices: per
image, raster indices into its pooled grid; per video, frame * (soft tokens per frame) + raster index;
images first, then videos. Random draws the images first, then the frames.
"""
from __future__ import annotations

import threading
from typing import List

import torch

from .adapter import PrunedImages, make_captured, require_vision_only, score_layers, select
from .capture import VisionScoreCapture
from .gemma3 import Gemma3Adapter
from .vision_runner import encoder_tower


def pooled_scores(pooler, chunks, positions: torch.Tensor, length: int) -> torch.Tensor:
    """float32 [n, length]: per-patch scores (one [1, n_b] chunk per image, its real patches) pooled with the
    tower's own position pooling (``pooler``; padding counts zero, as the pooler counts its zeroed
    features); ``positions`` [n, P, 2]. Shared by ``apply()`` and the vLLM plugin."""
    n, P = positions.shape[:2]
    padded = torch.zeros(n, P, 1, dtype=torch.float32, device=chunks[0].device)
    for b, chunk in enumerate(chunks):
        padded[b, : chunk.shape[1], 0] = chunk[0]
    out, _ = pooler._avg_pool_by_positions(padded, positions, length)
    return out[..., 0]


def pooled_grid(positions: torch.Tensor, kernel: int, tokens: int, family: str):
    """(rows, columns) of an image's pooled grid from its real patches' HOST positions [n_b, 2] (x, y), pooled
    ``kernel`` x ``kernel``; a clear error when the tower's ``tokens`` soft tokens are not that grid."""
    rows, cols = (int(positions[:, 1].max()) + 1) // kernel, (int(positions[:, 0].max()) + 1) // kernel
    if rows * cols != tokens:
        raise ValueError(f"{family}: an image's {tokens} soft tokens are not its {rows} x {cols} pooled grid")
    return rows, cols


class Gemma4Adapter(Gemma3Adapter):
    """Prunes the images and videos of one ``Gemma4ForConditionalGeneration`` call."""

    family = "Gemma4ForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "image_position_ids", "pixel_values_videos", "video_position_ids", "num_frames_per_video")
    pixel_kwargs = ("pixel_values", "pixel_values_videos")
    host_inputs = ("mm_token_type_ids", "image_position_ids", "video_position_ids", "num_frames_per_video")
    token_type_inputs = ("mm_token_type_ids",)

    def __init__(self, model):
        super().__init__(model)
        self.video_token_id = int(model.config.video_token_id)

    def describe_tower(self):
        return encoder_tower(self.inner.vision_tower)

    def real_lengths(self, positions: torch.Tensor, pixel_values: torch.Tensor, what: str = "image") -> List[int]:
        """Per image (or frame), its number of real patches (host ``positions`` [n, P, 2]; padding must be a suffix)."""
        pixels, ids = ("pixel_values", "image_position_ids") if what == "image" else ("pixel_values_videos", "video_position_ids")
        if pixel_values.dim() != 3:
            raise ValueError(f"{pixels} must be [num_{what}s, patches, values], got shape {tuple(pixel_values.shape)}")
        if positions.dim() != 3 or tuple(positions.shape) != (*pixel_values.shape[:2], 2):
            raise ValueError(
                f"{ids} must be [num_{what}s, patches, 2] = [{pixel_values.shape[0]}, {pixel_values.shape[1]}, 2], "
                f"got shape {tuple(positions.shape)}"
            )
        real = (positions != -1).all(-1)
        lengths = real.sum(1)
        if not bool((real == (torch.arange(real.shape[1]) < lengths[:, None])).all()):
            raise ValueError(f"{self.family}: {ids} mark padding patches before real ones (padding must come last)")
        return lengths.tolist()

    def _select(self, pixel_values, positions, host_positions, encode, needs, method, backend, what: str):
        """(per image / frame its soft tokens [T_b, D], per image / frame its keep mask [1, T_b] on the device):
        ``encode()`` runs the model's own feature step (the pooler's output read by a hook, the tower's
        scores by the capture) and returns the soft tokens of all images / frames, concatenated [sum T_b, D]."""
        lengths = self.real_lengths(host_positions, pixel_values, what)
        tower = self.inner.vision_tower
        kernel = int(tower.config.pooling_kernel_size)
        pooled, owner = {}, threading.get_ident()

        def keep_pooled(module, args, output):
            if threading.get_ident() == owner:
                pooled["features"], pooled["mask"] = output

        hook = tower.pooler.register_forward_hook(keep_pooled)
        try:
            if needs.query_rows == "none":
                tokens, scores = encode(), None
            else:
                layers = score_layers(needs, self.tower.num_layers - 1, self.tower.num_layers)
                capture = VisionScoreCapture(self.tower, layers, needs.query_rows, backend=backend, row_lengths=lengths)
                with capture:
                    tokens = encode()
                scores = pooled_scores(tower.pooler, capture.chunk_scores(), positions, pooled["mask"].shape[1])
        finally:
            hook.remove()

        features = list(torch.split(tokens, [n // (kernel * kernel) for n in lengths]))
        masks = []
        for b, frame in enumerate(features):
            T = frame.shape[0]
            grid = pooled_grid(host_positions[b, : lengths[b]], kernel, T, self.family)
            # the pooler's real soft tokens are its first T (its position pooling numbers a full rows x cols grid
            # 0..T-1): a slice, not a boolean index, so no host sync per frame
            frame_scores = None if scores is None else scores[b : b + 1, :T]
            frame_features = pooled["features"][b : b + 1, :T] if needs.features else None
            captured = make_captured(needs, grid, frame_scores, frame_features, batch_size=1, device=frame.device)
            masks.append(select(method, captured, (1, T), backend))
        return features, masks

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        from ..methods._device import from_host

        if kwargs.get("input_features") is not None:
            raise ValueError(f"{self.family}: pruning supports images and videos; a call with input_features (audio) is not supported yet")
        needs = method.needs(False)
        require_vision_only(needs, method, self.family)  # before resolving PTP's LLM layer
        needs = self.resolved(needs, method)
        features, masks, frames_per_entry, tokens = [], [], [], []
        if kwargs.get("pixel_values") is not None:
            if kwargs.get("image_position_ids") is None:
                raise ValueError(f"{self.family}: pruning needs image_position_ids with pixel_values")
            pixels, positions = kwargs["pixel_values"], kwargs["image_position_ids"]
            f, m = self._select(
                pixels, positions, reads.get("image_position_ids"),
                lambda: torch.cat(self.inner.get_image_features(pixels, positions).pooler_output), needs, method, backend, "image",
            )
            features, masks, frames_per_entry = f, m, [1] * len(f)
            tokens = [self.image_token_id] * len(f)
        if kwargs.get("pixel_values_videos") is not None:
            for name in ("video_position_ids", "num_frames_per_video"):
                if kwargs.get(name) is None:
                    raise ValueError(f"{self.family}: pruning needs {name} with pixel_values_videos")
            pixels, positions = kwargs["pixel_values_videos"], kwargs["video_position_ids"]
            frames = [int(n) for n in reads.get("num_frames_per_video").tolist()]
            if sum(frames) != pixels.shape[0]:
                raise ValueError(f"num_frames_per_video sums to {sum(frames)} frames, pixel_values_videos holds {pixels.shape[0]}")
            f, m = self._select(
                pixels, positions, reads.get("video_position_ids"),
                lambda: torch.cat(self.inner.get_video_features(pixels, positions, num_frames_per_video=kwargs["num_frames_per_video"]).pooler_output),
                needs, method, backend, "video",
            )
            features, masks, frames_per_entry = features + f, masks + m, frames_per_entry + frames
            tokens += [self.video_token_id] * len(frames)
        host = [mask[0] for mask in reads.fetch(*masks)]  # the call's host synchronisation: kept counts decide the prompt

        kept, keep, first = [], [], 0
        for n in frames_per_entry:  # an image is one entry; a video is one entry of its frames, in order
            keep.append(torch.cat(host[first : first + n]))
            frame = torch.cat(features[first : first + n])
            kept.append(frame[from_host(keep[-1].nonzero().flatten(), frame.device)])
            first += n
        images = tokens.count(self.image_token_id)
        outputs = {}
        if images:
            outputs["image"] = BaseModelOutputWithPooling(pooler_output=tuple(kept[:images]))
        if len(kept) > images:
            outputs["video"] = BaseModelOutputWithPooling(pooler_output=tuple(kept[images:]))
        return PrunedImages(
            pooler_output=kept[:images],
            placeholder_keep=keep,
            selection=[k.nonzero().flatten() for k in keep],
            num_tokens=[k.numel() for k in keep],
            encoder_outputs=outputs,
            placeholder_tokens=tokens,
        )
