"""Cohere2 Vision (``Cohere2VisionForConditionalGeneration``: Command A Vision): Aya Vision's plan on the tower's output.

The model is Aya Vision's shape (``aya_vision.py``): SigLIP over tiles of up to ``max_patches`` tiles
(512 px, 16 px patches on the release) plus a thumbnail last, pixel shuffle 2 (32 x 32 -> 16 x 16 =
256 tokens per tile), a SwiGLU projector. Two differences: the projector reads the tower's
``last_hidden_state`` (the last layer after SigLIP's ``post_layernorm``; there is no
``vision_feature_layer`` / ``vision_feature_select_strategy``), so VisPruner de-duplicates the
normalised features; and the prompt writes each tile as its run of ``<|IMG_PATCH|>`` then one
``<|IMG_LINE_BREAK|>``, the image between ``<|START_OF_IMG|>`` and ``<|END_OF_IMG|>``: those markers stay.

Selection per tile on the shuffled grid, min(keep, T) per tile; scores: the attention each patch
receives (no [CLS]), pooled over the patches each token merges. ``last_selection``: per tile,
raster indices into its shuffled grid.
"""
from __future__ import annotations

from .adapter import capture_vision, require_vision_only
from .aya_vision import AyaVisionAdapter


class Cohere2VisionAdapter(AyaVisionAdapter):
    """Prunes the image tiles of one ``Cohere2VisionForConditionalGeneration`` call."""

    family = "Cohere2VisionForConditionalGeneration"
    consumed_kwargs = ("pixel_values",)

    def patch_features(self, kwargs: dict, method, backend: str):
        needs = self.resolved(method.needs(self.tower.has_cls), method)
        require_vision_only(needs, method, self.family)
        last = self.tower.num_layers - 1
        vis = capture_vision(self.tower, kwargs["pixel_values"], needs, feature_layer=last, backend=backend)
        return self.tower.module.post_layernorm(vis.features), vis.scores, needs  # the tower's last_hidden_state
