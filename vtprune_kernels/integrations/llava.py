"""LLaVA-1.5 family (``LlavaForConditionalGeneration`` with a CLIP or SigLIP tower).

One image = one tile of h x w patch tokens. The tower runs to the feature layer
(``vision_feature_layer``, e.g. -2) or to the last layer the method scores, whichever is later;
the method selects among the N = h*w patch tokens ([CLS] dropped by strategy "default" for CLIP;
all tokens with strategy "full" for SigLIP, which has no [CLS]); only the kept tokens go through
the projector. Selection indices are patch indices 0..N-1 in raster order.
"""
from __future__ import annotations

import torch

from .adapter import PrunedImages, TowerAdapter, capture_vision, gather_rows, make_captured, select, square_grid


class LlavaAdapter(TowerAdapter):
    """Prunes the images of one ``LlavaForConditionalGeneration`` call."""

    family = "LlavaForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "vision_feature_layer", "vision_feature_select_strategy", "image_sizes")

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        if kwargs.get("image_sizes") is not None:
            raise ValueError(f"{self.family}: image_sizes (variable-size towers) is not supported by pruning")
        pixel_values = kwargs["pixel_values"]
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [num_images, C, H, W], got shape {tuple(pixel_values.shape)}")
        _, layer, needs = self.vision_setup(kwargs, method)
        vis = capture_vision(self.tower, pixel_values, needs, feature_layer=layer, backend=backend)
        start = 1 if self.tower.has_cls else 0
        features = vis.features[:, start:]  # [n, N, C]
        n, N = features.shape[:2]
        scores = None if vis.scores is None else vis.scores[:, start:]
        captured = make_captured(needs, square_grid(N, self.family), scores, features)
        keep = select(method, captured, (n, N), backend)
        (keep,) = reads.fetch(keep)  # the call's one host synchronisation: kept counts decide the prompt

        projected = self.inner.multi_modal_projector(gather_rows(features, keep))  # [K, D], image-major order
        per_image = list(torch.split(projected, keep.sum(1).tolist()))
        return PrunedImages(
            pooler_output=per_image,
            placeholder_keep=list(keep),
            selection=[row.nonzero().flatten() for row in keep],
            num_tokens=[N] * n,
        )
