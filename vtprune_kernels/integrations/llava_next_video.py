"""LLaVA-NeXT-Video (``LlavaNextVideoForConditionalGeneration``): LLaVA-NeXT's images, pooled video frames.

- **Images** exactly as LLaVA-NeXT (``llava_next.py``): per tile, among the tokens that survive the
  model's unpadding, newlines kept where the model packs them.
- **Videos: per frame, on the pooled grid.** The model pools every frame's h x w patch grid with its
  ``vision_resampler`` (``spatial_pool_mode`` average / max / conv, kernel = stride =
  ``spatial_pool_stride``: 24x24 -> 12x12 on the 7B / 34B checkpoints) BEFORE its projector, and a
  video's placeholders are its frames' pooled tokens, frame after frame, with no newline. The
  selection runs on those pooled tokens: scores pooled with the resampler's own pooling (its
  average or max pool; the average for the learned conv pool), VisPruner's de-duplication on the
  resampler's output (what the projector takes); min(keep, pooled tokens) per frame. Only the kept
  tokens go through the projector (a per-token MLP).
- Random draws the images' tiles first, then the video frames.

Selection indices (``last_selection``): per image as on LLaVA-NeXT (tile * (h*w) + patch); per video,
frame * (pooled tokens per frame) + raster index in the pooled grid.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from ..methods._device import from_host
from .adapter import PrunedImages, capture_vision, make_captured, select, square_grid
from .llava_next import LlavaNextAdapter


@dataclasses.dataclass
class FrameSelection:
    """One call's videos after the selection: keep bool [V*F, n] on the device, the video and frame
    counts, the resampler's output [V*F, n, C] (what the projector takes)."""

    keep: torch.Tensor
    videos: int
    frames: int
    pooled: torch.Tensor


def pooled_frame_scores(resampler, scores: torch.Tensor) -> torch.Tensor:
    """float32 [T, n]: per-frame scores [T, h*w] (a square grid) pooled as ``resampler`` pools the
    frame's tokens (its own average / max pool; a learned conv pool's window average)."""
    side = square_grid(scores.shape[1], "LlavaNextVideoForConditionalGeneration")[0]
    grid = scores.float().view(-1, 1, side, side)
    pool = resampler.pool
    if isinstance(pool, (torch.nn.AvgPool2d, torch.nn.MaxPool2d)):
        pooled = pool(grid)
    else:
        pooled = F.avg_pool2d(grid, kernel_size=pool.kernel_size, stride=pool.stride)
    return pooled.flatten(1)


class LlavaNextVideoAdapter(LlavaNextAdapter):
    """Prunes the images and videos of one ``LlavaNextVideoForConditionalGeneration`` call."""

    family = "LlavaNextVideoForConditionalGeneration"
    consumed_kwargs = (
        "pixel_values", "image_sizes", "pixel_values_videos", "vision_feature_layer", "vision_feature_select_strategy",
    )
    pixel_kwargs = ("pixel_values", "pixel_values_videos")

    def __init__(self, model):
        super().__init__(model)
        self.video_token_id = int(model.config.video_token_id)

    def video_selection(self, kwargs: dict, method, backend: str, needs, layer: int) -> FrameSelection:
        videos = kwargs["pixel_values_videos"]
        if videos.dim() != 5:
            raise ValueError(f"pixel_values_videos must be [videos, frames, C, H, W], got shape {tuple(videos.shape)}")
        V, frames = videos.shape[:2]
        vis = capture_vision(self.tower, videos.flatten(0, 1), needs, feature_layer=layer, backend=backend)
        pooled = self.inner.vision_resampler(vis.features[:, 1:])  # [V*F, n, C]
        n = pooled.shape[1]
        scores = None if vis.scores is None else pooled_frame_scores(self.inner.vision_resampler, vis.scores[:, 1:])
        captured = make_captured(needs, square_grid(n, self.family), scores, pooled, batch_size=V * frames)
        return FrameSelection(select(method, captured, (V * frames, n), backend), V, frames, pooled)

    def gather_videos(self, result: PrunedImages, videos: FrameSelection, keep: torch.Tensor) -> list:
        """Book every video's kept tokens in ``result`` (host ``keep`` [V*F, n]); returns per video its
        projected kept tokens [1, k, D] (frame-major), as the model's ``mm_encoder_outputs["video"]``."""
        n, frames = videos.pooled.shape[1], videos.frames
        flat = videos.pooled.reshape(-1, videos.pooled.shape[-1])
        out = []
        for v in range(videos.videos):
            kept = keep[v * frames : (v + 1) * frames].reshape(-1)  # [F*n], frame-major
            index = from_host(v * frames * n + kept.nonzero().flatten(), flat.device)
            out.append(self.inner.multi_modal_projector(flat[index])[None])
            result.placeholder_keep.append(kept)
            result.selection.append(kept.nonzero().flatten())
            result.num_tokens.append(int(kept.numel()))
            result.num_newlines.append(0)
            result.placeholder_tokens.append(self.video_token_id)
        return out

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        _, layer, needs = self.vision_setup(kwargs, method)
        images = self.image_selection(kwargs, method, backend, reads, needs, layer) if kwargs.get("pixel_values") is not None else None
        videos: Optional[FrameSelection] = None
        if kwargs.get("pixel_values_videos") is not None:
            videos = self.video_selection(kwargs, method, backend, needs, layer)
        host = reads.fetch(*[s.keep for s in (images, videos) if s is not None])  # the call's host synchronisation

        if images is not None:
            result = self.gather_images(images, host[0])
        else:
            result = PrunedImages(pooler_output=[], placeholder_keep=[], selection=[], num_tokens=[], num_newlines=[])
        result.placeholder_tokens = [self.image_token_id] * len(result.selection)
        result.encoder_outputs = {}
        if images is not None:
            result.encoder_outputs["image"] = BaseModelOutputWithPooling(pooler_output=result.pooler_output)
        if videos is not None:
            result.encoder_outputs["video"] = BaseModelOutputWithPooling(pooler_output=self.gather_videos(result, videos, host[-1]))
        return result
